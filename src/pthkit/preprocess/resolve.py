"""Resolve the preprocessing for a model, in one place and a fixed order, recording where each value came from.

Order, lowest priority first (a later source wins, field by field)::

    defaults  <  inferred from batch-norm statistics  <  library config (timm pretrained_cfg / torchvision weights)
              <  the checkpoint's own entries (training args)  <  bundle config.json  <  overrides (flags)

with one deliberate exception for **bare files** (a ``.pth`` / ``.safetensors`` with no bundle config): a library
config describes *the library's own* pretrained weights of that architecture, not an arbitrary file that happens to
fit it. The lukemelas efficientnet-lite0 ``.pth`` fits timm's ``efficientnet_lite0`` exactly, whose config says
ImageNet mean/std — but that file was trained on 0.5/0.5 inputs, and feeding it ImageNet-normalized images gives
wrong predictions. So for a bare file the normalization (mean, std, scale, channel order) comes from inference when
inference is confident (``high`` or ``medium``), and the library config is recorded in ``notes`` as the
architecture's default; when inference is inconclusive or impossible, the library config is used and its source says
it is only the architecture's default. Sizes, crop and interpolation still come from the library config (they are
not visible in the weights; a wrong crop costs far less than a wrong normalization).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pthkit.preprocess.infer import NormalizationGuess, describe_normalization, infer_normalization
from pthkit.preprocess.sources import (
    Layer,
    bundle_layer,
    checkpoint_layer,
    imagenet_label_names,
    library_refs,
    override_layers,
    timm_layer,
    timm_model_layer,
    torchvision_layer,
)
from pthkit.preprocess.types import PREPROCESS_FIELDS, Preprocess

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from pthkit.checkpoint.types import Checkpoint

__all__ = ["resolve_preprocess", "NORMALIZATION_FIELDS"]

NORMALIZATION_FIELDS: tuple[str, ...] = ("mean", "std", "scale", "channel_order")
_ARCH_DEFAULT = "architecture default; this file's own normalization is unknown"


def resolve_preprocess(
    model: "torch.nn.Module | None" = None, *, arch: Any = None, checkpoint: "Checkpoint | None" = None,
    bundle_config: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None, infer: bool = True,
    bare: bool | None = None, images: Sequence[str | os.PathLike | "Image.Image"] | None = None,
) -> Preprocess:
    """The :class:`Preprocess` for ``model``, every value with its source (see the module docstring for the order).

    - ``model``: the loaded model (used for inference, its timm ``pretrained_cfg``, input channels, head size).
    - ``arch``: ``"timm:NAME"``, ``"torchvision:NAME"``, a bare registered name, user code ``file.py:Class`` (no
      library config; never imported here), or an ``Architecture``.
    - ``checkpoint``: the :class:`~pthkit.checkpoint.Checkpoint` the weights came from; training args it records
      (``args.mean`` …) are used.
    - ``bundle_config``: a bundle's parsed ``config.json``.
    - ``overrides``: ``size``, ``resize_size``, ``crop_pct``, ``crop_mode``, ``interpolation``, ``mean``, ``std``,
      ``channel_order``, ``scale``, ``label_names``; ``None`` values are ignored; each wins, source ``--<flag> flag``.
      Setting any of mean/std/scale/channel_order turns inference off (the flags define the normalization).
    - ``infer``: run :func:`infer_normalization` when the normalization is otherwise only a default / a guess.
    - ``bare``: whether the weights come from a file that does not say how it was trained. ``None`` (default): bare
      when a ``model`` or ``checkpoint`` is given without ``bundle_config`` — pthkit never loads a library's own
      pretrained weights, so a model it loaded from a file is bare; with only ``arch``, there is no file. Pass
      ``False`` for a model known to carry the library's pretrained weights.
    - ``images``: photos for inference (default: the sample photos of installed packages).
    """
    channels = _model_in_channels(model)
    flag_layers = override_layers(overrides, channels=channels or 3)
    bundle = bundle_layer(bundle_config) if bundle_config is not None else None
    ckpt = checkpoint_layer(checkpoint) if checkpoint is not None else None
    is_bare = bare if bare is not None else (bundle_config is None and (model is not None or checkpoint is not None))
    notes: list[str] = []

    lib = _library_layer(arch, model, notes)
    stated = [layer for layer in (ckpt, bundle, *flag_layers) if layer]
    norm_stated = any(f in layer.values for layer in stated for f in NORMALIZATION_FIELDS)
    lib_has_norm = bool(lib and "mean" in lib.values)

    guess: NormalizationGuess | None = None
    if norm_stated:
        pass
    elif not infer:
        if is_bare and model is not None:
            notes.append("this file does not state its normalization and inference is off (infer=False)")
    elif model is None:
        if is_bare and not lib_has_norm:
            notes.append("normalization not inferred: no model was given")
    elif is_bare or not lib_has_norm:
        guess = infer_normalization(model, images=images)

    layers: list[Layer] = [Layer(_defaults(), "default", "default")]
    inferred = _inferred_layer(guess, lib, is_bare, notes)
    if lib is not None and is_bare and lib_has_norm and not norm_stated and not (inferred and inferred.values):
        # The library config stays in charge of normalization, but says that it is only the architecture's default.
        lib_norm = Layer({k: lib.values[k] for k in NORMALIZATION_FIELDS if k in lib.values},
                         f"{lib.source} ({_ARCH_DEFAULT})", "library")
        layers += [lib, lib_norm]
    elif lib is not None:
        layers.append(lib)
    if inferred is not None:
        # For a bare file a confident inference outranks the library's default (see the module docstring).
        layers.insert(len(layers) if is_bare else 1, inferred)
    layers += [layer for layer in (ckpt, bundle) if layer]
    layers += flag_layers

    values, sources, ranks = _merge(layers)
    _fix_resize(values, sources, ranks)
    _labels(values, sources, layers, model, notes)
    _channels(values, sources, channels)
    pre = Preprocess(**values, sources=sources, notes=notes)
    pre.inference = guess
    return pre


# --- pieces ----------------------------------------------------------------------------------------------------------


def _defaults() -> dict[str, Any]:
    base = Preprocess()
    return {k: getattr(base, k) for k in PREPROCESS_FIELDS if k not in ("resize_size", "label_names")}


def _library_layer(arch: Any, model: Any, notes: list[str]) -> Layer | None:
    refs = library_refs(arch) if arch is not None else None
    layer: Layer | None = None
    if refs is not None:
        if refs.note:
            notes.append(refs.note)
        if refs.timm_name:
            layer = timm_layer(refs.timm_name)
        elif refs.torchvision_weights:
            layer = torchvision_layer(refs.torchvision_weights)
    if not layer and model is not None and getattr(model, "pretrained_cfg", None):
        layer = timm_model_layer(model)
    return layer if layer else None


def _inferred_layer(guess: NormalizationGuess | None, lib: Layer | None, is_bare: bool,
                    notes: list[str]) -> Layer | None:
    if guess is None:
        return None
    lib_norm = describe_normalization(lib.values["mean"], lib.values["std"], lib.values.get("scale", 1.0),
                                      lib.values.get("channel_order", "rgb")) if lib and "mean" in lib.values else None
    if not guess.available:
        fallback = f"{lib.source} ({_ARCH_DEFAULT})" if lib and lib_norm else "the defaults"
        notes.append(f"{guess.message}; using {fallback}")
        return None
    if not guess.confident:
        fallback = f"{lib.source} ({_ARCH_DEFAULT})" if lib and lib_norm else "the defaults (ImageNet mean/std)"
        notes.append(f"normalization inference inconclusive - {guess.message}; using {fallback}")
        return None
    cand = guess.candidate
    if cand is None:  # unreachable: a confident guess has a candidate
        return None
    source = guess.source
    notes.append(guess.message)
    notes += [line for line in guess.evidence if "rgb and bgr" in line or "fits better than" in line]
    if lib is not None and lib_norm is not None:
        if lib_norm == cand.label:
            source += f"; agrees with {lib.source}"
        elif is_bare:
            notes.append(
                f"{lib.source} gives {lib_norm}: that is the architecture's default for its library weights, not "
                f"evidence about this file; the file's batch-norm statistics fit {cand.label} better, so those are used"
            )
    values = {"mean": cand.mean, "std": cand.std, "scale": cand.scale, "channel_order": cand.channel_order}
    return Layer(values, source, "inferred")


def _merge(layers: list[Layer]) -> tuple[dict[str, Any], dict[str, str], dict[str, int]]:
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    ranks: dict[str, int] = {}
    for rank, layer in enumerate(layers):
        for key, value in layer.values.items():
            values[key] = value
            sources[key] = layer.source
            ranks[key] = rank
    return values, sources, ranks


def _fix_resize(values: dict[str, Any], sources: dict[str, str], ranks: dict[str, int]) -> None:
    """Drop a stated ``resize_size`` when a later source changed the crop size or crop_pct (it is then recomputed)."""
    if "resize_size" not in values:
        return
    later = max(ranks.get("input_size", -1), ranks.get("crop_pct", -1))
    if ranks["resize_size"] < later:
        del values["resize_size"]
        sources.pop("resize_size", None)


def _labels(values: dict[str, Any], sources: dict[str, str], layers: list[Layer], model: Any,
            notes: list[str]) -> None:
    n_out = _model_num_classes(model)
    names = values.get("label_names")
    if names is not None and n_out is not None and len(names) != n_out:
        notes.append(f"{sources.get('label_names')} lists {len(names)} class names but the model has {n_out} "
                     "outputs: names not used")
        del values["label_names"]
        sources["label_names"] = "none known"
        names = None
    if names is None:
        lib_classes = next((layer.num_classes for layer in reversed(layers) if layer.kind == "library"), None)
        if n_out == 1000 or (n_out is None and lib_classes == 1000):
            values["label_names"] = imagenet_label_names()
            why = "1000-class head" if n_out == 1000 else "the library config has 1000 classes"
            sources["label_names"] = f"ImageNet-1k class names ({why})"
        else:
            sources["label_names"] = "none known"


def _channels(values: dict[str, Any], sources: dict[str, str], channels: int | None) -> None:
    size = values.get("input_size", (3, 224, 224))
    if channels is None or channels == size[0] or channels not in (1, 3):
        return
    values["input_size"] = (channels, size[1], size[2])
    first = f"{channels} channel(s) from the model's first layer"
    sources["input_size"] = f"{sources.get('input_size', 'default')}; {first}"
    for key in ("mean", "std"):
        vec = tuple(values.get(key, ()))
        if len(vec) != channels and vec:
            values[key] = (sum(vec) / len(vec),) * channels


def _model_in_channels(model: Any) -> int | None:
    if model is None:
        return None
    import torch

    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            return int(module.in_channels) if isinstance(module, torch.nn.Conv2d) else None
    return None


def _model_num_classes(model: Any) -> int | None:
    if model is None:
        return None
    import torch

    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    last = None
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            last = module
    return int(last.out_features) if last is not None else None

