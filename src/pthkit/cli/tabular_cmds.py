"""The non-image side of ``pthkit predict``, ``finetune``, ``evaluate``: arrays and tables in, rows out.

``predict_cmds`` / ``train_cmds`` call these helpers when the model (or the data) is not about images. Machine
output (``--json`` lines, ``--csv``) goes to stdout as it streams (a million rows never sit in memory); notes go to
stderr. torch and the API are imported inside the functions (``pthkit --help`` stays instant).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from pthkit.cli._safe_text import safe_text
from pthkit.errors import PreprocessError

if TYPE_CHECKING:
    from pthkit.model import Model

__all__ = [
    "AllowNanOpt",
    "ColumnsOpt",
    "InputShapeOpt",
    "LossOpt",
    "OutputNamesOpt",
    "SaveOutputsOpt",
    "TargetOpt",
    "TaskOpt",
    "is_table_data",
    "maybe_predict_tables",
    "split_list",
]

InputShapeOpt = Annotated[Optional[str], typer.Option(
    "--input-shape", help="What one example looks like, overriding the inferred input spec: 10 or 3,32,32 (* = any).")]
ColumnsOpt = Annotated[Optional[str], typer.Option(
    "--columns", help="Table columns (or .npz/.safetensors array names) to feed the model, in order: a,b,c.")]
TaskOpt = Annotated[Optional[str], typer.Option(
    "--task", help="What outputs mean for non-image models: raw (values, default), regress, classify (softmax top-k).")]
OutputNamesOpt = Annotated[Optional[str], typer.Option(
    "--output-names", help="Names of the output values (regression): price,volume.")]
SaveOutputsOpt = Annotated[Optional[Path], typer.Option(
    "--save-outputs", help="Write every output to FILE.npy (one output) or FILE.safetensors (all, by name).")]
AllowNanOpt = Annotated[bool, typer.Option(
    "--allow-nan", help="Feed NaN/empty cells to the model instead of refusing the table.")]
TargetOpt = Annotated[Optional[str], typer.Option(
    "--target", help="Table data: the column holding the label (class names → classification, numbers → regression).")]
LossOpt = Annotated[Optional[str], typer.Option(
    "--loss", help="Table data: cross-entropy or mse (default: chosen from the target column).")]


def split_list(text: str | None) -> list[str] | None:
    """``"a,b, c"`` → ``["a", "b", "c"]``; ``None`` stays ``None``."""
    if text is None:
        return None
    items = [p.strip() for p in text.split(",") if p.strip()]
    if not items:
        raise PreprocessError.build("list", received=repr(text), expected="comma-separated names, e.g. a,b,c")
    return items


def is_table_data(data: str | Sequence[str]) -> bool:
    """True when every input is an array/table file (by extension) or ``-``."""
    from pthkit.data.tables import is_table_input

    items = [data] if isinstance(data, str) else list(data)
    return bool(items) and all(is_table_input(i) for i in items)


def maybe_predict_tables(
    model: str,
    inputs: list[str],
    *,
    open_model: Any,
    input_shape: str | None,
    columns: str | None,
    task: str | None,
    output_names: str | None,
    save_outputs: Path | None,
    allow_nan: bool,
    top_k: int,
    batch_size: int | None,
    json_out: bool,
    csv_out: bool,
    explain: bool,
    logits: bool = False,
    multi_label: bool = False,
    threshold: float = 0.5,
) -> tuple[bool, Model | None]:
    """Run ``pthkit predict`` for a non-image model when the inputs are tables/arrays (or ``-``).

    ``open_model(input_shape)`` opens MODEL as the image path would (same flags). Returns ``(True, handle)`` when
    the prediction was done here, ``(False, handle or None)`` when the image path should go on (with the handle if
    one was opened). Refuses a table given to an image model, and table-only flags with image inputs.
    """
    tabular_flags = [name for name, value in (("--columns", columns), ("--output-names", output_names),
                                              ("--save-outputs", save_outputs), ("--allow-nan", allow_nan or None),
                                              ("--task", task), ("--input-shape", input_shape)) if value]
    tables = is_table_data(inputs)
    if not tables and not tabular_flags:
        return False, None
    handle: Model = open_model(input_shape)
    if handle.is_image_model:
        from pthkit.data.tables import is_table_input

        files = [i for i in inputs if i != "-" and is_table_input(i)]
        if files:
            raise PreprocessError.build(
                files[0], received="a table/array file", expected=f"images: {handle.architecture} is an image model "
                f"({handle.input_spec.describe()})", hint="Give image files or folders, or --input-shape for a "
                "model that takes tensors.")
        shown = [f for f in tabular_flags if f != "--task"]
        if shown:
            raise PreprocessError.build(shown[0], received=f"{shown[0]} with an image model",
                                        expected="table inputs to a non-image model")
        return False, handle
    _predict_tables(handle, inputs, columns=split_list(columns), task=task, output_names=split_list(output_names),
                    save_outputs=save_outputs, allow_nan=allow_nan, top_k=top_k, batch_size=batch_size or 256,
                    json_out=json_out, csv_out=csv_out, explain=explain,
                    mode="logits" if logits else ("sigmoid" if multi_label else None), threshold=threshold)
    return True, handle


def _predict_tables(handle: Model, inputs: list[str], *, columns: list[str] | None, task: str | None,
                    output_names: list[str] | None, save_outputs: Path | None, allow_nan: bool, top_k: int,
                    batch_size: int, json_out: bool, csv_out: bool, explain: bool, mode: str | None,
                    threshold: float) -> None:
    from pthkit.cli._output import console, err_console, warn
    from pthkit.tasks.outputs import (
        OutputCollector,
        predict_tensors,
    )

    if json_out and csv_out:
        raise PreprocessError.build("output", received="--json and --csv", expected="one of them")
    machine = json_out or csv_out
    err_console.print(f"model: {safe_text(handle.summary_line(), newlines=False)}", markup=False, soft_wrap=True)
    err_console.print(f"input: {handle.input_spec.describe()}", markup=False, soft_wrap=True)
    for message in handle.warnings:
        warn(message)
    if explain:
        (err_console if machine else console).print(handle.describe(), markup=False)
    items: Any = inputs if len(inputs) > 1 else inputs[0]
    progress = err_console.is_terminal
    from pthkit.engine.threads import cli_thread_policy

    # The CLI's thread policy, once (the library never changes torch's threads). A table is parsed in a thread of its
    # own (and --csv/--json formatted in another), so torch gets one free core fewer (measured on 2 free cores, the
    # README's MLP: --csv 1.4x slower with torch's 2 threads spinning against them).
    cli_thread_policy(max(1, cli_thread_policy(apply=False).threads - 1))
    chosen_task = task or handle.task
    if chosen_task != "classify":  # raw / regress: blocks of rows, never an object per row
        from pthkit.cli._table_output import predict_table_blocks

        predict_table_blocks(handle, items, fmt="json" if json_out else "csv" if csv_out else
                             None if save_outputs is not None else "text", save_outputs=save_outputs,
                             batch_size=batch_size, columns=columns, allow_nan=allow_nan,
                             output_names=output_names or handle.output_names,
                             progress=progress and (machine or save_outputs is not None), stream=sys.stdout)
        return
    rows = predict_tensors(handle, items, batch_size=batch_size, top_k=top_k, task=task,
                           labels=handle.labels if chosen_task == "classify" else None, columns=columns,
                           allow_nan=allow_nan, output_names=output_names or handle.output_names,
                           progress=progress and machine, mode=mode, threshold=threshold)
    collector = OutputCollector(save_outputs) if save_outputs is not None else None
    from pthkit.cli._rows import TableRowPrinter

    printer = TableRowPrinter(top_k=top_k, json_out=json_out, csv_out=csv_out)
    total = failed = 0
    for p in rows:
        total += 1
        failed += not p.ok
        if collector is not None:
            collector.add(p)
        printer.add(p)
    printer.close()
    if collector is not None and collector.count:
        err_console.print(f"outputs: {collector.count} rows → {collector.save()}", markup=False)
    err_console.print(f"{total} rows, {failed} failed", markup=False)
    if failed:
        raise typer.Exit(code=1)


def wants_table_finetune(data: str, target: str | None, loss: str | None, resume: bool, out: Path) -> bool:
    """``pthkit finetune`` goes to tables with ``--target``/``--loss``, an array/table file other than a CSV (a CSV
    without ``--target`` is the image path's ``path,label`` list), or ``--resume`` of a table run."""
    from pthkit.data.tables import ARRAY_SUFFIXES

    if target is not None or loss is not None:
        return True
    if resume and (out / "checkpoints" / "run.json").is_file():
        return True
    return Path(data).suffix.lower() in (*ARRAY_SUFFIXES, ".parquet", ".pq", ".tsv", ".jsonl")


def finetune_tables(weights: str, data: str, out: Path, *, target: str | None, loss: str | None,
                    columns: str | None, allow_nan: bool, json_out: bool, **options: Any) -> None:
    """``pthkit finetune WEIGHTS data.csv --target COL``: :func:`pthkit.tasks.tabular.finetune_table`, printed."""
    from pthkit.cli._output import console, print_json
    from pthkit.engine.threads import cli_thread_policy
    from pthkit.tasks.tabular import finetune_table

    cli_thread_policy()  # the CLI's thread policy, once (the library never changes torch's threads)

    resume = bool(options.get("resume"))
    if target is None and not resume:
        raise PreprocessError.build("--target", received="no target column", expected="the column to predict",
                                    hint="e.g. --target species")
    result = finetune_table(options.pop("weights", weights), data, out, target=target or "", loss=loss or "auto",
                            columns=split_list(columns), allow_nan=allow_nan, **options)
    if json_out:
        print_json(result.to_dict())
    else:
        console.print(str(result), markup=False)


def maybe_evaluate_tables(handle: Model, data: str, *, target: str | None, columns: str | None, allow_nan: bool,
                          batch_size: int, json_out: bool) -> bool:
    """``pthkit evaluate`` for a non-image model on a table (MAE/RMSE/R² or classification metrics). Returns False
    for image models (the image path goes on); refuses ``--target`` with an image model."""
    if handle.is_image_model:
        if target is not None or columns is not None:
            raise PreprocessError.build("--target" if target is not None else "--columns",
                                        received=f"a table option with an image model ({handle.architecture})",
                                        expected="an image folder or a CSV of path,label")
        return False
    from pthkit.cli._output import console, literal, print_json
    from pthkit.engine.threads import cli_thread_policy
    from pthkit.tasks.tabular import evaluate_table

    cli_thread_policy()  # the CLI's thread policy, once (the library never changes torch's threads)

    report = evaluate_table(handle, data, target=target, columns=split_list(columns), allow_nan=allow_nan,
                            batch_size=max(batch_size, 256), progress=False)
    if json_out:
        print_json(report.to_dict())
        return True
    lines = str(report).splitlines()
    if lines and per_class_report(report):
        lines[0] = lines[0].replace(" images, ", " rows, ")  # the classification report counts rows here
    console.print("\n".join(lines), markup=False)
    per_class = getattr(report, "per_class", None)
    if per_class:
        from rich.table import Table

        table = Table("class", "precision", "recall", "F1", "support")
        for c in per_class:
            table.add_row(literal(c.name), f"{c.precision:.3f}", f"{c.recall:.3f}", f"{c.f1:.3f}", str(c.support))
        console.print(table)
    return True


def per_class_report(report: Any) -> bool:
    """True for a classification report (it has per-class metrics)."""
    return getattr(report, "per_class", None) is not None
