"""Option aliases shared by several commands, so flags read the same everywhere."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust",
        help="Allow code from the file to run (full unpickling / TorchScript). Only for files you trust.",
    ),
]
ArchOpt = Annotated[
    Optional[str],
    typer.Option(
        "--arch",
        "-a",
        help="Architecture: a registered name (timm:resnet18, torchvision:resnet18, resnet18), "
        "path/to/file.py:ClassName or package.module:factory. Identified from the weights when omitted.",
    ),
]
ArchKwargsOpt = Annotated[
    Optional[list[str]],
    typer.Option("--arch-kwargs", help="Constructor arguments for --arch, key=value (value parsed as Python literal)."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps.")]
BackendOpt = Annotated[str, typer.Option("--backend", help="torch (default), onnxruntime, openvino, or auto: export once (cached), check parity, run the fastest backend that passes.")]

# The same choices as ``read_checkpoint(select=...)``; kept here because importing ``pthkit.checkpoint`` imports torch.
SelectMode = Literal["auto", "raw", "ema"]
SelectOpt = Annotated[
    SelectMode,
    typer.Option(
        "--select",
        help="Which weights to use when the file holds several (raw and EMA): "
        "auto (pthkit chooses and says which), raw, ema.",
    ),
]
NoStripPrefixOpt = Annotated[
    bool,
    typer.Option(
        "--no-strip-prefix",
        help="Keep wrapper prefixes (module., model., _orig_mod.) in tensor names instead of removing them.",
    ),
]

# --- --size: one parser for every command ------------------------------------------------------------------------------

SizeOpt = Annotated[
    Optional[str],
    typer.Option("--size", help="Input size in pixels: 224 (square) or H,W (e.g. 224,320). Default: the model's."),
]


def parse_size(text: str | None, flag: str = "--size") -> int | tuple[int, int] | None:
    """``"224"`` → 224, ``"224,320"`` / ``"224x320"`` → (224, 320), None → None; anything else is a usage error.

    The one parser behind ``--size`` in predict, evaluate, finetune and bundle (exit code 2 on a bad value).
    """
    if text is None:
        return None
    parts = [p for p in str(text).replace("x", ",").replace(" ", ",").split(",") if p]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(nums) not in (1, 2) or min(nums) < 1:
        raise typer.BadParameter(f"received {text!r}; expected a positive number of pixels (224) or H,W (224,320)",
                                 param_hint=f"'{flag}'")
    if len(nums) == 1 or nums[0] == nums[1]:
        return nums[0]
    return (nums[0], nums[1])


# --- --top-k (with --top kept as a hidden alias) -------------------------------------------------------------------------

TopKOpt = Annotated[Optional[int], typer.Option("--top-k", "-k", min=1, help="How many classes / candidates to show.")]
TopAliasOpt = Annotated[Optional[int], typer.Option("--top", min=1, hidden=True, help="Old name of --top-k.")]


def top_k(value: int | None, alias: int | None, default: int) -> int:
    """``--top-k``, or the hidden old ``--top``; both given and different is a usage error."""
    if value is not None and alias is not None and value != alias:
        raise typer.BadParameter(f"--top-k {value} and --top {alias} disagree; --top is the old name of --top-k",
                                 param_hint="'--top-k'")
    return value if value is not None else (alias if alias is not None else default)


# --- preprocessing overrides (predict, evaluate) --------------------------------------------------------------------------

CropPctOpt = Annotated[Optional[float], typer.Option("--crop-pct", help="Center-crop fraction (0.875: resize to 256, crop 224).")]
MeanOpt = Annotated[Optional[str], typer.Option("--mean", help="Normalization mean R,G,B (in the --scale units), or a name: imagenet, inception, openai-clip.")]
StdOpt = Annotated[Optional[str], typer.Option("--std", help="Normalization std R,G,B.")]
InterpolationOpt = Annotated[Optional[str], typer.Option("--interpolation", help="Resize interpolation: bilinear, bicubic, nearest, lanczos …")]
ChannelOrderOpt = Annotated[Optional[str], typer.Option("--channel-order", help="rgb or bgr.")]
ScaleOpt = Annotated[Optional[float], typer.Option("--scale", help="1: inputs in [0,1] before normalization; 255: raw 0-255.")]


def preprocess_overrides(**flags: object) -> dict[str, object] | None:
    """The preprocessing flags the user gave (``resolve_preprocess`` parses and validates their values)."""
    values = {k: v for k, v in flags.items() if v is not None}
    if "size" in values:
        values["size"] = parse_size(str(values["size"]))
    return values or None
