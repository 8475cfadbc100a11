"""The data layer: what the user named → inputs (:mod:`pthkit.data.inputs`), image datasets and the image input source
for the engine (:mod:`pthkit.data.images`), training/evaluation splits (:mod:`pthkit.data.splits`), labels files
(:mod:`pthkit.data.labels`), and tables/arrays (``pthkit.data.tables``). Also holds packaged data files
(``calibration/``).

Submodules are imported on first use (``pthkit.data.expand_inputs`` stays cheap for the CLI: no torch).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset", "ImageListDataset", "ImageSource", "expand_inputs",
           "is_image_path", "missing_inputs", "read_labels", "resolve_label_names"]

_WHERE = {
    "IMAGE_EXTENSIONS": "pthkit.data.inputs",
    "expand_inputs": "pthkit.data.inputs",
    "is_image_path": "pthkit.data.inputs",
    "missing_inputs": "pthkit.data.inputs",
    "read_labels": "pthkit.data.labels",
    "resolve_label_names": "pthkit.data.labels",
    "ImageFolderDataset": "pthkit.data.images",
    "ImageListDataset": "pthkit.data.images",
    "ImageSource": "pthkit.data.images",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'pthkit.data' has no attribute {name!r}")
    return getattr(import_module(module), name)
