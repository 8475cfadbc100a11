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

from pthkit.cli._options import (
    ArchKwargsOpt,
    ArchOpt,
    ChannelOrderOpt,
    CropPctOpt,
    DeviceOpt,
    InterpolationOpt,
    JsonOpt,
    MeanOpt,
    ScaleOpt,
    SelectOpt,
    SizeOpt,
    StdOpt,
    TrustOpt,
    parse_size,
    preprocess_overrides,
)
from pthkit.cli.tabular_cmds import AllowNanOpt, ColumnsOpt, LossOpt, TargetOpt

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
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs [default: 10]; with --resume, extends the run.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", help="Global batch size (all processes) [default: 32].")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate of the new head [default: 1e-3].")] = None,
    backbone_lr_scale: Annotated[Optional[float], typer.Option(help="Backbone learning rate = lr × this [default: 0.1].")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="AdamW weight decay, not on biases and norms [default: 0.05].")] = None,
    warmup_epochs: Annotated[Optional[float], typer.Option(help="Linear warm-up length, in epochs [default: 1].")] = None,
    freeze_epochs: Annotated[Optional[int], typer.Option(help="Train only the head for this many epochs first [default: 0].")] = None,
    val_split: Annotated[Optional[float], typer.Option(help="Validation fraction when DATA has no val/ folder [default: 0.2].")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed: same seed, same data order, same result [default: 0].")] = None,
    size: SizeOpt = None,
    amp: Annotated[Optional[str], typer.Option(help="Mixed precision: bf16 or fp16.")] = None,
    accum_steps: Annotated[Optional[int], typer.Option(help="Gradient accumulation steps [default: 1].")] = None,
    class_weights: Annotated[Optional[str], typer.Option(help="none or balanced (weight classes by 1/frequency) [default: none].")] = None,
    label_smoothing: Annotated[Optional[float], typer.Option(help="Label smoothing of the loss [default: 0.1].")] = None,
    hflip: Annotated[Optional[float], typer.Option(help="Horizontal flip probability, 0 for digits/text [default: 0.5].")] = None,
    crop_scale_min: Annotated[Optional[float], typer.Option(help="Smallest random-resized-crop area fraction [default: 0.08].")] = None,
    color_jitter: Annotated[Optional[float], typer.Option(help="Colour jitter strength [default: 0.4].")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Stop after this many epochs without improvement.")] = None,
    monitor: Annotated[Optional[str], typer.Option(help="Validation metric choosing the best model: val_acc or val_loss [default: val_acc].")] = None,
    save_every_steps: Annotated[Optional[int], typer.Option(help="Also checkpoint every N optimizer steps.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue --out's run from its last checkpoint (only --epochs, --patience and --save-every-steps may change).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier run in --out.")] = False,
    keep_checkpoint: Annotated[bool, typer.Option("--keep-checkpoint", help="Keep the training checkpoint after the bundle is written (to extend the run later with --resume).")] = False,
    workers: Annotated[Optional[int], typer.Option(help="Data loader worker processes.")] = None,
    device: DeviceOpt = "auto",
    trust: TrustOpt = False,
    json_out: JsonOpt = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    target: TargetOpt = None,
    loss: LossOpt = None,
    columns: ColumnsOpt = None,
    allow_nan: AllowNanOpt = False,
) -> None:
    """Fine-tune WEIGHTS on DATA: new head for DATA's classes, best model saved as a bundle in --out.

    Tables (data.csv --target COL, .parquet, .npz …) fine-tune non-image models: classification or regression
    chosen from the target column (--loss to override)."""
    from pthkit.cli.tabular_cmds import finetune_tables, wants_table_finetune

    if wants_table_finetune(data, target, loss, resume, out):
        finetune_tables(weights, data, out, target=target, loss=loss, columns=columns, allow_nan=allow_nan,
                        json_out=json_out, arch=arch, arch_kwargs=_arch_kwargs(arch_kwargs), epochs=epochs,
                        batch_size=batch_size, lr=lr, weight_decay=weight_decay, val_split=val_split, seed=seed,
                        patience=patience, resume=resume, overwrite=overwrite, device=device, trust=trust,
                        progress=not no_progress and not json_out)
        return
    from pthkit.tasks.finetune import finetune

    result = finetune(
        weights, data, out, arch=arch, arch_kwargs=_arch_kwargs(arch_kwargs), epochs=epochs, batch_size=batch_size,
        lr=lr,
        backbone_lr_scale=backbone_lr_scale, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
        freeze_epochs=freeze_epochs, val_split=val_split, seed=seed, size=parse_size(size), amp=amp,  # type: ignore[arg-type]
        accum_steps=accum_steps, class_weights=class_weights, label_smoothing=label_smoothing,  # type: ignore[arg-type]
        hflip=hflip, crop_scale_min=crop_scale_min, color_jitter=color_jitter, patience=patience,
        monitor=monitor, save_every_steps=save_every_steps,  # type: ignore[arg-type]
        resume=resume, overwrite=overwrite, keep_checkpoint=keep_checkpoint,
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
    model: Annotated[str, typer.Argument(help="A bundle folder or a weights file (anything pthkit predict takes).")],
    data: DataArg,
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Class names of the model's outputs.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write confusion matrix PNG/JSON here.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass.")] = 64,
    workers: Annotated[Optional[int], typer.Option("--workers", min=0, help="Data loader worker processes.")] = None,
    amp: Annotated[Optional[str], typer.Option(help="bf16 or fp16 autocast.")] = None,
    device: DeviceOpt = "auto",
    size: SizeOpt = None,
    crop_pct: CropPctOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    interpolation: InterpolationOpt = None,
    channel_order: ChannelOrderOpt = None,
    scale: ScaleOpt = None,
    select: SelectOpt = "auto",
    trust: TrustOpt = False,
    json_out: JsonOpt = False,
    target: TargetOpt = None,
    columns: ColumnsOpt = None,
    allow_nan: AllowNanOpt = False,
) -> None:
    """Evaluate MODEL on labelled DATA: top-1/top-5, per-class precision/recall/F1, confusion matrix, ECE.

    Non-image models take a table with a --target column: MAE, RMSE and R² for regression."""
    from pthkit.api import open as open_model
    from pthkit.tasks.evaluate import evaluate

    overrides = preprocess_overrides(size=size, crop_pct=crop_pct, mean=mean, std=std, interpolation=interpolation,
                                     channel_order=channel_order, scale=scale)
    handle = open_model(model, arch=arch, arch_kwargs=_arch_kwargs(arch_kwargs), trust=trust, device=device,
                        select=select, overrides=overrides, labels=str(labels) if labels is not None else None,
                        check=False)
    from pthkit.cli.tabular_cmds import maybe_evaluate_tables

    if maybe_evaluate_tables(handle, data, target=target, columns=columns, allow_nan=allow_nan,
                             batch_size=batch_size, json_out=json_out):
        return
    if handle.module is None:
        from pthkit.errors import LoadError

        raise LoadError.build("evaluate", received=f"{handle.architecture} (no PyTorch module)",
                              expected="a weights file or a bundle", hint="Evaluate the model it was exported from.")
    from pthkit.engine.threads import cli_thread_policy

    cli_thread_policy()  # the CLI's thread policy, once (the library never changes torch's threads)
    report = evaluate(handle.module, data, arch=handle.architecture, preprocess=handle.preprocess,
                      label_names=handle.labels, batch_size=batch_size, workers=workers, device=device, amp=amp,
                      trust=trust, out_dir=out)
    from pthkit.cli._output import console, literal, print_json

    if json_out:
        print_json(report.to_dict())
        return
    from rich.table import Table

    console.print(str(report), markup=False)
    table = Table("class", "precision", "recall", "F1", "support")
    for c in report.per_class:
        if c.support or c.precision:
            table.add_row(literal(c.name), f"{c.precision:.3f}", f"{c.recall:.3f}", f"{c.f1:.3f}", str(c.support))
    console.print(table)


def bundle_command(
    weights: WeightsArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle folder to write.")],
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Class names, one per line (or JSON).")] = None,
    num_classes: Annotated[Optional[int], typer.Option(help="New head size (replaced when it differs from the file's).")] = None,
    size: SizeOpt = None,
    trust: TrustOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Turn a loadable weights file into a bundle: model.safetensors + config.json (timm's hub layout).

    The file must fit the architecture (strict load); --labels / --num-classes with another class count replace
    only the classifier head.
    """
    from pthkit.bundle import bundle_weights, read_labels

    parsed = parse_size(size)
    overrides = {"size": parsed} if parsed is not None else None
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
    # A replaced head holds random weights until fine-tuned: say so rather than let the bundle pass for the
    # pretrained classifier.
    if section.get("head_change"):
        console.print(f"Note: classifier head {section['head_change']}: its outputs are random until fine-tuned.",
                      markup=False)


def register(app: typer.Typer) -> None:
    """Add ``finetune``, ``evaluate`` and ``bundle`` to the app."""
    app.command("finetune", no_args_is_help=True)(finetune_command)
    app.command("evaluate", no_args_is_help=True)(evaluate_command)
    app.command("bundle", no_args_is_help=True)(bundle_command)


def _standalone() -> int:
    """``python -m pthkit.cli.train_cmds finetune …`` (what torchrun runs): the same as ``pthkit finetune …``, with the
    same error lines and exit codes."""
    import sys

    from pthkit.cli.main import main

    return main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(_standalone())
