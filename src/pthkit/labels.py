"""Former home of the labels helpers; they live in :mod:`pthkit.data.labels` (one parser). Re-exported here."""

from __future__ import annotations

from pthkit.data.labels import (
    IMAGENET_NUM_CLASSES,
    LabelSource,
    imagenet_labels,
    load_labels,
    read_labels,
    resolve_label_names,
)

__all__ = ["IMAGENET_NUM_CLASSES", "LabelSource", "imagenet_labels", "load_labels", "read_labels",
           "resolve_label_names"]
