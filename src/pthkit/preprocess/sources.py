"""Where preprocessing values can come from: each function returns the values one source states, with its name.

A *layer* is ``(values, source)``: ``values`` maps :class:`Preprocess` field names to values (only the fields that
source states), ``source`` is the provenance string recorded in ``Preprocess.sources``. :mod:`.resolve` stacks the
layers in a fixed order. Nothing here downloads: timm's ``get_pretrained_cfg`` and torchvision's weights enums are
static metadata shipped inside the installed packages.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pthkit.errors import PreprocessError, UnknownArchitectureError
from pthkit.preprocess.types import NAMED_NORMALIZATIONS

if TYPE_CHECKING:
    import torch

    from pthkit.checkpoint.types import Checkpoint

__all__ = [
    "Layer",
    "LibraryRefs",
    "library_refs",
    "timm_layer",
    "timm_model_layer",
    "torchvision_layer",
    "bundle_layer",
    "checkpoint_layer",
    "override_layers",
    "imagenet_label_names",
    "OVERRIDE_KEYS",
]


@dataclass
class Layer:
    """The values one source states, and the source's name as ``Preprocess.sources`` records it."""

    values: dict[str, Any]
    source: str
    kind: str  # "override" | "bundle" | "checkpoint" | "library" | "inferred" | "model" | "default"
    num_classes: int | None = None  # classes of the weights the source describes, when it says

    def __bool__(self) -> bool:
        return bool(self.values)


# --- library configs -------------------------------------------------------------------------------------------------


@dataclass
class LibraryRefs:
    """What an architecture name points to in the libraries: a timm config name and/or torchvision weights."""

    timm_name: str | None = None
    torchvision_weights: str | None = None
    note: str | None = None


def library_refs(arch: Any) -> LibraryRefs:
    """Find the timm ``pretrained_cfg`` name / torchvision weights enum an architecture name refers to.

    ``timm:NAME`` and ``torchvision:NAME`` are parsed directly; a bare name goes through
    :func:`pthkit.architectures.get_architecture` (ambiguity errors propagate); user code (``file.py:Class``,
    ``pkg.mod:factory``) has no library config and is *not imported* here.
    """
    if arch is None:
        return LibraryRefs()
    if not isinstance(arch, str):  # an Architecture object
        return LibraryRefs(getattr(arch, "timm_name", None), getattr(arch, "torchvision_weights", None))
    name = arch.strip()
    prefix, sep, rest = name.partition(":")
    if sep and prefix == "timm":
        return LibraryRefs(timm_name=rest)
    if sep and prefix == "torchvision":
        return LibraryRefs(torchvision_weights=_torchvision_default_weights(rest))
    if sep or name.endswith(".py"):
        return LibraryRefs(note=f"{name} is user code: no library preprocessing config")
    from pthkit.architectures import get_architecture

    try:
        found = get_architecture(name)
    except UnknownArchitectureError:
        return LibraryRefs(note=f"{name!r} is not a registered architecture: no library preprocessing config")
    return LibraryRefs(getattr(found, "timm_name", None), getattr(found, "torchvision_weights", None))


def _torchvision_default_weights(model_name: str) -> str | None:
    from torchvision import models

    try:
        default = getattr(models.get_model_weights(model_name), "DEFAULT", None)
    except (ValueError, KeyError, AttributeError):
        return None
    return str(default) if default is not None else None


def timm_layer(timm_name: str) -> Layer:
    """Values from timm's ``pretrained_cfg`` for ``timm_name`` (``efficientnet_lite0`` or ``resnet18.a1_in1k``)."""
    import timm.models

    cfg = timm.models.get_pretrained_cfg(timm_name)
    if cfg is None:
        return Layer({}, f"timm pretrained_cfg of {timm_name} (none)", "library")
    return _timm_cfg_to_layer(cfg.to_dict(), f"timm pretrained_cfg of {timm_name}")


def timm_model_layer(model: "torch.nn.Module") -> Layer:
    """Values from a timm model's own ``pretrained_cfg`` attribute (set when it was built; no download)."""
    cfg = getattr(model, "pretrained_cfg", None)
    if not isinstance(cfg, Mapping) or not cfg:
        return Layer({}, "model pretrained_cfg (none)", "library")
    name = cfg.get("architecture") or type(model).__name__
    return _timm_cfg_to_layer(dict(cfg), f"timm pretrained_cfg of {name}")


def _timm_cfg_to_layer(cfg: dict[str, Any], source: str) -> Layer:
    values: dict[str, Any] = {}
    if cfg.get("input_size"):
        values["input_size"] = tuple(int(v) for v in cfg["input_size"])
    for key in ("crop_pct", "crop_mode", "interpolation"):
        if cfg.get(key) is not None:
            values[key] = cfg[key]
    if values.get("interpolation") == "random":  # training-only timm setting
        values["interpolation"] = "bilinear"
    for key in ("mean", "std"):
        if cfg.get(key) is not None:
            values[key] = tuple(float(v) for v in cfg[key])
    if values:
        values.setdefault("scale", 1.0)
        values.setdefault("channel_order", "rgb")
    if cfg.get("label_names"):
        values["label_names"] = list(cfg["label_names"])
    num_classes = cfg.get("num_classes")
    return Layer(values, source, "library", num_classes=int(num_classes) if num_classes else None)


def torchvision_layer(weights_name: str) -> Layer:
    """Values from torchvision weights metadata: its ``transforms`` preset arguments and ``meta["categories"]``."""
    from torchvision import models

    try:
        weights = models.get_weight(weights_name)
    except (ValueError, KeyError, AttributeError):
        return Layer({}, f"torchvision weights {weights_name} (unknown)", "library")
    source = f"torchvision weights {weights}"
    preset = weights.transforms
    func = getattr(preset, "func", preset)
    kwargs = dict(getattr(preset, "keywords", {}) or {})
    try:
        defaults = {k: p.default for k, p in inspect.signature(func).parameters.items()
                    if p.default is not inspect.Parameter.empty}
    except (TypeError, ValueError):
        defaults = {}
    args = {**defaults, **kwargs}
    values: dict[str, Any] = {}
    if getattr(func, "__name__", "") == "ImageClassification" and "crop_size" in args:
        crop = _first(args["crop_size"])
        resize = _first(args.get("resize_size", 256))
        values["input_size"] = (3, crop, crop)
        values["resize_size"] = resize
        values["crop_pct"] = crop / resize
        values["crop_mode"] = "center"
        interp = args.get("interpolation")
        values["interpolation"] = getattr(interp, "value", interp) or "bilinear"
        values["mean"] = tuple(float(v) for v in args.get("mean", (0.485, 0.456, 0.406)))
        values["std"] = tuple(float(v) for v in args.get("std", (0.229, 0.224, 0.225)))
        values["scale"] = 1.0
        values["channel_order"] = "rgb"
    categories = weights.meta.get("categories") if isinstance(weights.meta, dict) else None
    if categories:
        values["label_names"] = list(categories)
    return Layer(values, source, "library", num_classes=len(categories) if categories else None)


def _first(value: Any) -> int:
    if isinstance(value, (list, tuple)):
        return int(value[0])
    return int(value)


def imagenet_label_names() -> list[str]:
    """The 1000 ImageNet-1k class names (short names, as torchvision's weights metadata lists them)."""
    from pthkit.labels import imagenet_labels

    return imagenet_labels()


# --- bundle and checkpoint -------------------------------------------------------------------------------------------


def bundle_layer(config: Mapping[str, Any]) -> Layer:
    """Values from a bundle's ``config.json`` (timm hub layout).

    ``pretrained_cfg`` holds the timm fields; ``pthkit.preprocess`` (when the bundle was written by pthkit, as
    ``Preprocess.to_dict()``) holds the exact values including ``scale``/``channel_order``/``resize_size``, and wins.
    ``label_names`` at the top level (timm's layout) or inside ``pretrained_cfg``.
    """
    if not isinstance(config, Mapping):
        raise PreprocessError.build("bundle config", received=type(config).__name__, expected="a dict (config.json)",
                                    hint="Pass the parsed config.json of the bundle.")
    source = "bundle config"
    layer = _timm_cfg_to_layer(dict(config.get("pretrained_cfg") or {}), source)
    values = dict(layer.values)
    own = (config.get("pthkit") or {}).get("preprocess") if isinstance(config.get("pthkit"), Mapping) else None
    if isinstance(own, Mapping):
        for key in ("input_size", "resize_size", "crop_pct", "crop_mode", "interpolation", "mean", "std",
                    "channel_order", "scale"):
            if own.get(key) is not None:
                value = own[key]
                values[key] = tuple(value) if isinstance(value, list) else value
    if config.get("label_names"):
        values["label_names"] = list(config["label_names"])
    num_classes = config.get("num_classes") or layer.num_classes
    return Layer(values, source, "bundle", num_classes=int(num_classes) if num_classes else None)


_ENTRY_KEYS = {
    "mean": "mean", "img_mean": "mean", "image_mean": "mean", "pixel_mean": "mean",
    "std": "std", "img_std": "std", "image_std": "std", "pixel_std": "std",
    "input_size": "input_size", "img_size": "input_size", "image_size": "input_size",
    "crop_pct": "crop_pct", "interpolation": "interpolation", "crop_mode": "crop_mode",
}


def _walk(data: Any, path: tuple[str, ...] = (), depth: int = 3) -> Iterator[tuple[tuple[str, ...], Any, Mapping]]:
    if not isinstance(data, Mapping) or depth < 0:
        return
    for key, value in data.items():
        if not isinstance(key, str):
            continue
        yield path + (key,), value, data
        if isinstance(value, Mapping):
            yield from _walk(value, path + (key,), depth - 1)


def checkpoint_layer(checkpoint: "Checkpoint") -> Layer:
    """Values the file itself records next to the weights: training args/hparams naming mean, std, image size …

    E.g. timm's ``train.py`` saves ``args`` (with ``mean``, ``std``, ``input_size``, ``crop_pct``, ``interpolation``);
    Lightning saves ``hyper_parameters``. A mean above 1.5 is taken as 0–255 units (scale 255); a sibling key
    ``format``/``input_format`` of ``BGR`` sets the channel order (detectron2 style).
    """
    entries = getattr(checkpoint, "entries", None) or {}
    values: dict[str, Any] = {}
    where: list[str] = []
    for path, value, parent in _walk(entries):
        field_name = _ENTRY_KEYS.get(path[-1].lower())
        if field_name is None or field_name in values:
            continue
        parsed = _entry_value(field_name, value)
        if parsed is None:
            continue
        values[field_name] = parsed
        where.append(".".join(path))
        if field_name in ("mean", "std"):
            fmt = parent.get("format", parent.get("input_format"))
            if isinstance(fmt, str) and fmt.upper() in ("BGR", "RGB"):
                values["channel_order"] = fmt.lower()
    if "mean" in values and max(values["mean"]) > 1.5:
        values["scale"] = 255.0
    elif "mean" in values or "std" in values:
        values.setdefault("scale", 1.0)
    source = f"checkpoint entries ({', '.join(where)})" if where else "checkpoint entries"
    return Layer(values, source, "checkpoint")


def _entry_value(field_name: str, value: Any) -> Any:
    if field_name in ("mean", "std"):
        if isinstance(value, (list, tuple)) and len(value) in (1, 3) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
        ):
            if field_name == "std" and min(value) <= 0:
                return None
            return tuple(float(v) for v in value)
        return None
    if field_name == "input_size":
        if isinstance(value, int) and not isinstance(value, bool) and 8 <= value <= 4096:
            return (3, value, value)
        if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
            if len(value) == 3:
                return tuple(value)
            if len(value) == 2:
                return (3, *value)
        return None
    if field_name == "crop_pct":
        return float(value) if isinstance(value, (int, float)) and 0 < value <= 2 else None
    if field_name in ("interpolation", "crop_mode"):
        allowed = {"interpolation": ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming"),
                   "crop_mode": ("center", "squash", "border")}[field_name]
        return value if value in allowed else None
    return None


# --- user overrides --------------------------------------------------------------------------------------------------

OVERRIDE_KEYS: dict[str, str] = {
    "size": "input_size", "input_size": "input_size", "resize_size": "resize_size", "crop_pct": "crop_pct",
    "crop_mode": "crop_mode", "interpolation": "interpolation", "mean": "mean", "std": "std",
    "channel_order": "channel_order", "scale": "scale", "label_names": "label_names",
}


def override_layers(overrides: Mapping[str, Any] | None, *, channels: int = 3) -> list[Layer]:
    """One layer per given override (``None`` values are ignored), source ``--<flag> flag``."""
    layers: list[Layer] = []
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        field_name = OVERRIDE_KEYS.get(key)
        if field_name is None:
            raise PreprocessError.build(
                "preprocessing override", received=repr(key), expected=f"one of {', '.join(OVERRIDE_KEYS)}",
                hint="Check the flag name (pthkit predict --help).",
            )
        flag = "--labels" if key == "label_names" else f"--{key.replace('_', '-')}"
        layers.append(Layer({field_name: _parse_override(key, field_name, value, channels)}, f"{flag} flag",
                            "override"))
    return layers


def _numbers(text: Any) -> list[float]:
    if isinstance(text, str):
        parts = [p for p in text.replace(",", " ").replace("x", " ").split() if p]
        return [float(p) for p in parts]
    if isinstance(text, (int, float)):
        return [float(text)]
    return [float(v) for v in text]


def _parse_override(key: str, field_name: str, value: Any, channels: int) -> Any:
    flag = f"--{key.replace('_', '-')}"
    try:
        if field_name == "input_size":
            nums = [int(v) for v in _numbers(value)]
            if len(nums) == 1:
                return (channels, nums[0], nums[0])
            if len(nums) == 2:
                return (channels, nums[0], nums[1])
            if len(nums) == 3:
                return tuple(nums)
            raise ValueError(value)
        if field_name == "resize_size":
            nums = [int(v) for v in _numbers(value)]
            if len(nums) not in (1, 2) or min(nums) < 1:
                raise ValueError(value)
            return nums[0] if len(nums) == 1 else tuple(nums)
        if field_name in ("mean", "std"):
            if isinstance(value, str) and value.strip().lower() in NAMED_NORMALIZATIONS:
                pair = NAMED_NORMALIZATIONS[value.strip().lower()]
                return tuple(pair[0] if field_name == "mean" else pair[1])
            floats = _numbers(value)
            if len(floats) == 1:
                floats = floats * channels
            if len(floats) != channels:
                raise ValueError(value)
            return tuple(floats)
        if field_name in ("crop_pct", "scale"):
            floats = _numbers(value)
            if len(floats) != 1:
                raise ValueError(value)
            return floats[0]
        if field_name == "label_names":
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise ValueError(value)
            return [str(v) for v in value]
        return str(value).strip().lower()
    except (TypeError, ValueError):
        expected = {
            "input_size": "a size like 224 or 224x256 (height x width)",
            "resize_size": "a size like 256 or 256x320",
            "mean": f"{channels} numbers like 0.485,0.456,0.406 or a name ({', '.join(NAMED_NORMALIZATIONS)})",
            "std": f"{channels} numbers like 0.229,0.224,0.225 or a name ({', '.join(NAMED_NORMALIZATIONS)})",
            "crop_pct": "one number, e.g. 0.875",
            "scale": "one number: 1 ([0,1] inputs) or 255 (raw 0-255)",
            "label_names": "a list of class names",
        }.get(field_name, "a value")
        raise PreprocessError.build(f"{flag}", received=repr(value), expected=expected,
                                    hint=f"Fix the {flag} value.") from None
