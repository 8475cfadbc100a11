"""Class names for a model's outputs: one parser for labels files, and the choice between the user's, the bundle's
and ImageNet's names.

A labels file is a text file (one name per line) or JSON (a list of names, or an ``{"index": name}`` mapping with
indices 0..K-1). Anything else (bad JSON, a mapping with gaps, nested values, an empty file, a file over
``MAX_LABELS_BYTES``) is a one-line :class:`~pthkit.errors.PreprocessError`, never a raw ``JSONDecodeError``.

ImageNet-1k names come from torchvision's bundled weights metadata (``ResNet50_Weights.IMAGENET1K_V2.meta``): no
download, the same names torchvision prints.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from pthkit.errors import InputNotFoundError, PreprocessError, PthkitError

__all__ = [
    "IMAGENET_NUM_CLASSES",
    "MAX_LABELS_BYTES",
    "LabelSource",
    "imagenet_labels",
    "load_labels",
    "read_labels",
    "resolve_label_names",
]

IMAGENET_NUM_CLASSES = 1000
MAX_LABELS_BYTES = 16 * 1024 * 1024
"""Read budget for a labels file (ImageNet-21k's names are ~0.5 MB)."""


@lru_cache(maxsize=1)
def _imagenet() -> tuple[str, ...]:
    from torchvision.models import ResNet50_Weights  # type: ignore[import-untyped,unused-ignore]

    return tuple(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def imagenet_labels(num_classes: int = IMAGENET_NUM_CLASSES) -> list[str]:
    """The 1000 ImageNet-1k class names in index order; 1001 adds timm/TF's leading ``background`` class."""
    names = list(_imagenet())
    if num_classes == IMAGENET_NUM_CLASSES:
        return names
    if num_classes == IMAGENET_NUM_CLASSES + 1:
        return ["background", *names]
    raise PreprocessError.build(
        "ImageNet labels", received=f"a head with {num_classes} outputs", expected="1000 (or 1001) outputs",
        hint="Pass --labels FILE with one name per line.",
    )


def _bad(path: Path, why: str, expected: str, hint: str) -> PthkitError:
    return PreprocessError.build("labels file", received=f"{str(path)!r} ({why})", expected=expected, hint=hint)


def _from_json(path: Path, text: str) -> list[str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise _bad(path, f"invalid JSON: {err.msg} at line {err.lineno} column {err.colno}",
                   "a JSON list of names or an {index: name} mapping",
                   "Fix the JSON or write one name per line in a .txt file.") from err
    if isinstance(data, dict):
        try:
            ordered = sorted(((int(k), v) for k, v in data.items()), key=lambda kv: kv[0])
        except (TypeError, ValueError) as err:
            raise _bad(path, "a mapping with non-integer keys", '{"0": "name", …}', "Use a JSON list instead.") from err
        if [k for k, _ in ordered] != list(range(len(ordered))):
            raise _bad(path, f"indices not 0..{len(ordered) - 1} without gaps", "one name for every class index",
                       "Fill in the missing indices.")
        data = [v for _, v in ordered]
    if not isinstance(data, list):
        raise _bad(path, f"JSON {type(data).__name__}", "a JSON list of names", 'Write ["cat", "dog", …].')
    odd = next((i for i, v in enumerate(data) if isinstance(v, bool) or not isinstance(v, (str, int, float))), None)
    if odd is not None:
        raise _bad(path, f"entry {odd} is {type(data[odd]).__name__}", "a name (string) for every class",
                   'Write ["cat", "dog", …].')
    return [str(v) for v in data]


def _not_a_file(path: Path) -> str:
    if path.is_dir():
        return "a folder"
    return "not a regular file: a pipe or a device" if path.exists() else "no such file"


def read_labels(path: str | os.PathLike[str]) -> list[str]:
    """Class names from a text file (one per line) or JSON (a list, or a ``{"index": name}`` mapping), in index order.

    Raises:
        InputNotFoundError: the file does not exist.
        PreprocessError: the file is empty, too large, not UTF-8 text, or its JSON is not a list/mapping of names.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError.build(
            "labels file", received=f"{str(path)!r} ({_not_a_file(path)})",
            expected="a text file with one class name per line, or a JSON list",
            hint="Check the --labels path (a pipe such as <(...) is not read: save the names to a file).",
        )
    size = path.stat().st_size
    if size > MAX_LABELS_BYTES:
        raise _bad(path, f"{size} bytes", f"at most {MAX_LABELS_BYTES} bytes", "Is this really a labels file?")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _bad(path, f"not UTF-8 text at byte {err.start}", "a UTF-8 text or JSON file",
                   "Save the file as UTF-8.") from err
    stripped = text.strip()
    if not stripped:
        names: list[str] = []
    elif path.suffix.lower() == ".json" or stripped.startswith(("[", "{")):
        names = _from_json(path, stripped)
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise _bad(path, "no names", "one class name per line", "Write the class names in index order.")
    return names


load_labels = read_labels
"""Former name of :func:`read_labels` (kept for callers of ``pthkit.labels.load_labels``)."""

LabelSource = str  # "file", "given", "bundle", "imagenet", "none"


def resolve_label_names(
    num_classes: int | None,
    *,
    labels: Sequence[str] | str | os.PathLike[str] | None = None,
    known: Sequence[str] | None = None,
) -> tuple[list[str] | None, LabelSource]:
    """Pick the class names for a head of ``num_classes`` outputs and say where they came from.

    Order: ``labels`` (a list or a file the user gave) > ``known`` (bundle config / preprocessing) > ImageNet names
    for 1000/1001-output heads > none (indices are shown).

    Raises:
        PreprocessError: the user's labels do not match the number of outputs.
    """
    if labels is not None:
        names = list(labels) if not isinstance(labels, (str, os.PathLike)) else read_labels(labels)
        if num_classes is not None and len(names) != num_classes:
            raise PreprocessError.build(
                "labels", received=f"{len(names)} names", expected=f"{num_classes} (the model's outputs)",
                hint="Give one name per output, in index order.",
            )
        return names, "file" if isinstance(labels, (str, os.PathLike)) else "given"
    if known:
        names = list(known)
        if num_classes is None or len(names) == num_classes:
            return names, "bundle"
    if num_classes in (IMAGENET_NUM_CLASSES, IMAGENET_NUM_CLASSES + 1):
        return imagenet_labels(num_classes), "imagenet"
    return None, "none"
