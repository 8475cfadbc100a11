"""Build the eval / training pipelines of a :class:`~pthkit.preprocess.types.Preprocess`, and describe them.

The eval pipeline is torchvision ``transforms.v2`` with the same steps, in the same order and on the same image type
(PIL) as timm's ``transforms_imagenet_eval`` and torchvision's ``ImageClassification`` preset, so the tensors agree
with theirs to float rounding. timm's own ``ResizeKeepRatio`` / ``CenterCropOrPad`` are reused for the cases
torchvision has no preset for (non-square shorter-side fit, ``border`` mode). The training pipeline *is* timm's
``create_transform(is_training=True)``: its augmentations are well kept and fine-tuning recipes expect them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from pthkit.errors import PreprocessError

if TYPE_CHECKING:
    from torchvision.transforms import v2

    from pthkit.preprocess.types import Preprocess

__all__ = ["eval_transform", "train_transform", "describe_steps", "ReverseChannels"]


class ReverseChannels(torch.nn.Module):
    """Reverse the channel axis of a ``(..., C, H, W)`` tensor (RGB ↔ BGR).

    Written by hand because transforms.v2 has no channel permutation; a module (not a lambda) so DataLoader workers
    can pickle the pipeline.
    """

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return tensor.flip(-3)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(RGB -> BGR)"


def _rgb_order_normalization(pre: "Preprocess") -> tuple[list[float], list[float]]:
    """Mean/std applied to the [0,1] RGB tensor: scale folded in, and in RGB order (reversed after for ``bgr``).

    ``(x*s - m)/d == (x - m/s)/(d/s)``; normalizing in RGB order with reversed values and then reversing the channels
    equals reversing first and normalizing with the model-order values.
    """
    mean = [m / pre.scale for m in pre.mean]
    std = [s / pre.scale for s in pre.std]
    if pre.channel_order == "bgr":
        mean, std = mean[::-1], std[::-1]
    return mean, std


def _check_channels(pre: "Preprocess") -> int:
    channels = pre.input_size[0]
    if channels not in (1, 3):
        raise PreprocessError.build(
            "input channels", received=f"input_size {pre.input_size}", expected="1 (grayscale) or 3 (RGB) channels",
            hint="Build the pipeline for other channel counts yourself; pthkit's image pipeline decodes RGB.",
        )
    return channels


def eval_transform(pre: "Preprocess") -> "v2.Compose":
    """PIL RGB image → float ``(C, H, W)``: resize (antialiased), crop, to [0,1], ×scale, reorder, normalize."""
    from timm.data.transforms import CenterCropOrPad, ResizeKeepRatio
    from torchvision.transforms import InterpolationMode, v2

    channels = _check_channels(pre)
    interp = InterpolationMode(pre.interpolation)
    crop = pre.crop_size
    resize = pre.effective_resize_size
    steps: list[Any] = []
    if pre.crop_mode == "squash":
        size = resize if isinstance(resize, tuple) else (resize, resize)
        steps += [v2.Resize(size, interpolation=interp, antialias=True), v2.CenterCrop(crop)]
    elif pre.crop_mode == "border":
        size = resize if isinstance(resize, tuple) else (resize, resize)
        mean_rgb, _ = _rgb_order_normalization(pre)
        r, g, b = (round(255 * v) for v in mean_rgb) if channels == 3 else (round(255 * mean_rgb[0]),) * 3
        fill: int | tuple[int, int, int] = (r, g, b) if channels == 3 else r
        steps += [ResizeKeepRatio(size, interpolation=pre.interpolation, longest=1.0),
                  CenterCropOrPad(list(crop), fill=fill)]
    elif isinstance(resize, tuple) and resize[0] != resize[1]:
        steps += [ResizeKeepRatio(resize, interpolation=pre.interpolation), v2.CenterCrop(crop)]
    else:
        side = resize[0] if isinstance(resize, tuple) else resize
        steps += [v2.Resize(side, interpolation=interp, antialias=True), v2.CenterCrop(crop)]
    if channels == 1:
        steps.append(v2.Grayscale(num_output_channels=1))
    mean, std = _rgb_order_normalization(pre)
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=mean, std=std)]
    if pre.channel_order == "bgr":
        steps.append(ReverseChannels())
    return v2.Compose(steps)


def train_transform(pre: "Preprocess", **timm_kwargs: Any) -> Any:
    """timm's ``create_transform(is_training=True)`` with the resolved size, interpolation, mean and std.

    Caveats, by design: ``scale`` is folded into mean/std (exact); for ``bgr`` timm normalizes in RGB order with the
    reversed values and :class:`ReverseChannels` runs last (exact as well; timm's random erasing then fills before the
    swap, which changes nothing statistically). Colour augmentations see the RGB image, as they should. Only 3-channel
    inputs are supported here.
    """
    from timm.data import create_transform
    from torchvision.transforms import v2

    if _check_channels(pre) != 3:
        raise PreprocessError.build(
            "training pipeline", received=f"input_size {pre.input_size}", expected="3 input channels",
            hint="Fine-tuning uses timm's RGB augmentations; pass a 3-channel model.",
        )
    mean, std = _rgb_order_normalization(pre)
    kwargs: dict[str, Any] = {"interpolation": pre.interpolation}
    kwargs.update(timm_kwargs)
    base = create_transform(pre.input_size, is_training=True, mean=tuple(mean), std=tuple(std), **kwargs)
    if pre.channel_order == "bgr":
        return v2.Compose([base, ReverseChannels()])
    return base


def _fmt(values: Any) -> str:
    if isinstance(values, (tuple, list)):
        return "(" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values) + ")"
    return f"{values:g}" if isinstance(values, float) else str(values)


def _src(pre: "Preprocess", *names: str) -> str:
    """``[source]`` when the fields share one source, else ``[field: source; …]``."""
    got = [pre.sources.get(n, "default") for n in names]
    if len(set(got)) == 1:
        return f"[{got[0]}]"
    return "[" + "; ".join(f"{n}: {g}" for n, g in zip(names, got)) + "]"


def describe_steps(pre: "Preprocess") -> str:
    """Human-readable pipeline: one numbered line per step, each with the source of its values in brackets."""
    c, h, w = pre.input_size
    resize = pre.effective_resize_size
    how = "stated" if pre.resize_size is not None else f"= floor({h} / crop_pct {pre.crop_pct:g})"
    size_fields = ("resize_size",) if pre.resize_size is not None else ("crop_pct",)
    lines = [f"Preprocessing: PIL RGB image -> float tensor {c}x{h}x{w}"]
    steps: list[str] = []
    if pre.crop_mode == "squash":
        what = f"Resize to {_fmt(resize)} px ignoring aspect ratio (squash)"
    elif pre.crop_mode == "border":
        what = f"Resize the longer side to {_fmt(resize)} px"
    elif isinstance(resize, tuple):
        what = f"Resize, keeping aspect ratio, to fit {_fmt(resize)} px"
    else:
        what = f"Resize the shorter side to {resize} px"
    steps.append(f"{what} ({how}), {pre.interpolation}, antialiased {_src(pre, *size_fields, 'interpolation')}")
    crop = "Center-crop" if pre.crop_mode != "border" else "Center-crop or pad with the mean colour to"
    steps.append(f"{crop} {h}x{w} (crop_mode {pre.crop_mode}) {_src(pre, 'input_size', 'crop_mode')}")
    if c == 1:
        steps.append("Convert to grayscale (1 channel)")
    rng = "[0, 1]" if pre.scale == 1.0 else f"[0, 1], then multiply by {pre.scale:g} (raw 0-{pre.scale:g} range)"
    order = "reorder channels RGB -> BGR" if pre.channel_order == "bgr" else "RGB channel order"
    steps.append(f"Convert to float in {rng}; {order} {_src(pre, 'scale', 'channel_order')}")
    steps.append(f"Normalize: subtract mean {_fmt(pre.mean)}, divide by std {_fmt(pre.std)} {_src(pre, 'mean', 'std')}")
    lines += [f"  {i}. {step}" for i, step in enumerate(steps, 1)]
    if pre.label_names is not None:
        shown = ", ".join(pre.label_names[:3]) + (", ..." if len(pre.label_names) > 3 else "")
        lines.append(f"Labels: {len(pre.label_names)} names ({shown}) {_src(pre, 'label_names')}")
    else:
        lines.append("Labels: none known (class indices are shown)")
    if pre.notes:
        lines.append("Notes:")
        lines += [f"  - {note}" for note in pre.notes]
    return "\n".join(lines)
