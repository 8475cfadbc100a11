"""The :class:`Preprocess` record: every value of an image pipeline, and where each value came from.

A ``.pth`` file says nothing about the pipeline its weights expect, so pthkit resolves one (see
:mod:`pthkit.preprocess.resolve`) and keeps, next to every value, the reason it was chosen (``sources``). This mirrors
torchvision's ``Weights.transforms`` (the pipeline travels with the weights and ``describe()``s itself) and timm's
``pretrained_cfg`` (the same values as plain data, so bundles round-trip through
``timm.create_model("local-dir:…")``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

from pthkit.errors import PreprocessError

if TYPE_CHECKING:
    from torchvision.transforms import v2

    from pthkit.preprocess.infer import NormalizationGuess

__all__ = [
    "Preprocess",
    "ChannelOrder",
    "CropMode",
    "Interpolation",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INCEPTION_MEAN",
    "INCEPTION_STD",
    "NAMED_NORMALIZATIONS",
    "PREPROCESS_FIELDS",
]

ChannelOrder = Literal["rgb", "bgr"]
CropMode = Literal["center", "squash", "border"]
Interpolation = Literal["bilinear", "bicubic", "nearest", "nearest-exact", "lanczos", "box", "hamming"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
INCEPTION_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
INCEPTION_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)

# Names accepted where a mean or std is expected (``--mean imagenet``); values as in timm.data.constants.
NAMED_NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "inception": (INCEPTION_MEAN, INCEPTION_STD),
    "half": (INCEPTION_MEAN, INCEPTION_STD),
    "openai-clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}

# The fields whose provenance ``sources`` records, in pipeline order.
PREPROCESS_FIELDS: tuple[str, ...] = (
    "input_size", "resize_size", "crop_pct", "crop_mode", "interpolation",
    "scale", "channel_order", "mean", "std", "label_names",
)

# Where a value may come from if nothing else is known (torchvision / timm ImageNet conventions).
DEFAULT_SOURCE = "default"


@dataclass
class Preprocess:
    """An image classification pipeline: PIL RGB image → resized, cropped, normalized float tensor.

    - ``input_size``: ``(C, H, W)`` the model sees.
    - ``resize_size``: the size resized to before the crop. ``center``: the shorter side (int) or ``(H, W)`` of the
      shorter-side fit; ``squash``: both sides; ``border``: the longer side. ``None`` means ``floor(size / crop_pct)``
      as timm computes it.
    - ``crop_pct``: crop size / resize size (timm's convention; 0.875 = resize 256, crop 224).
    - ``crop_mode``: ``center`` (keep aspect, crop the middle), ``squash`` (distort to a square, then crop),
      ``border`` (fit the longer side, pad with the mean colour).
    - ``interpolation``: resampling filter for the resize (always antialiased).
    - ``scale``: pixel range before mean/std: 1.0 → ``[0, 1]``; 255.0 → raw ``0–255`` (mean/std in 0–255 units,
      caffe style).
    - ``channel_order``: ``rgb``, or ``bgr`` (channels reversed before normalizing; mean/std are in the model's order).
    - ``mean`` / ``std``: per channel, in the model's channel order and ``scale`` units.
    - ``label_names``: one name per output class, when known.
    - ``sources``: field → where its value came from ("timm pretrained_cfg of efficientnet_lite0", "--mean flag",
      "inferred from batch-norm statistics (confidence high)", "default" …).
    - ``notes``: evidence worth showing next to the pipeline (e.g. an architecture default that was *not* used).
    - ``inference``: the :class:`~pthkit.preprocess.infer.NormalizationGuess` when normalization was inferred.
    """

    input_size: tuple[int, int, int] = (3, 224, 224)
    resize_size: int | tuple[int, int] | None = None
    crop_pct: float = 0.875
    crop_mode: CropMode = "center"
    interpolation: Interpolation = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channel_order: ChannelOrder = "rgb"
    scale: float = 1.0
    label_names: list[str] | None = None
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    inference: "NormalizationGuess | None" = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()
        for name in PREPROCESS_FIELDS:
            self.sources.setdefault(name, DEFAULT_SOURCE)

    # --- validation ------------------------------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise :class:`PreprocessError` when a value cannot describe a pipeline."""
        size = tuple(int(v) for v in self.input_size)
        if len(size) != 3 or min(size) < 1:
            raise _bad("input_size", self.input_size, "(channels, height, width) of positive integers")
        self.input_size = size  # type: ignore[assignment]
        if not (isinstance(self.crop_pct, (int, float)) and 0.0 < float(self.crop_pct) <= 2.0):
            raise _bad("crop_pct", self.crop_pct, "a number in (0, 2], e.g. 0.875")
        self.crop_pct = float(self.crop_pct)
        if self.crop_mode not in get_args(CropMode):
            raise _bad("crop_mode", self.crop_mode, " | ".join(get_args(CropMode)))
        if self.interpolation not in get_args(Interpolation):
            raise _bad("interpolation", self.interpolation, " | ".join(get_args(Interpolation)))
        if self.channel_order not in get_args(ChannelOrder):
            raise _bad("channel_order", self.channel_order, "rgb | bgr")
        if not (isinstance(self.scale, (int, float)) and math.isfinite(self.scale) and self.scale > 0):
            raise _bad("scale", self.scale, "a positive number: 1 ([0,1] inputs) or 255 (raw 0-255)")
        self.scale = float(self.scale)
        channels = size[0]
        for name in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) == 1 and channels > 1:
                value = value * channels
            if len(value) != channels or not all(math.isfinite(v) for v in value):
                raise _bad(name, getattr(self, name), f"{channels} finite numbers (one per input channel)")
            if name == "std" and min(value) <= 0:
                raise _bad(name, getattr(self, name), "positive numbers")
            setattr(self, name, value)
        if self.resize_size is not None:
            rs: int | tuple[int, ...] = self.resize_size
            rs = tuple(int(v) for v in rs) if isinstance(rs, (tuple, list)) else int(rs)
            if isinstance(rs, tuple) and len(rs) == 1:
                rs = rs[0]
            if (isinstance(rs, tuple) and (len(rs) != 2 or min(rs) < 1)) or (isinstance(rs, int) and rs < 1):
                raise _bad("resize_size", self.resize_size, "a positive integer or (height, width)")
            self.resize_size = rs if isinstance(rs, int) else (rs[0], rs[1])
        if self.label_names is not None:
            self.label_names = [str(n) for n in self.label_names]

    # --- derived values --------------------------------------------------------------------------------------------

    @property
    def crop_size(self) -> tuple[int, int]:
        """``(H, W)`` of the crop the model sees."""
        return (self.input_size[1], self.input_size[2])

    @property
    def effective_resize_size(self) -> int | tuple[int, int]:
        """The resize target actually used: ``resize_size`` or, as timm computes it, ``floor(crop / crop_pct)``."""
        if self.resize_size is not None:
            return self.resize_size
        h, w = self.crop_size
        if h == w:
            return math.floor(h / self.crop_pct)
        return (math.floor(h / self.crop_pct), math.floor(w / self.crop_pct))

    @property
    def normalization_name(self) -> str:
        """A short human name for the normalization family ("ImageNet mean/std", "0.5/0.5", "raw 0-255" …)."""
        from pthkit.preprocess.infer import describe_normalization

        return describe_normalization(self.mean, self.std, self.scale, self.channel_order)

    def with_values(self, source: str, **values: Any) -> "Preprocess":
        """A copy with ``values`` set and their ``sources`` entries set to ``source``."""
        sources = dict(self.sources)
        for name in values:
            sources[name] = source
        return replace(self, **values, sources=sources, notes=list(self.notes))

    # --- pipelines -------------------------------------------------------------------------------------------------

    def transform(self) -> "v2.Compose":
        """The eval pipeline (torchvision.transforms.v2): PIL RGB image → normalized float tensor ``(C, H, W)``.

        Numerically equal to timm's ``create_transform(**resolve_data_config(...))`` for timm configs and to
        torchvision's ``Weights.transforms()`` for torchvision weights (both resize PIL images with PIL, antialiased).
        """
        from pthkit.preprocess.transforms import eval_transform

        return eval_transform(self)

    def train_transform(self, **timm_kwargs: Any) -> Any:
        """The training pipeline for fine-tuning: timm ``create_transform(is_training=True, ...)`` with these values.

        ``timm_kwargs`` go to timm (``auto_augment="rand-m9-mstd0.5"``, ``re_prob=0.25``, ``hflip=0.5`` …). See
        :func:`pthkit.preprocess.transforms.train_transform` for how ``scale`` and ``bgr`` are applied.
        """
        from pthkit.preprocess.transforms import train_transform

        return train_transform(self, **timm_kwargs)

    # --- describing and serializing --------------------------------------------------------------------------------

    def describe(self) -> str:
        """The pipeline step by step, each value followed by where it came from."""
        from pthkit.preprocess.transforms import describe_steps

        return describe_steps(self)

    def __str__(self) -> str:
        return self.describe()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain data: every value, ``sources``, ``notes`` and the inference evidence (if any)."""
        rs = self.resize_size
        return {
            "input_size": list(self.input_size),
            "resize_size": list(rs) if isinstance(rs, tuple) else rs,
            "effective_resize_size": (
                list(self.effective_resize_size) if isinstance(self.effective_resize_size, tuple)
                else self.effective_resize_size
            ),
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "channel_order": self.channel_order,
            "scale": self.scale,
            "label_names": list(self.label_names) if self.label_names is not None else None,
            "sources": dict(self.sources),
            "notes": list(self.notes),
            "inference": self.inference.to_dict() if self.inference is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str | None = None) -> "Preprocess":
        """Inverse of :meth:`to_dict` (unknown keys ignored). ``source`` replaces every recorded source if given."""
        known = {f.name for f in fields(cls)} - {"inference", "sources", "notes"}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        if "input_size" in values:
            values["input_size"] = tuple(values["input_size"])
        if isinstance(values.get("resize_size"), list):
            values["resize_size"] = tuple(values["resize_size"])
        sources = dict(data.get("sources") or {})
        if source is not None:
            sources = {k: source for k in values}
        return cls(**values, sources=sources, notes=list(data.get("notes") or []))

    def to_timm_pretrained_cfg(self, *, num_classes: int | None = None) -> dict[str, Any]:
        """The values as a timm ``pretrained_cfg`` dict (what a bundle's ``config.json`` stores).

        timm has no ``scale`` field, so ``scale`` is folded into mean/std (``(x*255 - m)/s == (x - m/255)/(s/255)``);
        it has no channel order either: for ``bgr`` the mean/std are written in the *model's* (BGR) order and timm's
        own loaders will feed RGB — pthkit keeps ``channel_order`` in ``to_dict()`` (store it in the bundle's
        ``pthkit`` section). ``resize_size`` is expressed through ``crop_pct`` (nudged so timm's ``floor`` hits it).
        """
        cfg: dict[str, Any] = {
            "input_size": list(self.input_size),
            "interpolation": self.interpolation,
            "crop_pct": self._crop_pct_for_timm(),
            "crop_mode": self.crop_mode,
            "mean": [m / self.scale for m in self.mean],
            "std": [s / self.scale for s in self.std],
        }
        if num_classes is None and self.label_names is not None:
            num_classes = len(self.label_names)
        if num_classes is not None:
            cfg["num_classes"] = int(num_classes)
        return cfg

    def _crop_pct_for_timm(self) -> float:
        if self.resize_size is None:
            return self.crop_pct
        h, w = self.crop_size
        target = self.resize_size if isinstance(self.resize_size, int) else self.resize_size[0]
        crop_pct = h / target
        # timm computes floor(h / crop_pct); float rounding may land one pixel low, so nudge until it hits.
        for _ in range(8):
            got = math.floor(h / crop_pct)
            if got == target:
                break
            crop_pct = math.nextafter(crop_pct, 0.0 if got < target else 2.0)
        return crop_pct

    @classmethod
    def from_timm_pretrained_cfg(
        cls, cfg: Any, *, source: str = "timm pretrained_cfg", label_names: list[str] | None = None
    ) -> "Preprocess":
        """A :class:`Preprocess` from a timm ``pretrained_cfg`` (dict or ``PretrainedCfg``), sources ``source``."""
        data = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
        values: dict[str, Any] = {}
        if data.get("input_size") is not None:
            values["input_size"] = tuple(data["input_size"])
        for name in ("crop_pct", "crop_mode", "interpolation", "mean", "std"):
            if data.get(name) is not None:
                values[name] = tuple(data[name]) if name in ("mean", "std") else data[name]
        if values.get("interpolation") == "random":  # a training-only timm setting; eval uses bilinear
            values["interpolation"] = "bilinear"
        names = label_names if label_names is not None else data.get("label_names")
        if names is not None:
            values["label_names"] = list(names)
        return cls(**values, sources={k: source for k in values})


def _bad(name: str, value: Any, expected: str) -> PreprocessError:
    return PreprocessError.build(
        f"preprocessing value {name}", received=repr(value), expected=expected,
        hint=f"Fix the {name} value (flag --{_FLAG_NAMES.get(name, name.replace('_', '-'))} "
        "or the bundle's config.json).",
    )


# Preprocess fields whose CLI flag is not the field name with dashes (the CLI says --size for input_size).
_FLAG_NAMES = {"input_size": "size"}
