"""Class names for a model's outputs: from a file, from the bundle/preprocessing, or ImageNet's for 1000-class heads.

ImageNet-1k names come from torchvision's bundled weights metadata (``ResNet50_Weights.IMAGENET1K_V2.meta``): no
download, the same names torchvision prints.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from pthkit.errors import InputNotFoundError, PreprocessError

__all__ = ["imagenet_labels", "load_labels", "resolve_label_names", "LabelSource"]

IMAGENET_NUM_CLASSES = 1000


@lru_cache(maxsize=1)
def _imagenet() -> tuple[str, ...]:
    from torchvision.models import ResNet50_Weights

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


def load_labels(path: str | os.PathLike[str]) -> list[str]:
    """Read class names from a text file (one per line) or JSON (a list, or a ``{"index": name}`` mapping).

    Raises:
        InputNotFoundError: the file does not exist.
        PreprocessError: the file is empty or its JSON is not a list/mapping of names.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError.build(
            "labels file", received=f"{str(path)!r} (no such file)",
            expected="a text file with one class name per line, or a JSON list", hint="Check the --labels path.",
        )
    text = path.read_text(encoding="utf-8", errors="replace")
    stripped = text.strip()
    names: list[str]
    if path.suffix.lower() == ".json" or stripped.startswith(("[", "{")):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise PreprocessError.build(
                "labels file", received=f"{str(path)!r} (invalid JSON: {err.msg} at line {err.lineno})",
                expected="a JSON list of names or an {index: name} mapping", hint="Fix the JSON or use one name per line.",
            ) from err
        if isinstance(data, dict):
            try:
                ordered = sorted(((int(k), v) for k, v in data.items()), key=lambda kv: kv[0])
            except (TypeError, ValueError) as err:
                raise PreprocessError.build(
                    "labels file", received=f"{str(path)!r} (a mapping with non-integer keys)",
                    expected="{\"0\": \"name\", …}", hint="Use a JSON list instead.",
                ) from err
            if [k for k, _ in ordered] != list(range(len(ordered))):
                raise PreprocessError.build(
                    "labels file", received=f"{str(path)!r} (indices not 0..{len(ordered) - 1} without gaps)",
                    expected="one name for every class index", hint="Fill in the missing indices.",
                )
            data = [v for _, v in ordered]
        if not isinstance(data, list) or not all(isinstance(v, (str, int, float)) for v in data):
            raise PreprocessError.build(
                "labels file", received=f"{str(path)!r} (JSON {type(data).__name__})",
                expected="a JSON list of names", hint="Write [\"cat\", \"dog\", …].",
            )
        names = [str(v) for v in data]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise PreprocessError.build(
            "labels file", received=f"{str(path)!r} (no names)", expected="one class name per line",
            hint="Write the class names in index order.",
        )
    return names


LabelSource = str  # "file", "bundle", "preprocess", "imagenet", "none"


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
        names = list(labels) if not isinstance(labels, (str, os.PathLike)) else load_labels(labels)
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
