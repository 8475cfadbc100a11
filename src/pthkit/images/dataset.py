"""Former home of the image datasets; they live in :mod:`pthkit.data.images`. Re-exported here."""

from __future__ import annotations

from pthkit.data.images import (
    DRAFT_MARGIN,
    Batch,
    BatchNormalize,
    ImageFolderDataset,
    ImageListDataset,
    Sample,
    collate_samples,
    draft_size_for,
    split_transform,
    worker_init,
)

__all__ = ["DRAFT_MARGIN", "Batch", "BatchNormalize", "ImageFolderDataset", "ImageListDataset", "Sample",
           "collate_samples", "draft_size_for", "split_transform", "worker_init"]
