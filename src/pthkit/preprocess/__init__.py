"""Preprocessing that matches the weights: resolved with provenance, inferred from batch-norm statistics, checked.

- :class:`Preprocess` - the pipeline's values, where each came from, ``describe()``, ``transform()``.
- :func:`resolve_preprocess` - flags, bundle config, checkpoint entries, library config, inference, defaults.
- :func:`infer_normalization` / :class:`NormalizationGuess` - which pixel normalization a model was trained with.
- :func:`check_predictions_sane` / :func:`check_model_sane` - warn when outputs ignore the input.
"""

from __future__ import annotations

from pthkit.preprocess.infer import (
    DEFAULT_CANDIDATES,
    NormalizationGuess,
    NormCandidate,
    describe_normalization,
    infer_normalization,
    sample_batch,
)
from pthkit.preprocess.resolve import NORMALIZATION_FIELDS, resolve_preprocess
from pthkit.preprocess.sanity import check_model_sane, check_predictions_sane
from pthkit.preprocess.sources import OVERRIDE_KEYS, imagenet_label_names
from pthkit.preprocess.types import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    NAMED_NORMALIZATIONS,
    ChannelOrder,
    CropMode,
    Interpolation,
    Preprocess,
)

__all__ = [
    "Preprocess",
    "resolve_preprocess",
    "infer_normalization",
    "NormalizationGuess",
    "NormCandidate",
    "DEFAULT_CANDIDATES",
    "check_predictions_sane",
    "check_model_sane",
    "describe_normalization",
    "sample_batch",
    "imagenet_label_names",
    "NORMALIZATION_FIELDS",
    "OVERRIDE_KEYS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INCEPTION_MEAN",
    "INCEPTION_STD",
    "NAMED_NORMALIZATIONS",
    "ChannelOrder",
    "CropMode",
    "Interpolation",
]
