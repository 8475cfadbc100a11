"""``pthkit predict MODEL INPUTS...``: load (or identify) the model, resolve its preprocessing, predict, print.

Thin over :func:`pthkit.tasks.predict.predict`; torch and the API are imported inside the command body so
``pthkit --help`` stays instant. Machine-readable output (``--json`` lines, ``--csv``) goes to stdout alone; every
note, warning, the explanation and the summary go to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from pthkit.cli._explain import explain_text
from pthkit.cli._options import (
    ArchKwargsOpt,
    ArchOpt,
    BackendOpt,
    DeviceOpt,
    SizeOpt,
    TopAliasOpt,
    TopKOpt,
    TrustOpt,
    parse_size,
)
from pthkit.cli._options import top_k as resolve_top_k
from pthkit.cli.ray_cmds import EngineOpt, NumActorsOpt, OutOpt, RayAddressOpt
from pthkit.cli.tabular_cmds import (
    AllowNanOpt,
    ColumnsOpt,
    InputShapeOpt,
    OutputNamesOpt,
    SaveOutputsOpt,
    TaskOpt,
)
from pthkit.errors import PreprocessError

if TYPE_CHECKING:
    from pthkit.model import Model
    from pthkit.tasks.predict import Prediction

__all__ = ["register"]

# Outputs kept for the sanity check (check_predictions_sane).
_SANITY_ROWS = 256
# Show a progress bar from this many inputs on (when stderr is a terminal).
_PROGRESS_FROM = 64


def _overrides(**flags: Any) -> dict[str, Any]:
    """The preprocessing flags the user gave; ``resolve_preprocess`` parses and validates them (one place)."""
    return {key: value for key, value in flags.items() if value is not None}


def _open(model_path: str, arch: str | None, arch_kwargs: list[str] | None, device: str, trust: bool,
          overrides: dict[str, Any], labels: Path | None, input_shape: str | None = None, backend: str = "torch") -> Model:
    """The typed handle for MODEL (weights file, bundle, HF folder, export): :func:`pthkit.open`, nothing else."""
    from pthkit.api import open as open_model
    from pthkit.architectures.user_code import parse_arch_kwargs

    return open_model(model_path, arch=arch, arch_kwargs=parse_arch_kwargs(arch_kwargs) or None, device=device,
                      trust=trust, overrides=overrides or None, labels=str(labels) if labels is not None else None,
                      input_shape=input_shape, backend=backend)


def _sanity(predictions: list[Prediction], mode: str, label_names: Any, warn: Any) -> None:
    """Warn when predictions look uniform or constant (wrong weights or wrong preprocessing): ``check_predictions_sane``."""
    import numpy as np

    from pthkit.preprocess import check_predictions_sane

    rows = [p.raw_logits for p in predictions if p.ok and p.raw_logits is not None]
    if len(rows) < 3:
        return
    for message in check_predictions_sane(np.stack(rows), mode=mode, label_names=label_names):  # type: ignore[arg-type]
        warn(message)


def _escape(text: object, *, newlines: bool = False) -> str:
    """File-derived text (names, labels, errors) for a markup string: controls escaped, markup shown as written."""
    from pthkit.cli._output import literal

    return literal(text, newlines=newlines)


def _refuse_empty_folders(inputs: list[str]) -> None:
    """A folder input with no files in it is an error now, before the model is loaded (it used to load first)."""
    from pthkit.errors import InputNotFoundError

    for entry in inputs:
        folder = Path(entry)
        if entry != "-" and folder.is_dir() and not any(p.is_file() and not p.name.startswith(".")
                                                         for p in folder.rglob("*")):
            raise InputNotFoundError.build("inputs", received=f"{folder} (an empty folder)",
                                           expected="a folder with images (or data files) in it",
                                           hint="Check the path; nothing was loaded.")


def predict_command(
    model: Annotated[str, typer.Argument(help="Weights file (.pth, .pt, .bin, .safetensors …) or a pthkit bundle folder.")],
    inputs: Annotated[list[str], typer.Argument(
        help="Images: files, folders (recursive), globs, @list.txt or a .txt of paths, '-' for paths on stdin.")],
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = None,
    top_k_opt: TopKOpt = None,
    top_alias: TopAliasOpt = None,
    multi_label: Annotated[bool, typer.Option("--multi-label", help="Sigmoid per class; show every class over --threshold.")] = False,
    threshold: Annotated[float, typer.Option("--threshold", min=0.0, max=1.0, help="Probability threshold for --multi-label.")] = 0.5,
    logits: Annotated[bool, typer.Option("--logits", help="Raw logits instead of probabilities (full vector in --json/--csv).")] = False,
    features: Annotated[Optional[Path], typer.Option("--features", help="Also save pooled embeddings to FILE.npy or FILE.safetensors.")] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Class names: one per line, or a JSON list.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass.")] = 32,
    workers: Annotated[Optional[int], typer.Option("--workers", min=0, help="Decoding processes (default: 0 for a few images; on CPU a quarter of the cores, at least 1, and the model gets the rest).")] = None,
    device: DeviceOpt = "auto",
    backend: BackendOpt = "torch",
    amp: Annotated[Optional[str], typer.Option("--amp", help="Autocast precision: bf16 or fp16 (CPU or GPU).")] = None,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the model (slow start, faster long runs).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON Lines: one JSON object per image (parse line by line).")] = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="Print CSV (one row per image) instead of a table.")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="Print how the model was loaded and the preprocessing, with where each value came from.")] = False,
    size: SizeOpt = None,
    crop_pct: Annotated[Optional[float], typer.Option("--crop-pct", help="Center-crop fraction (0.875: resize to 256, crop 224).")] = None,
    mean: Annotated[Optional[str], typer.Option("--mean", help="Normalization mean R,G,B (in the --scale units).")] = None,
    std: Annotated[Optional[str], typer.Option("--std", help="Normalization std R,G,B.")] = None,
    interpolation: Annotated[Optional[str], typer.Option("--interpolation", help="Resize interpolation: bilinear, bicubic, nearest, lanczos …")] = None,
    channel_order: Annotated[Optional[str], typer.Option("--channel-order", help="rgb or bgr.")] = None,
    scale: Annotated[Optional[float], typer.Option("--scale", help="1: inputs in [0,1] before normalization; 255: raw 0-255.")] = None,
    allow_failures: Annotated[bool, typer.Option("--allow-failures", help="Exit 0 even when some images could not be read.")] = False,
    trust: TrustOpt = False,
    input_shape: InputShapeOpt = None,
    columns: ColumnsOpt = None,
    task: TaskOpt = None,
    output_names: OutputNamesOpt = None,
    save_outputs: SaveOutputsOpt = None,
    allow_nan: AllowNanOpt = False,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    num_actors: NumActorsOpt = None,
    out_path: OutOpt = None,
) -> None:
    """Classify images with a weights file or bundle: top-k labels, multi-label, logits or features.

    Non-image models (a first Linear/Conv1d/Embedding/RNN layer) take arrays and tables instead: .npy, .npz,
    .safetensors, .pt, .csv/.tsv, .parquet, .jsonl or '-' (CSV on stdin); see --columns, --task, --save-outputs."""
    from pthkit.cli._output import console, err_console, warn

    if json_out and csv_out:
        raise PreprocessError.build("output", received="--json and --csv", expected="one of them")
    if multi_label and logits:
        raise PreprocessError.build("output", received="--multi-label and --logits", expected="one of them")
    if amp is not None and amp not in ("bf16", "fp16"):
        raise PreprocessError.build("--amp", received=repr(amp), expected="bf16 or fp16")
    if features is not None and features.suffix.lower() not in (".npy", ".safetensors"):
        raise PreprocessError.build("--features", received=repr(str(features)),
                                    expected="a file name ending in .npy or .safetensors", hint="e.g. --features emb.npy")
    machine = json_out or csv_out
    top_k = resolve_top_k(top_k_opt, top_alias, 5)
    overrides = _overrides(size=parse_size(size), crop_pct=crop_pct, mean=mean, std=std, interpolation=interpolation,
                           channel_order=channel_order, scale=scale)

    _refuse_empty_folders(inputs)  # before the model is loaded (that can take a minute): nothing to predict on

    from pthkit.cli.ray_cmds import maybe_predict_ray

    if maybe_predict_ray(  # --engine ray: the same rows from Ray Data actors (False for --engine local)
            engine, address=ray_address, num_actors=num_actors, out=out_path, model=model, inputs=inputs,
            open_kwargs={"arch": arch, "arch_kwargs": arch_kwargs, "device": device, "trust": trust, "overrides": overrides,
                         "labels": labels, "input_shape": input_shape, "backend": backend},
            top_k=top_k, multi_label=multi_label, logits=logits, threshold=threshold, batch_size=batch_size,
            workers=workers, amp=amp, compile_model=compile_model, features=features, save_outputs=save_outputs,
            json_out=json_out, csv_out=csv_out, explain=explain, allow_failures=allow_failures, columns=columns,
            task=task, output_names=output_names, allow_nan=allow_nan):
        return

    from pthkit.cli.tabular_cmds import maybe_predict_tables

    done, opened = maybe_predict_tables(
        model, inputs, open_model=lambda shape: _open(model, arch, arch_kwargs, device, trust, overrides, labels, shape, backend),
        input_shape=input_shape, columns=columns, task=task, output_names=output_names, save_outputs=save_outputs,
        allow_nan=allow_nan, top_k=top_k, batch_size=batch_size, json_out=json_out, csv_out=csv_out, explain=explain,
        logits=logits, multi_label=multi_label, threshold=threshold)
    if done:
        return

    from pthkit.images import expand_inputs

    paths = expand_inputs(inputs)

    import torch  # noqa: F401 - imported here, never at module import (pthkit --help stays instant)

    from pthkit.tasks.predict import save_features

    handle = opened if opened is not None else _open(model, arch, arch_kwargs, device, trust, overrides, labels, backend=backend)
    preprocess = handle.preprocess
    err_console.print(f"[bold]model:[/bold] {_escape(handle.summary_line())}")
    for message in handle.warnings:
        warn(message)
    if explain:
        out = err_console if machine else console
        out.print(_escape(explain_text(handle), newlines=True))

    mode = "sigmoid" if multi_label else ("logits" if logits else "softmax")
    progress = len(paths) >= _PROGRESS_FROM and err_console.is_terminal
    from pthkit.engine.threads import cli_thread_policy

    cli_thread_policy()  # the CLI's thread policy, once (the library never changes torch's threads)
    results = handle.predict(
        paths, batch_size=batch_size, workers=workers, top_k=top_k, mode=mode,  # type: ignore[arg-type]
        threshold=threshold, features=features is not None, amp=amp, compile=compile_model,  # type: ignore[arg-type]
        progress=progress,
    )
    from pthkit.cli._rows import ImageRowPrinter

    printer = ImageRowPrinter(mode=mode, top_k=top_k, json_out=json_out, csv_out=csv_out)
    collected: list[Prediction] = []
    for p in results:
        if len(collected) >= _SANITY_ROWS:
            p.raw_logits = None  # the sanity check looks at the first rows; do not hold every output vector
        collected.append(p)
        printer.add(p)
    printer.close()

    failed = [p for p in collected if not p.ok]
    if features is not None and len(failed) < len(collected):
        written = save_features(collected, features)
        err_console.print(f"features: {len(collected) - len(failed)} rows → {_escape(', '.join(str(w) for w in written))}")
    if len(paths) >= 3:
        _sanity(collected, mode, getattr(preprocess, "label_names", None), warn)
    summary = f"{len(collected)} images, {len(failed)} failed"
    err_console.print(summary if not failed else f"[yellow]{summary}[/yellow]")
    if machine:
        for p in failed:
            err_console.print(f"[red]failed:[/red] {_escape(p.path)}: {_escape(p.error or '')}")
    if failed and not allow_failures:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add ``pthkit predict`` to the app."""
    app.command("predict", no_args_is_help=True)(predict_command)
