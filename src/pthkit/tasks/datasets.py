"""Former home of the training/evaluation splits; they live in :mod:`pthkit.data.splits`. Re-exported here for
``pthkit.tasks.finetune`` and older imports."""

from __future__ import annotations

from pthkit.data.splits import (
    IMAGE_EXTENSIONS,
    DataSplit,
    ImageItemsDataset,
    SeededSampler,
    ShardSampler,
    collate_skip_failed,
    find_unreadable,
    load_eval_data,
    load_training_data,
    sample_seed,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataSplit",
    "ImageItemsDataset",
    "SeededSampler",
    "ShardSampler",
    "collate_skip_failed",
    "find_unreadable",
    "load_eval_data",
    "load_training_data",
    "sample_seed",
]
