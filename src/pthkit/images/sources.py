"""Former home of input discovery; it lives in :mod:`pthkit.data.inputs`. Re-exported here."""

from __future__ import annotations

from pthkit.data.inputs import (
    IMAGE_EXTENSIONS,
    expand_inputs,
    folder_images,
    is_image_path,
    missing_inputs,
)

__all__ = ["IMAGE_EXTENSIONS", "expand_inputs", "folder_images", "is_image_path", "missing_inputs"]
