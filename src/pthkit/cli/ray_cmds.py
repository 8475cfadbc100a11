"""``pthkit predict … --engine ray``: the same prediction on a Ray cluster, as a thin layer over
:mod:`pthkit.integrations.ray`.

Everything here is an API call (``read_inputs`` / ``read_tables`` → ``predict_dataset`` → ``iter_predictions`` or
``write_rows``) plus the printing local ``predict`` does: the rows come back to the driver as the very
``Prediction`` objects the workers computed, and are printed by the same code (``--json`` lines, ``--csv``, the
table), so ``--engine ray`` prints what ``--engine local`` prints. ``--out`` streams them to a file instead.

Without ``--ray-address`` a local cluster sized to this machine is started (and stopped at the end); with one
(``auto``, ``ray://head:10001``) the job runs on that cluster, and MODEL, ``--labels`` and the inputs must be
readable by every worker (a shared file system, or ``s3://`` … inputs).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, cast

import typer

from pthkit.errors import PreprocessError, PthkitError

if TYPE_CHECKING:
    import ray.data

    from pthkit.cli._rows import ImageRowPrinter, TableRowPrinter
    from pthkit.engine.progress import ProgressBar
    from pthkit.model import Model
    from pthkit.tasks.outputs import TensorPrediction
    from pthkit.tasks.predict import Prediction

__all__ = ["EngineOpt", "NumActorsOpt", "OutOpt", "RayAddressOpt", "maybe_predict_ray"]

ENGINES = ("local", "ray")
OUT_SUFFIXES = (".parquet", ".jsonl", ".csv")

EngineOpt = Annotated[str, typer.Option(
    "--engine", help="local (this process, default) or ray (Ray Data actors: a local cluster, or --ray-address).")]
RayAddressOpt = Annotated[Optional[str], typer.Option(
    "--ray-address", help="--engine ray: the cluster to join (auto, ray://head:10001). Default: start a local one.")]
NumActorsOpt = Annotated[Optional[int], typer.Option(
    "--num-actors", help="--engine ray: model replicas (default: one per CPU of the cluster, or per GPU with --device cuda).")]
OutOpt = Annotated[Optional[Path], typer.Option(
    "--out", help="--engine ray: write the rows to FILE.parquet, FILE.jsonl (predict --json lines) or FILE.csv.")]


def maybe_predict_ray(
    engine: str,
    *,
    address: str | None,
    num_actors: int | None,
    out: Path | None,
    model: str,
    inputs: list[str],
    open_kwargs: dict[str, Any],
    top_k: int,
    multi_label: bool,
    logits: bool,
    threshold: float,
    batch_size: int,
    workers: int | None,
    amp: str | None,
    compile_model: bool,
    features: Path | None,
    save_outputs: Path | None,
    json_out: bool,
    csv_out: bool,
    explain: bool,
    allow_failures: bool,
    columns: str | None,
    task: str | None,
    output_names: str | None,
    allow_nan: bool,
) -> bool:
    """Run ``pthkit predict`` on Ray when ``--engine ray``; return ``False`` (nothing done) for ``--engine local``.

    ``open_kwargs``: ``pthkit.open``'s arguments as the flags gave them (``arch``, ``arch_kwargs`` as ``key=value``
    strings, ``device``, ``trust``, ``overrides``, ``labels``, ``input_shape``, ``backend``). Every flag is checked
    before a model is opened or a cluster started.
    """
    _check_flags(engine, address=address, num_actors=num_actors, out=out, inputs=inputs, features=features,
                 save_outputs=save_outputs, json_out=json_out, csv_out=csv_out)
    if engine == "local":
        return False

    from pthkit.integrations import require

    require("ray", "ray")
    from pthkit.cli._output import console, err_console, warn
    from pthkit.cli._safe_text import safe_text
    from pthkit.cli.predict_cmds import _escape
    from pthkit.cli.tabular_cmds import split_list

    worker_open = _worker_open_options(open_kwargs)
    handle = _open_on_driver(model, worker_open)
    err_console.print(f"model: {safe_text(handle.summary_line(), newlines=False)}", markup=False, soft_wrap=True)
    for message in handle.warnings:
        warn(message)
    if explain:
        (err_console if (json_out or csv_out or out is not None) else console).print(handle.describe(), markup=False)

    image = handle.is_image_model
    names = split_list(output_names)
    _check_inputs_fit(handle, inputs, columns=columns, output_names=names, allow_nan=allow_nan,
                      input_shape=open_kwargs.get("input_shape"))
    if image:
        mode = "sigmoid" if multi_label else ("logits" if logits else "softmax")
        options: dict[str, Any] = {"top_k": top_k, "mode": mode, "threshold": threshold, "amp": amp,
                                   "compile": compile_model}
        if workers is not None:
            options["workers"] = workers
    else:
        mode = "logits" if logits else ("sigmoid" if multi_label else "")
        options = {"top_k": top_k, "threshold": threshold, "task": task, "allow_nan": allow_nan,
                   **({"mode": mode} if mode else {}), **({"output_names": names} if names else {})}

    from pthkit.integrations.ray import init_local

    started = _start(init_local, address)
    try:
        ds, expected = _predict(handle, model, inputs, worker_open, columns=split_list(columns),
                                num_actors=num_actors, batch_size=batch_size, options=options)
        shown_names = names or handle.output_names
        with _progress(expected, unit="images" if image else "rows") as bar:
            if out is not None:
                failed, n_failed, total = _write(ds, out, shown_names, on_rows=bar.advance)
            else:
                failed, total = _print(ds, shown_names, image=image, mode=mode, top_k=top_k, json_out=json_out,
                                       csv_out=csv_out, on_rows=bar.advance)
                n_failed = len(failed)
    except Exception as err:  # noqa: BLE001 - a job that failed on the cluster becomes one line, never a traceback
        raise _one_line(err) from None
    finally:
        if started:
            import ray

            ray.shutdown()
    unit = "images" if image else "rows"
    summary = f"{total} {unit}, {n_failed} failed" + (f" → {out}" if out is not None else "")
    err_console.print(_escape(summary) if not n_failed else f"[yellow]{_escape(summary)}[/yellow]")
    if json_out or csv_out or out is not None:  # as local predict: the failures on stderr, stdout stays parseable
        for p in failed:
            err_console.print(f"[red]failed:[/red] {_escape(p.path)}: {_escape(p.error or '')}")
        if n_failed > len(failed):
            err_console.print(_escape(f"… and {n_failed - len(failed)} more (rows with ok = false in {out})"))
    if n_failed and not allow_failures:
        raise typer.Exit(code=1)
    return True


# With --out, the failures listed on stderr (the file holds them all).
_FAILED_SHOWN = 20


# --- checks (before anything is loaded) ----------------------------------------------------------------------------------


def _check_flags(engine: str, *, address: str | None, num_actors: int | None, out: Path | None, inputs: list[str],
                 features: Path | None, save_outputs: Path | None, json_out: bool, csv_out: bool) -> None:
    if engine not in ENGINES:
        raise PreprocessError.build("--engine", received=repr(engine), expected=" or ".join(ENGINES))
    given = [flag for flag, value in (("--ray-address", address), ("--num-actors", num_actors), ("--out", out))
             if value is not None]
    if engine == "local":
        if given:
            raise PreprocessError.build(given[0], received=f"{given[0]} with --engine local",
                                        expected="--engine ray", hint=f"Add --engine ray, or drop {given[0]}.")
        return
    if address is not None and not address.strip():
        raise PreprocessError.build("--ray-address", received="an empty address",
                                    expected="auto, ray://head:10001 or head:6379")
    if num_actors is not None and num_actors < 1:
        raise PreprocessError.build("--num-actors", received=str(num_actors), expected="an integer >= 1",
                                    hint="Leave it out for one actor per CPU of the cluster.")
    if features is not None:
        raise PreprocessError.build("--features", received="--features with --engine ray",
                                    expected="--engine local", hint="Embeddings are saved by local predict only.")
    if save_outputs is not None:
        raise PreprocessError.build("--save-outputs", received="--save-outputs with --engine ray",
                                    expected="--out FILE.parquet (every output, by row)")
    if out is None:
        return
    if json_out or csv_out:
        flag = "--json" if json_out else "--csv"
        raise PreprocessError.build("--out", received=f"--out and {flag}", expected="one of them",
                                    hint="--out writes the rows to a file; --json/--csv print them.")
    if out.suffix.lower() not in OUT_SUFFIXES:
        raise PreprocessError.build("--out", received=repr(str(out)), expected="a file name ending in "
                                    + ", ".join(OUT_SUFFIXES), hint="e.g. --out results.parquet")
    if out.is_dir():
        raise PreprocessError.build("--out", received=f"{out} (a folder)", expected="a file name",
                                    hint="e.g. --out results.parquet")
    target = out.resolve()
    for entry in inputs:
        if "://" not in entry and entry != "-" and Path(entry).is_file() and Path(entry).resolve() == target:
            raise PreprocessError.build("--out", received=f"{out} (one of the inputs)",
                                        expected="a new file name", hint="The inputs are never overwritten.")


def _check_inputs_fit(handle: Model, inputs: list[str], *, columns: str | None, output_names: list[str] | None,
                      allow_nan: bool, input_shape: str | None) -> None:
    """The same refusals as local ``predict`` (``maybe_predict_tables``): tables to an image model, table flags with
    images, images to a table model."""
    from pthkit.cli.tabular_cmds import is_table_data
    from pthkit.data.tables import is_table_input
    from pthkit.integrations.ray import TABLE_SUFFIXES

    if handle.is_image_model:
        arrays = [i for i in inputs if i != "-" and is_table_input(i) and not _lists_paths(i)]
        if arrays:
            raise PreprocessError.build(
                arrays[0], received="a table/array file", expected=f"images: {handle.architecture} is an image "
                f"model ({handle.input_spec.describe()})", hint="Give image files or folders (or a .csv/.parquet of "
                "paths), or --input-shape for a model that takes tensors.")
        flags = [name for name, value in (("--columns", columns), ("--output-names", output_names),
                                          ("--allow-nan", allow_nan or None), ("--input-shape", input_shape))
                 if value]
        if flags:
            raise PreprocessError.build(flags[0], received=f"{flags[0]} with an image model",
                                        expected="table inputs to a non-image model")
        return
    if not is_table_data(inputs) or any(Path(i.split("://", 1)[-1]).suffix.lower() not in TABLE_SUFFIXES
                                        for i in inputs):
        raise PreprocessError.build(
            "inputs", received=f"{inputs[0]} for a non-image model ({handle.input_spec.describe()})",
            expected="tables: .csv (with a header) or .parquet files", hint="Other array files run with --engine local.")


def _lists_paths(entry: str) -> bool:
    """A ``.csv`` / ``.parquet`` input to an image model: a table of image paths (``path`` or ``uri`` column)."""
    return Path(entry).suffix.lower() in (".csv", ".parquet")


# --- the run ---------------------------------------------------------------------------------------------------------------


def _worker_open_options(open_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``pthkit.open``'s keyword arguments for the actors: local files named by absolute path (a worker's working
    folder is not the driver's on a real cluster)."""
    from pthkit.architectures.user_code import parse_arch_kwargs

    options = dict(open_kwargs)
    options["arch_kwargs"] = parse_arch_kwargs(options.get("arch_kwargs")) or None
    labels = options.get("labels")
    options["labels"] = str(Path(labels).resolve()) if labels is not None and Path(labels).exists() else (
        str(labels) if labels is not None else None)
    arch = options.get("arch")
    if isinstance(arch, str) and ":" in arch:
        file, _, name = arch.rpartition(":")
        if file.endswith(".py") and Path(file).is_file():
            options["arch"] = f"{Path(file).resolve()}:{name}"
    options["overrides"] = options.get("overrides") or None
    return {k: v for k, v in options.items() if v is not None}


def _open_on_driver(model: str, options: dict[str, Any]) -> Model:
    """Open MODEL here too, on the CPU: to say what was loaded (as local predict does), to pick images or tables, and
    to fail in one line before a cluster starts."""
    from pthkit.api import open as open_model

    return open_model(model, **{**options, "device": "cpu"})


def _start(init: Any, address: str | None) -> bool:
    """Start a local cluster or join ``address``; a connection failure is one typed line."""
    try:
        return bool(init(address))
    except PthkitError:
        raise
    except Exception as err:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError … here
        raise PthkitError.build("--ray-address" if address else "ray", received=f"{address or 'a local cluster'} ("
                                f"{type(err).__name__}: {_first_line(err)})",
                                expected="a running Ray cluster" if address else "a local Ray cluster to start",
                                hint="Check `ray status` on the head node." if address else
                                "Check that Ray starts here (`ray start --head`).") from err


def _progress(total: int, *, unit: str) -> ProgressBar:
    """The bar local ``predict`` shows (stderr, a terminal, from 64 inputs on), advanced as rows reach the driver."""
    from pthkit.cli._output import err_console
    from pthkit.cli.predict_cmds import _PROGRESS_FROM
    from pthkit.engine.progress import progress_bar

    return progress_bar(f"ray predict ({unit})", total, enabled=total >= _PROGRESS_FROM and err_console.is_terminal)


def _predict(handle: Model, model: str, inputs: list[str], worker_open: dict[str, Any], *,
             columns: list[str] | None, num_actors: int | None, batch_size: int,
             options: dict[str, Any]) -> tuple[ray.data.Dataset, int]:
    """The prediction dataset (not yet run) and its number of input rows."""
    from pthkit.cli._output import err_console
    from pthkit.integrations.ray import (
        check_table_columns,
        default_actors,
        predict_dataset,
        read_inputs,
        read_tables,
        table_columns,
    )

    device = str(worker_open.get("device", "auto"))
    gpus = 1 if device.startswith("cuda") else 0
    source = str(Path(model).resolve()) if Path(model).exists() else model
    if handle.is_image_model:
        ds = read_inputs(inputs)
        chosen = None
    else:
        ds = read_tables(inputs)
        chosen = columns or table_columns(ds.columns(), handle)
        check_table_columns(ds, chosen)
    import ray

    resources = ray.cluster_resources()
    out = predict_dataset(ds, source, num_actors=num_actors, batch_size=batch_size, num_gpus=gpus,
                          open_options=worker_open, columns=chosen, **options)
    actors = num_actors or default_actors(resources, 1, gpus)
    err_console.print(f"ray: {int(resources.get('CPU', 0))} CPUs, {int(resources.get('GPU', 0))} GPUs in the cluster;"
                      f" {actors} actor(s), batch {batch_size}", markup=False, soft_wrap=True)
    return out, ds.count()  # the input dataset: its blocks are in memory, counting runs nothing


def _write(ds: ray.data.Dataset, out: Path, output_names: list[str] | None, *,
           on_rows: Callable[[int], object]) -> tuple[list[Prediction], int, int]:
    """Stream the rows to ``out``; return the first failed rows (read back from the file), their count, the total."""
    import itertools

    from pthkit.integrations.ray import write_rows

    target, total, n_failed = write_rows(ds, out, output_names=output_names, on_rows=on_rows)
    failed: list[Prediction] = []
    if n_failed:
        failed = list(itertools.islice((p for p in _read_back(target, output_names) if not p.ok), _FAILED_SHOWN))
    return failed, n_failed, total


def _read_back(target: Path, output_names: list[str] | None) -> Iterator[Prediction]:
    import json

    from pthkit.integrations import record_to_prediction

    if target.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(target).iter_batches(batch_size=4096, columns=["path", "ok", "error"]):
            for record in batch.to_pylist():
                yield record_to_prediction(record, output_names=output_names)
    elif target.suffix.lower() == ".jsonl":
        with open(target, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                yield record_to_prediction({"path": row["path"], "ok": row["ok"], "error": row.get("error")})
    else:
        with open(target, encoding="utf-8", newline="") as fh:
            for cells in csv.DictReader(fh):
                yield record_to_prediction({"path": cells["path"], "ok": cells["ok"] == "True",
                                            "error": cells.get("error")})


def _print(ds: ray.data.Dataset, output_names: list[str] | None, *, image: bool, mode: str, top_k: int,
           json_out: bool, csv_out: bool, on_rows: Callable[[int], object]) -> tuple[list[Prediction], int]:
    """Print the rows as local ``predict`` does, as they arrive; return the failed ones and the count."""
    from pthkit.integrations.ray import iter_predictions

    rows = _counted(iter_predictions(ds, output_names=output_names), on_rows)
    if image:
        return _print_images(rows, mode=mode, top_k=top_k, json_out=json_out, csv_out=csv_out)
    return _print_tables(cast("Iterator[TensorPrediction]", rows), top_k=top_k, json_out=json_out,  # table rows
                         csv_out=csv_out)


def _counted(rows: Iterator[Prediction], on_rows: Callable[[int], object]) -> Iterator[Prediction]:
    for p in rows:
        on_rows(1)
        yield p


def _print_images(rows: Iterable[Prediction], *, mode: str, top_k: int, json_out: bool,
                  csv_out: bool) -> tuple[list[Prediction], int]:
    """Local ``predict``'s image printing (:class:`~pthkit.cli._rows.ImageRowPrinter`)."""
    from pthkit.cli._rows import ImageRowPrinter

    printer = ImageRowPrinter(mode=mode, top_k=top_k, json_out=json_out, csv_out=csv_out)
    return _feed(printer, rows)


def _print_tables(rows: Iterable[TensorPrediction], *, top_k: int, json_out: bool,
                  csv_out: bool) -> tuple[list[Prediction], int]:
    """Local ``predict``'s table-model printing (:class:`~pthkit.cli._rows.TableRowPrinter`)."""
    from pthkit.cli._rows import TableRowPrinter

    printer = TableRowPrinter(top_k=top_k, json_out=json_out, csv_out=csv_out)
    return _feed(printer, rows)


def _feed(printer: ImageRowPrinter | TableRowPrinter, rows: Iterable[Any]) -> tuple[list[Prediction], int]:
    """Print every row as it arrives; return the failed ones and the count."""
    failed: list[Prediction] = []
    total = 0
    for p in rows:
        total += 1
        if not p.ok:
            failed.append(p)
        printer.add(p)
    printer.close()
    return failed, total


# --- errors ----------------------------------------------------------------------------------------------------------------


def _one_line(err: BaseException) -> BaseException:
    """The error to show for a failed run: the pthkit error a worker raised (unwrapped from Ray's task errors), the
    CLI's own exits as they are, else one typed line naming what failed."""
    if isinstance(err, (typer.Exit, KeyboardInterrupt)) or _env_debug():
        return err
    found = _pthkit_cause(err)
    if found is not None:
        return found
    return PthkitError.build("ray", received=f"{type(err).__name__}: {_first_line(err)}",
                             expected="the job to run on the cluster",
                             hint="Ray's logs have the details (set PTHKIT_DEBUG=1 for the traceback).")


def _pthkit_cause(err: BaseException) -> PthkitError | None:
    """The first :class:`PthkitError` in ``err``'s chain (Ray's ``RayTaskError.cause``, ``__cause__``), the original
    rather than Ray's wrapper class that also derives from it (its text is a whole traceback)."""
    seen: set[int] = set()
    stack = [err]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        wrapped = [c for c in (getattr(current, "cause", None), current.__cause__, current.__context__)
                   if isinstance(c, BaseException)]
        if isinstance(current, PthkitError) and not _is_ray_wrapper(current):
            return current
        stack.extend(reversed(wrapped))
    return None


def _is_ray_wrapper(err: BaseException) -> bool:
    """Ray re-raises a task's exception as a class deriving from both ``RayError`` and the original's class."""
    try:
        from ray.exceptions import RayError
    except ImportError:  # pragma: no cover - ray is imported before any run
        return False
    return isinstance(err, RayError)


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).split("\n", 1)[0].split())
    return text[:200] if text else type(err).__name__


def _env_debug() -> bool:
    return os.environ.get("PTHKIT_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
