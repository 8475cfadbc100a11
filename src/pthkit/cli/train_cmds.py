"""``pthkit finetune``, ``pthkit evaluate``, ``pthkit bundle``: thin commands over the API.

torch, timm and the API are imported inside the command bodies so ``pthkit --help`` stays instant. Run under
``torchrun --nproc-per-node N -m pthkit.cli.train_cmds finetune ...`` (or the ``pthkit`` console script path) to
train with DistributedDataParallel; this module also runs on its own (``python -m pthkit.cli.train_cmds``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from pthkit.cli._options import ArchKwargsOpt, ArchOpt, DeviceOpt, JsonOpt, TrustOpt

__all__ = ["register"]

WeightsArg = Annotated[str, typer.Argument(help="Weights file (.pth, .pt, .bin, .safetensors …) to start from.")]
DataArg = Annotated[
    str,
    typer.Argument(help="Image folder (DATA/<class>/*, or DATA/train + DATA/val) or a CSV of path,label."),
]


def _arch_kwargs(values: list[str] | None) -> dict | None:
    if not values:
        return None
    from pthkit.architectures.user_code import parse_arch_kwargs

    return parse_arch_kwargs(values)


def finetune_command(
    weights: WeightsArg,
    data: DataArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: bundle, checkpoints, metrics logs.")],
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 10,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Global batch size (all processes).")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate of the new head.")] = 1e-3,
    backbone_lr_scale: Annotated[float, typer.Option(help="Backbone learning rate = lr × this.")] = 0.1,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay (not on biases and norms).")] = 0.05,
    warmup_epochs: Annotated[float, typer.Option(help="Linear warm-up length, in epochs.")] = 1.0,
    freeze_epochs: Annotated[int, typer.Option(help="Train only the head for this many epochs first.")] = 0,
    val_split: Annotated[float, typer.Option(help="Validation fraction when DATA has no val/ folder.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed: same seed, same data order, same result.")] = 0,
    size: Annotated[Optional[int], typer.Option(help="Input size in pixels (default: the model's).")] = None,
    amp: Annotated[Optional[str], typer.Option(help="Mixed precision: bf16 or fp16.")] = None,
    accum_steps: Annotated[int, typer.Option(help="Gradient accumulation steps.")] = 1,
    class_weights: Annotated[str, typer.Option(help="none or balanced (weight classes by 1/frequency).")] = "none",
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing of the loss.")] = 0.1,
    hflip: Annotated[float, typer.Option(help="Horizontal flip probability (0 for digits/text).")] = 0.5,
    crop_scale_min: Annotated[float, typer.Option(help="Smallest random-resized-crop area fraction.")] = 0.08,
    color_jitter: Annotated[float, typer.Option(help="Colour jitter strength.")] = 0.4,
    patience: Annotated[Optional[int], typer.Option(help="Stop after this many epochs without improvement.")] = None,
    monitor: Annotated[str, typer.Option(help="Validation metric choosing the best model: val_acc or val_loss.")] = (
        "val_acc"),
    save_every_steps: Annotated[Optional[int], typer.Option(help="Also checkpoint every N optimizer steps.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue --out's run from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier run in --out.")] = False,
    workers: Annotated[Optional[int], typer.Option(help="Data loader worker processes.")] = None,
    device: DeviceOpt = "auto",
    trust: TrustOpt = False,
    json_out: JsonOpt = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """Fine-tune WEIGHTS on DATA: new head for DATA's classes, best model saved as a bundle in --out."""
    from pthkit.tasks.finetune import finetune

    result = finetune(
        weights, data, out, arch=arch, arch_kwargs=_arch_kwargs(arch_kwargs), epochs=epochs, batch_size=batch_size,
        lr=lr,
        backbone_lr_scale=backbone_lr_scale, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
        freeze_epochs=freeze_epochs, val_split=val_split, seed=seed, size=size, amp=amp,  # type: ignore[arg-type]
        accum_steps=accum_steps, class_weights=class_weights, label_smoothing=label_smoothing,  # type: ignore[arg-type]
        hflip=hflip, crop_scale_min=crop_scale_min, color_jitter=color_jitter, patience=patience,
        monitor=monitor, save_every_steps=save_every_steps,  # type: ignore[arg-type]
        resume=resume, overwrite=overwrite,
        workers=workers, device=device, trust=trust, progress=not no_progress and not json_out,
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return
    from pthkit.cli._output import console, print_json

    if json_out:
        print_json(result.to_dict())
    else:
        console.print(str(result), markup=False)


def evaluate_command(
    model: Annotated[str, typer.Argument(help="A bundle folder or a weights file.")],
    data: DataArg,
    arch: ArchOpt = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Class names of the model's outputs.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write confusion matrix PNG/JSON here.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b")] = 64,
    workers: Annotated[Optional[int], typer.Option(help="Data loader worker processes.")] = None,
    amp: Annotated[Optional[str], typer.Option(help="bf16 or fp16 autocast.")] = None,
    device: DeviceOpt = "auto",
    trust: TrustOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate MODEL on labelled DATA: top-1/top-5, per-class precision/recall/F1, confusion matrix, ECE."""
    from pthkit.bundle import read_labels
    from pthkit.tasks.evaluate import evaluate

    report = evaluate(model, data, arch=arch, label_names=read_labels(labels) if labels else None,
                      batch_size=batch_size, workers=workers, device=device, amp=amp, trust=trust, out_dir=out)
    from pthkit.cli._output import console, print_json

    if json_out:
        print_json(report.to_dict())
        return
    from rich.table import Table

    console.print(str(report), markup=False)
    table = Table("class", "precision", "recall", "F1", "support")
    for c in report.per_class:
        if c.support or c.precision:
            table.add_row(c.name, f"{c.precision:.3f}", f"{c.recall:.3f}", f"{c.f1:.3f}", str(c.support))
    console.print(table)


def bundle_command(
    weights: WeightsArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle folder to write.")],
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Class names, one per line (or JSON).")] = None,
    num_classes: Annotated[Optional[int], typer.Option(help="New head size (re-initialized when it differs).")] = None,
    size: Annotated[Optional[int], typer.Option(help="Input size in pixels to record.")] = None,
    trust: TrustOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Turn a loadable weights file into a bundle: model.safetensors + config.json (timm's hub layout)."""
    from pthkit.bundle import bundle_weights, read_labels

    overrides = {"input_size": (3, size, size)} if size is not None else None
    folder, config = bundle_weights(weights, out, arch=arch, arch_kwargs=_arch_kwargs(arch_kwargs),
                                    label_names=read_labels(labels) if labels else None, num_classes=num_classes,
                                    overrides=overrides, trust=trust)
    from pthkit.cli._output import console, print_json

    if json_out:
        print_json({"bundle": str(folder), "config": config})
        return
    section = config.get("pthkit", {})
    console.print(f"Bundle written to {folder}: {section.get('arch')} ({config.get('num_classes')} classes)",
                  markup=False)
    if not section.get("timm_loadable", False):
        console.print(f"Note: {section.get('note', 'timm cannot load this bundle')}", markup=False)
    # A head re-initialized (--num-classes, or a --labels count that differs from the file's head) holds random
    # weights until fine-tuned: say so rather than let the bundle pass for the pretrained classifier.
    for note in (section.get("load_report") or {}).get("notes", []):
        if note.get("cause") == "classifier-head":
            console.print(f"Note: {note.get('detail')}: its outputs are random until fine-tuned.", markup=False)


def register(app: typer.Typer) -> None:
    """Add ``finetune``, ``evaluate`` and ``bundle`` to the app."""
    app.command("finetune", no_args_is_help=True)(finetune_command)
    app.command("evaluate", no_args_is_help=True)(evaluate_command)
    app.command("bundle", no_args_is_help=True)(bundle_command)


def _standalone() -> int:
    """Run these commands without the rest of the CLI (used under torchrun; errors mapped like ``pthkit``)."""
    import sys

    from pthkit.errors import PthkitError

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)
    register(app)
    try:
        app(standalone_mode=False)
    except PthkitError as err:
        print(f"Error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(_standalone())
