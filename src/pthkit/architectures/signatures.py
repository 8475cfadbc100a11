"""An architecture's signature: its ordered ``(key, shape)`` list plus where its head, stem and position embedding are.

Built on the ``meta`` device, so no memory is allocated and no weights are initialised or downloaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pthkit.architectures.types import Architecture

if TYPE_CHECKING:
    from torch import nn

__all__ = ["HEAD_OPTIONS", "NBT", "HeadOption", "Signature", "compute_signature", "signature_from_module"]

NBT = "num_batches_tracked"
Shape = tuple[int, ...]

# Boolean constructor arguments that add or remove tensors (auxiliary heads): torchvision segmentation models'
# aux_loss, googlenet / inception_v3 (torchvision and timm) aux_logits. Inferred from the file.
HEAD_OPTIONS = ("aux_loss", "aux_logits")


@dataclass(frozen=True)
class HeadOption:
    """A boolean constructor argument whose value decides whether ``keys`` (with ``shapes``) exist in the model.

    ``default`` is the architecture's default: when True the keys are part of the signature's ``keys``; when False
    they are not, and a file that holds them is built with ``kwarg=True``.
    """

    kwarg: str
    default: bool
    keys: tuple[str, ...]
    shapes: tuple[Shape, ...]

    def to_json(self) -> dict[str, Any]:
        return {"kw": self.kwarg, "d": self.default, "k": list(self.keys), "s": [list(s) for s in self.shapes]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HeadOption:
        return cls(kwarg=str(data["kw"]), default=bool(data["d"]), keys=tuple(data["k"]),
                   shapes=tuple(tuple(s) for s in data["s"]))


@dataclass
class Signature:
    """What identification needs to know about an architecture, as plain data (cached as JSON).

    - ``keys`` / ``shapes``: the ``state_dict`` in order, buffers included.
    - ``head``: keys of the classifier head(s) (timm ``pretrained_cfg['classifier']``, else the last Linear layer of a
      torchvision classifier); ``num_classes`` is their output size.
    - ``stem``: key of the first convolution weight (its dim 1 is ``in_chans``).
    - ``pos_embed``: key of a ViT-style position embedding, with ``num_prefix_tokens`` and ``patch_size`` so an image
      size can be inferred from its length.
    - ``cfg``: default preprocessing (timm ``pretrained_cfg`` subset) used to explain how equivalent candidates differ.
    - ``options``: boolean head options (:class:`HeadOption`), e.g. ``aux_loss`` of torchvision segmentation models.
    """

    name: str
    keys: list[str]
    shapes: list[Shape]
    head: tuple[str, ...] = ()
    num_classes: int | None = None
    stem: str | None = None
    in_chans: int | None = None
    pos_embed: str | None = None
    num_prefix_tokens: int = 0
    patch_size: int | None = None
    img_size: int | None = None
    cfg: dict[str, Any] = field(default_factory=dict)
    options: tuple[HeadOption, ...] = ()

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def items(self) -> list[tuple[str, Shape]]:
        return list(zip(self.keys, self.shapes))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"k": self.keys, "s": [list(s) for s in self.shapes]}
        for attr in ("head", "num_classes", "stem", "in_chans", "pos_embed", "num_prefix_tokens", "patch_size",
                     "img_size", "cfg"):
            value = getattr(self, attr)
            if value not in (None, (), {}, 0):
                data[attr] = list(value) if isinstance(value, tuple) else value
        if self.options:
            data["opt"] = [o.to_json() for o in self.options]
        return data

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> Signature:
        return cls(
            name=name, keys=list(data["k"]), shapes=[tuple(s) for s in data["s"]],
            head=tuple(data.get("head", ())), num_classes=data.get("num_classes"), stem=data.get("stem"),
            in_chans=data.get("in_chans"), pos_embed=data.get("pos_embed"),
            num_prefix_tokens=data.get("num_prefix_tokens", 0), patch_size=data.get("patch_size"),
            img_size=data.get("img_size"), cfg=data.get("cfg", {}),
            options=tuple(HeadOption.from_json(o) for o in data.get("opt", ())),
        )


def _keys_under(keys: list[str], module: str) -> list[str]:
    return [k for k in keys if k.startswith(module + ".")] if module else []


def _head_keys(model: nn.Module, keys: list[str], source: str) -> tuple[str, ...]:
    from torch import nn

    cfg = getattr(model, "pretrained_cfg", None) or {}
    classifier = cfg.get("classifier") if isinstance(cfg, dict) else None
    if classifier:
        names = [classifier] if isinstance(classifier, str) else list(classifier)
        head = [k for n in names for k in _keys_under(keys, n)]
        if head:
            return tuple(head)
    if source == "timm" and hasattr(model, "get_classifier"):
        try:
            clf = model.get_classifier()  # type: ignore[operator]
        except Exception:  # noqa: BLE001 - some timm models have no single classifier module
            clf = None
        if isinstance(clf, nn.Module):
            for name, module in model.named_modules():
                if module is clf and name:
                    return tuple(_keys_under(keys, name))
    # torchvision / user classifiers: the last Linear (or last conv, as in squeezenet) gives num_classes; any other
    # Linear with that output size (an auxiliary head: googlenet, inception_v3) belongs to the head too.
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    last = linears[-1] if linears else None
    if last is None:
        convs = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
        if not convs:
            return ()
        name, module = convs[-1]
        return tuple(_keys_under(keys, name))
    out = last[1].out_features
    names = [n for n, m in linears if m.out_features == out]
    return tuple(k for n in names for k in _keys_under(keys, n))


def signature_from_module(name: str, model: nn.Module, source: str = "user") -> Signature:
    """The signature of an already built module (any device, meta included)."""
    state = model.state_dict(keep_vars=True)
    keys = list(state)
    shapes = [tuple(int(d) for d in t.shape) for t in state.values()]
    shape_of = dict(zip(keys, shapes))
    classification = source in ("timm", "user", "entrypoint") or _is_torchvision_classifier(name)
    head = _head_keys(model, keys, source) if classification else ()
    num_classes = None
    for k in head:
        if k.endswith("weight") and shape_of[k]:
            num_classes = shape_of[k][0]
            break
    cfg_all = getattr(model, "pretrained_cfg", None) or {}
    stem = None
    first_conv = cfg_all.get("first_conv") if isinstance(cfg_all, dict) else None
    if isinstance(first_conv, str) and f"{first_conv}.weight" in shape_of:
        stem = f"{first_conv}.weight"
    else:
        stem = next((k for k, s in zip(keys, shapes) if k.endswith("weight") and len(s) in (4, 5)), None)
    in_chans = shape_of[stem][1] if stem else None
    pos_embed = patch = img = None
    prefix_tokens = 0
    if "pos_embed" in shape_of and len(shape_of["pos_embed"]) == 3:
        pe = getattr(model, "patch_embed", None)
        ps = getattr(pe, "patch_size", None)
        isz = getattr(pe, "img_size", None)
        if ps is not None:
            pos_embed = "pos_embed"
            patch = int(ps[0] if isinstance(ps, (tuple, list)) else ps)
            img = int(isz[0] if isinstance(isz, (tuple, list)) else isz) if isz is not None else None
            prefix_tokens = 0 if getattr(model, "no_embed_class", False) else int(
                getattr(model, "num_prefix_tokens", 0) or 0)
    cfg = {}
    if isinstance(cfg_all, dict):
        cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg_all.items()
               if k in ("mean", "std", "interpolation", "crop_pct", "input_size", "crop_mode")}
    return Signature(
        name=name, keys=keys, shapes=shapes, head=head, num_classes=num_classes, stem=stem, in_chans=in_chans,
        pos_embed=pos_embed, num_prefix_tokens=prefix_tokens, patch_size=patch, img_size=img, cfg=cfg,
    )


_TV_CLASSIFIERS: set[str] | None = None


def _is_torchvision_classifier(name: str) -> bool:
    global _TV_CLASSIFIERS
    if not name.startswith("torchvision:"):
        return False
    if _TV_CLASSIFIERS is None:
        from torchvision import models  # type: ignore[import-untyped]

        _TV_CLASSIFIERS = set(models.list_models(module=models))
        for sub in ("quantization", "video"):  # also classifiers: a Linear head sized num_classes
            if hasattr(models, sub):
                _TV_CLASSIFIERS |= set(models.list_models(module=getattr(models, sub)))
    return name.split(":", 1)[1] in _TV_CLASSIFIERS


# In-place ops that change a tensor's shape or view: these must still run on meta.
_SHAPE_CHANGING = frozenset({"resize_", "resize_as_", "set_", "as_strided_", "squeeze_", "unsqueeze_", "t_",
                             "transpose_", "swapaxes_", "swapdims_"})


def _SkipInitOnMeta():
    """A dispatch mode that skips in-place ops (weight init: ``normal_``, ``trunc_normal_``'s ``erfinv_`` …) on meta
    tensors. They cannot change shapes, yet their Python meta kernels are ~half the cost of a meta build."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class SkipInitOnMeta(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            name = func._schema.name.rsplit("::", 1)[-1]
            if (name.endswith("_") and name not in _SHAPE_CHANGING and args and isinstance(args[0], torch.Tensor)
                    and args[0].is_meta):
                return args[0]
            return func(*args, **(kwargs or {}))

    return SkipInitOnMeta()


def _build(arch: Architecture, kwargs: dict[str, Any]) -> nn.Module:
    import torch

    try:
        with torch.device("meta"), _SkipInitOnMeta():
            return arch.build(**kwargs)
    except Exception:  # noqa: BLE001 - a model that computes values at init: build it for real
        return arch.build(**kwargs)


def _accepted_options(arch: Architecture, model: nn.Module) -> list[str]:
    """Which of :data:`HEAD_OPTIONS` the builder or the model class takes as a named parameter."""
    import inspect

    params: set[str] = set()
    targets: list[Any] = [type(model).__init__]
    if arch.source == "torchvision":
        try:
            from torchvision import models

            targets.append(models.get_model_builder(arch.short_name))
        except (ValueError, KeyError):  # not a torchvision builder name
            pass
    for target in targets:
        try:
            params |= set(inspect.signature(target).parameters)
        except (TypeError, ValueError):  # builtins without a signature
            continue
    return [o for o in HEAD_OPTIONS if o in params]


def _head_options(arch: Architecture, model: nn.Module, keys: list[str], kwargs: dict[str, Any]) -> tuple[HeadOption, ...]:
    """Build with each boolean head option on and off; the keys only one of them has belong to the option."""
    out = []
    for option in _accepted_options(arch, model):
        if option in kwargs:
            continue
        try:
            on = _build(arch, {**kwargs, option: True}).state_dict(keep_vars=True)
            off = _build(arch, {**kwargs, option: False}).state_dict(keep_vars=True)
        except Exception:  # noqa: BLE001, S112 - the option exists but this configuration refuses it: nothing to infer
            continue
        extra = [k for k in on if k not in off]
        if not extra or any(k not in on for k in off):
            continue
        default = all(k in set(keys) for k in extra)
        if not default and any(k in set(keys) for k in extra):
            continue
        out.append(HeadOption(kwarg=option, default=default, keys=tuple(extra),
                              shapes=tuple(tuple(int(d) for d in on[k].shape) for k in extra)))
    return tuple(out)


def compute_signature(arch: Architecture, **kwargs: Any) -> Signature:
    """Build ``arch`` on the meta device (no memory, no init cost to speak of) and read its signature.

    Falls back to a CPU build for the few models that cannot be built on meta (they compute values at init).
    Boolean head options (:data:`HEAD_OPTIONS`) are found by building the model with each value.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constructor chatter (googlenet's init FutureWarning) is not the user's
        model = _build(arch, kwargs)
        sig = signature_from_module(arch.name, model, arch.source)
        options = _head_options(arch, model, sig.keys, kwargs)
    if options:
        sig.options = options
    return sig


def infer_img_size(sig: Signature, file_len: int) -> int | None:
    """Image size whose patch grid gives a position embedding of ``file_len`` tokens (square grids only)."""
    if not sig.patch_size:
        return None
    grid = file_len - sig.num_prefix_tokens
    side = math.isqrt(grid) if grid > 0 else 0
    if side * side != grid:
        return None
    return side * sig.patch_size
