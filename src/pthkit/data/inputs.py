"""Turn what the user typed (files, folders, globs, lists of paths, stdin) into an ordered list of image paths.

Paths that do not exist are *kept* (in the order given) so that a prediction run reports them as failed inputs
and goes on, instead of stopping before the first image; :func:`missing_inputs` lists them.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from pthkit.errors import InputNotFoundError

__all__ = ["IMAGE_EXTENSIONS", "expand_inputs", "folder_images", "is_image_path", "missing_inputs"]

# What PIL decodes and people keep photos in. Folders are filtered by these; a file named explicitly is always kept.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".gif", ".bmp", ".dib", ".tif", ".tiff", ".webp",
        ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2", ".j2k", ".heic", ".heif", ".avif",
    }
)
_GLOB_CHARS = frozenset("*?[")
_LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """True when the file name has an image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def folder_images(folder: Path, recursive: bool = True) -> list[Path]:
    """The image files of ``folder`` (by extension; dotfiles and dot-folders skipped), sorted by relative path."""
    pattern = "**/*" if recursive else "*"
    found = [
        p for p in folder.glob(pattern)
        if is_image_path(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts) and p.is_file()
    ]
    # Natural order a person expects from `ls`: sort by the path relative to the folder, case-sensitive and stable.
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _read_list(stream: TextIO, base: Path | None) -> list[str]:
    entries: list[str] = []
    for raw in stream:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if base is not None and not os.path.isabs(os.path.expanduser(line)):
            line = str(base / line)  # relative entries are relative to the list file, like a playlist
        entries.append(line)
    return entries


def _list_file(path: Path) -> list[str]:
    if not path.is_file():
        raise InputNotFoundError.build(
            "list of image paths",
            received=f"{str(path)!r} (no such file)",
            expected="a text file with one image path per line",
            hint="Check the path after '@'.",
        )
    with path.open(encoding="utf-8", errors="replace") as fh:
        return _read_list(fh, path.parent)


def expand_inputs(
    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    recursive: bool = True,
    stdin: TextIO | None = None,
) -> list[Path]:
    """Expand ``inputs`` into image paths, in the order given, without duplicates.

    Each entry may be:

    - an image file (kept whatever its extension: the decoder decides);
    - a folder: its images (by extension), recursively unless ``recursive=False``, sorted by relative path;
    - a glob (``photos/*.jpg``, ``**/*.png``), matches sorted;
    - ``@list.txt`` or a ``.txt``/``.lst``/``.list`` file: one path per line (``#`` comments, blank lines skipped;
      relative paths are relative to the list file); entries are expanded again (folders, globs);
    - ``-``: the same, read from standard input (or ``stdin``).

    A path that does not exist, or a glob that matches nothing, is kept as given so the caller reports it as a failed
    input (see :func:`missing_inputs`); the run is not stopped for it.

    Raises:
        InputNotFoundError: when nothing at all was given, or an ``@list`` file does not exist.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not inputs:
        raise InputNotFoundError.build(
            "images", received="no inputs", expected="image files, folders, globs, @list.txt or '-'",
            hint="Name at least one image or folder.",
        )
    out: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        if path not in seen:
            seen.add(path)
            out.append(path)

    def expand(entries: Iterable[str | os.PathLike[str]], depth: int) -> None:
        for entry in entries:
            text = os.fspath(entry)
            if text == "-":
                expand(_read_list(stdin if stdin is not None else sys.stdin, None), depth + 1)
                continue
            if text.startswith("@") and not os.path.exists(text):
                if depth > 8:  # a list naming itself must not recurse forever
                    add(Path(text))
                    continue
                expand(_list_file(Path(os.path.expanduser(text[1:]))), depth + 1)
                continue
            path = Path(os.path.expanduser(text))
            if path.is_dir():
                for p in folder_images(path, recursive):
                    add(p)
            elif path.is_file():
                if path.suffix.lower() in _LIST_SUFFIXES and depth <= 8:
                    expand(_list_file(path), depth + 1)
                else:
                    add(path)
            elif _GLOB_CHARS & set(text):
                matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
                files = [Path(m) for m in matches if os.path.isfile(m)]
                if not files:
                    add(path)  # reported later as "no such file"
                for p in files:
                    add(p)
            else:
                add(path)

    expand(inputs, 0)
    return out


def missing_inputs(paths: Iterable[Path]) -> list[Path]:
    """The entries of ``paths`` that are not existing files."""
    return [p for p in paths if not p.is_file()]
