"""Image inputs: expand what the user named into paths, decode each robustly to RGB, and datasets that skip failures.

``expand_inputs`` (files, folders, globs, ``@list.txt``, ``-``) → ``open_image`` (RGB, EXIF applied, every mode,
reduced-size JPEG decoding, one-line :class:`~pthkit.errors.ImageError`) → ``ImageListDataset`` /
``ImageFolderDataset`` (failures reported per item, collated by ``collate_samples``).
"""

from __future__ import annotations

from pthkit.images.decode import BACKGROUND, open_image, to_rgb
from pthkit.images.sources import (
    IMAGE_EXTENSIONS,
    expand_inputs,
    is_image_path,
    missing_inputs,
)

__all__ = [
    "BACKGROUND",
    "IMAGE_EXTENSIONS",
    "Batch",
    "ImageFolderDataset",
    "ImageListDataset",
    "Sample",
    "collate_samples",
    "draft_size_for",
    "expand_inputs",
    "is_image_path",
    "missing_inputs",
    "open_image",
    "to_rgb",
    "worker_init",
]

_DATASET_NAMES = frozenset({"Batch", "ImageFolderDataset", "ImageListDataset", "Sample", "collate_samples",
                            "draft_size_for", "worker_init"})


def __getattr__(name: str) -> object:  # datasets import torch; keep `pthkit.images.expand_inputs` cheap for the CLI
    if name in _DATASET_NAMES:
        from pthkit.data import images as dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'pthkit.images' has no attribute {name!r}")
