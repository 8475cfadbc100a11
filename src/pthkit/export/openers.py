"""Exported files as :func:`pthkit.open` sources: ``.onnx`` (ONNX Runtime) and OpenVINO IR ``.xml`` (+ ``.bin``).

``pthkit.api.open`` asks :func:`is_exported` before bundles, Hugging Face folders and weights files, and hands such
paths to :func:`open_exported`. TorchScript and ``.pt2`` files are not opened here: loading them runs code or
unpickles from the file (use ``--trust`` paths elsewhere). Importing this module needs neither onnxruntime nor
openvino.
"""

from __future__ import annotations

from pathlib import Path

from pthkit.model import Model, OpenOptions

__all__ = ["EXPORTED_SUFFIXES", "is_exported", "open_exported"]

EXPORTED_SUFFIXES = (".onnx", ".xml")


def is_exported(path: Path) -> bool:
    """True for a file pthkit opens as an exported model: ``.onnx``, or an OpenVINO ``.xml`` with its ``.bin``."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return path.is_file()
    return suffix == ".xml" and path.is_file() and path.with_suffix(".bin").is_file()


def open_exported(path: Path, opts: OpenOptions) -> Model:
    """A :class:`Model` for an exported file (module ``None``, ``runner`` set, metadata read back)."""
    from pthkit.export.onnx_open import open_onnx, open_openvino

    if path.suffix.lower() == ".xml":
        return open_openvino(path, opts)
    return open_onnx(path, opts)
