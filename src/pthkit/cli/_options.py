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
