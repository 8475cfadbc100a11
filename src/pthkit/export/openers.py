"""Open exported files (``.onnx`` …) as a :class:`pthkit.model.Model` (placeholder while the runner lands)."""

from __future__ import annotations

from pathlib import Path

from pthkit.model import Model, OpenOptions

__all__ = ["is_exported", "open_exported"]

EXPORTED_SUFFIXES = (".onnx",)


def is_exported(path: Path) -> bool:
    """True for a file pthkit opens as an exported model (``.onnx``)."""
    return path.suffix.lower() in EXPORTED_SUFFIXES and path.is_file()


def open_exported(path: Path, opts: OpenOptions) -> Model:
    """A :class:`Model` for an exported file."""
    from pthkit.export.onnx_open import open_onnx

    return open_onnx(path, opts)
