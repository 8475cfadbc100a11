"""Batch prediction on Ray Data: ``map_batches`` with an actor pool, the model loaded once per actor.

This follows Ray's own "image classification batch inference with PyTorch" recipe (a callable class whose
``__init__`` loads the model and whose ``__call__`` maps a batch), with pthkit's pieces inside it:

- the actor loads the model through :func:`pthkit.open` (same identification, preprocessing and evidence as a
  local run; ``open_options`` are ``pthkit.open``'s keyword arguments);
- it predicts through :meth:`pthkit.model.Model.predict`, i.e. the same decoding (reduced-size JPEG decoding, EXIF,
  alpha on white), the same batch-level normalization and the same row builder as local ``pthkit predict``. A file
  the workers can open by path (a local folder, a shared file system) is read by path, exactly as locally; bytes
  (object storage, read by ``ray.data.read_binary_files``) are decoded by the same decoder;
- a failed image is a row with ``ok = False`` and the error, as locally.

Rows have the fixed schema :data:`pthkit.integrations.ROW_COLUMNS` (Arrow needs one schema per dataset);
:func:`pthkit.integrations.record_to_row` turns one back into ``pthkit predict --json``'s dict, and
:func:`iter_predictions` streams them back as :class:`~pthkit.tasks.predict.Prediction` objects.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from pthkit.errors import DatasetError, InputNotFoundError, PreprocessError, PthkitError
from pthkit.integrations import record_to_prediction, records_to_table, require, row_to_record

if TYPE_CHECKING:
    import pyarrow
    import ray.data

    from pthkit.model import Model
    from pthkit.tasks.predict import Prediction

__all__ = ["ImagePredictor", "TablePredictor", "default_actors", "init_local", "iter_predictions", "predict_dataset",
           "read_inputs", "read_tables", "write_rows"]

# Input columns that are bookkeeping, never features: the row name of a table row.
ROW_NAME_COLUMN = "__row__"
# The file suffixes read_tables reads (Ray Data's readers); other table formats are local predict's.
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


class ImagePredictor:
    """A callable class for ``Dataset.map_batches``: ``{"path", ("name"), ("bytes")}`` batches → prediction rows.

    ``model`` is anything :func:`pthkit.open` takes (a path every worker can read); ``open_options`` its keyword
    arguments; ``predict_options`` those of :meth:`~pthkit.model.Model.predict` (``top_k``, ``mode``,
    ``threshold`` …). ``path`` is what the worker reads; ``name`` (optional) is how the row names the input, as
    local ``pthkit predict`` would (the path the user typed); ``bytes`` (optional) is the encoded file for inputs
    the workers cannot open by path (object storage).
    """

    def __init__(self, model: str, *, open_options: dict[str, Any] | None = None,
                 predict_options: dict[str, Any] | None = None) -> None:
        from pthkit.api import open as open_model

        self.model = open_model(model, **(open_options or {}))
        self.predict_options = dict(predict_options or {})
        self.predict_options.setdefault("workers", 0)  # one actor = one decoding thread; Ray scales actors instead

    def __call__(self, batch: dict[str, np.ndarray]) -> pyarrow.Table:
        paths = [str(p) for p in batch["path"]]
        given = batch.get("name")
        names = [str(n) if n else p for n, p in zip(given, paths)] if given is not None else paths
        payloads = batch.get("bytes")
        items: list[Any] = []
        decode_errors: dict[int, str] = {}
        for i, path in enumerate(paths):
            data = payloads[i] if payloads is not None else None
            if data is None or _readable_locally(path):
                items.append(path)  # the local code path, byte for byte
                continue
            try:
                items.append(_decode_bytes(bytes(data), names[i], self.model))
            except PthkitError as err:
                decode_errors[i] = str(err)
                items.append(None)
        wanted = [item for item in items if item is not None]
        rows = iter(self.model.predict(wanted, **self.predict_options)) if wanted else iter(())
        records: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            if item is None:
                records.append({"path": names[i], "ok": False, "error": decode_errors[i]})
                continue
            record = row_to_record(next(rows), path=names[i])
            if record["error"] and names[i] != paths[i]:
                record["error"] = record["error"].replace(paths[i], names[i])  # as the user named it, as locally
            records.append(record)
        return records_to_table(records)


class TablePredictor:
    """A callable class for ``Dataset.map_batches`` over table rows: the feature columns (``columns`` in order; else
    the model's input spec's feature names when the batch has them all; else every column but ``__row__``) →
    prediction rows named by the ``__row__`` column (``"rows.csv:17"``, see :func:`read_tables`)."""

    def __init__(self, model: str, *, columns: Sequence[str] | None = None,
                 open_options: dict[str, Any] | None = None, predict_options: dict[str, Any] | None = None) -> None:
        from pthkit.api import open as open_model

        self.model = open_model(model, **(open_options or {}))
        self.columns = list(columns) if columns else None
        self.predict_options = dict(predict_options or {})

    def __call__(self, batch: dict[str, np.ndarray]) -> pyarrow.Table:
        columns = self.columns or table_columns(list(batch), self.model)
        matrix = np.stack([np.asarray(batch[c], dtype=np.float32) for c in columns], axis=1)
        rows = list(self.model.predict(matrix, **self.predict_options))
        names = batch.get(ROW_NAME_COLUMN)
        return records_to_table([row_to_record(row, path=str(names[i]) if names is not None else None)
                                 for i, row in enumerate(rows)])


def table_columns(available: Sequence[str], model: Model) -> list[str]:
    """The feature columns local ``pthkit predict`` would use: the input spec's feature names when the table has them
    all, else every column (``__row__`` excepted)."""
    names = [c for c in available if c != ROW_NAME_COLUMN]
    spec = model.input_spec.feature_names
    return list(spec) if spec and all(n in names for n in spec) else names


def _readable_locally(path: str) -> bool:
    return "://" not in path and os.path.exists(path)


def _decode_bytes(data: bytes, name: str, model: Model) -> Any:
    """Decode encoded image bytes exactly as a file is decoded (same rules, same reduced-size JPEG decoding)."""
    from PIL import Image, UnidentifiedImageError

    from pthkit.errors import ImageError
    from pthkit.images import open_image
    from pthkit.images.dataset import draft_size_for

    try:
        img = Image.open(io.BytesIO(data))
        draft = draft_size_for(model.preprocess) if model.preprocess is not None else None
        if draft is not None and img.format == "JPEG" and img.width >= 2 * draft[0] and img.height >= 2 * draft[1]:
            img.draft("RGB", draft)
        return open_image(img)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError.build("image", received=f"{name} ({' '.join(str(err).split())[:120]})",
                               expected="a readable image file (JPEG, PNG, GIF, WebP, BMP, TIFF …)",
                               hint="The file is skipped; re-export or remove it.") from err


def init_local(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Connect to ``address`` (``auto``, ``ray://host:10001``), or start a local cluster sized to this machine.

    Returns ``False`` when Ray was already initialized in this process (nothing done; the caller must not shut it
    down), ``True`` when this call started or joined a cluster.
    """
    ray = require("ray", "ray")
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    return True


def read_inputs(inputs: Sequence[str], *, path_column: str = "path") -> ray.data.Dataset:
    """A dataset of image rows ``{"path", "name", "bytes"}``, one per image, in the order local ``predict`` lists
    them.

    - Local files (folders, globs, ``@list.txt`` expanded as local ``predict`` does): ``path`` is the absolute path
      the workers open, ``name`` the path as local ``predict`` prints it, ``bytes`` null.
    - URIs (``s3://…``, ``gs://…``, ``hdfs://…``, ``file://…``: what ``pyarrow.fs``, the layer under Ray Data's
      readers, reaches): a URI whose last part has no suffix is a folder, listed here (recursively, image files by
      extension, sorted) as a local folder is; ``bytes`` are fetched by a Ray Data stage of I/O tasks
      (no CPU reserved, so an actor pool holding every CPU still gets its input; Ray Data's backpressure bounds
      the read-ahead).
    - A ``.parquet`` / ``.csv`` file is a table whose ``path_column`` (or ``uri``) column lists the images.
    """
    require("ray", "ray")
    import pyarrow as pa
    import ray.data

    from pthkit.images import expand_inputs

    names: list[str] = []
    for item in inputs:
        text = str(item)
        if text.lower().endswith((".parquet", ".csv")) and _readable_locally(text):
            listed = _listed_paths(text, path_column)
        else:
            listed = [text]
        run: list[str] = []  # consecutive local entries, expanded together (as local predict expands them)
        for entry in listed:
            if "://" in entry:
                names += [str(p) for p in expand_inputs(run)] if run else []
                run = []
                names += _expand_uri(entry)
            else:
                run.append(entry)
        names += [str(p) for p in expand_inputs(run)] if run else []
    if not names:
        raise InputNotFoundError.build("inputs", received="nothing", expected="at least one image or URI")
    paths = [str(Path(n).resolve()) if "://" not in n and os.path.exists(n) else n for n in names]
    table = pa.table({"path": paths, "name": names, "bytes": [None] * len(names)}, schema=_input_schema())
    remote = any("://" in n for n in names)
    # Several blocks, so that every actor of the pool gets work (a block feeds one actor at a time); small ones when
    # bytes are fetched (a fetch task holds its block's images).
    step = 256 if remote else min(4096, max(16, len(names) // 200))
    ds: ray.data.Dataset = ray.data.from_arrow([table.slice(i, step) for i in range(0, len(names), step)])
    if remote:
        ds = ds.map_batches(_fetch_remote, batch_format="pyarrow", batch_size=32, num_cpus=0)
    return ds


def _input_schema() -> pyarrow.Schema:
    import pyarrow as pa

    return pa.schema([("path", pa.string()), ("name", pa.string()), ("bytes", pa.binary())])


def _expand_uri(uri: str) -> list[str]:
    """A file URI as given; a folder URI (no suffix on its last part) as its image files, recursively, sorted by
    path, dot-files skipped (as :func:`pthkit.images.expand_inputs` lists a local folder)."""
    if Path(uri.split("://", 1)[1]).suffix:
        return [uri]
    import pyarrow.fs as pafs

    from pthkit.images import IMAGE_EXTENSIONS

    scheme = uri.split("://", 1)[0]
    try:
        fs, root = pafs.FileSystem.from_uri(uri)
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except (OSError, ValueError) as err:
        raise InputNotFoundError.build("inputs", received=f"{uri} ({' '.join(str(err).split())[:160]})",
                                       expected="a folder URI the driver can list",
                                       hint="Check the URI and the credentials of this machine.") from err
    found = sorted(i.path for i in infos if i.type == pafs.FileType.File
                   and Path(i.path).suffix.lower() in IMAGE_EXTENSIONS
                   and not any(part.startswith(".") for part in Path(i.path[len(root):]).parts))
    if not found:
        return [uri]  # reported as a failed input, as a missing local path is
    return [f"{scheme}://{f}" for f in found]  # pyarrow's paths have no scheme: "bucket/key", "/abs/path"


def _fetch_remote(table: pyarrow.Table) -> pyarrow.Table:
    """Fill ``bytes`` for the rows whose ``path`` is a URI (threads: the reads are I/O); a URI that cannot be read
    keeps null bytes, and :class:`ImagePredictor` reports it as a failed row."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa

    paths = [str(p) for p in table.column("path").to_pylist()]
    wanted = [i for i, p in enumerate(paths) if "://" in p]
    data: list[bytes | None] = list(table.column("bytes").to_pylist())
    if wanted:
        with ThreadPoolExecutor(max_workers=min(8, len(wanted))) as pool:
            for i, payload in zip(wanted, pool.map(_read_uri, [paths[i] for i in wanted])):
                data[i] = payload
    return pa.table({"path": paths, "name": table.column("name"), "bytes": pa.array(data, type=pa.binary())},
                    schema=_input_schema())


def _read_uri(uri: str) -> bytes | None:
    import pyarrow.fs as pafs

    try:
        fs, where = pafs.FileSystem.from_uri(uri)
        with fs.open_input_stream(where) as stream:
            return bytes(stream.read())
    except (OSError, ValueError):
        return None


def _listed_paths(table_file: str, path_column: str) -> list[str]:
    """The image paths a ``.csv`` / ``.parquet`` file lists in its ``path_column`` (or ``uri``) column."""
    import ray.data

    table = ray.data.read_parquet(table_file) if table_file.lower().endswith(".parquet") else \
        ray.data.read_csv(table_file)
    names = table.columns()
    column = path_column if path_column in names else ("uri" if "uri" in names else None)
    if column is None:
        raise InputNotFoundError.build("path table", received=f"{table_file} (columns {names})",
                                       expected=f"a '{path_column}' or 'uri' column", hint="Name the column.")
    return [str(r[column]) for r in table.select_columns([column]).take_all()]


def read_tables(inputs: Sequence[str]) -> ray.data.Dataset:
    """A dataset of table rows (``.csv`` with a header, ``.parquet``; local paths or URIs Ray reads), each with a
    ``__row__`` column naming it as local ``pthkit predict`` does: ``"<file as given>:<1-based row>"``.

    The rows are read now, into the cluster's object store (numbering rows needs their count, and reading before
    the actor pool starts leaves it every CPU); a table larger than the object store spills to disk. For tables
    beyond that, read your own dataset and give it a ``__row__`` column (or none) before :func:`predict_dataset`.
    """
    require("ray", "ray")
    import ray.data

    parts: list[ray.data.Dataset] = []
    for item in inputs:
        text = str(item)
        suffix = Path(text.split("://", 1)[-1]).suffix.lower()
        if suffix not in TABLE_SUFFIXES:
            raise PreprocessError.build("--engine ray", received=f"{text} (a {suffix or 'suffix-less'} file)",
                                        expected="a .csv (with a header) or .parquet table",
                                        hint="Other array files (.npy, .npz …) run with --engine local.")
        if "://" not in text and not os.path.isfile(text):
            raise InputNotFoundError.build("table", received=f"{text} (not found)", expected="a CSV or Parquet file",
                                           hint="Check the path.")
        where = text if "://" in text else str(Path(text).resolve())
        ds = (ray.data.read_csv(where) if suffix == ".csv" else ray.data.read_parquet(where)).materialize()
        numbered = ds.zip(ray.data.range(ds.count()))
        parts.append(numbered.map_batches(functools.partial(_name_rows, label=text), batch_format="pyarrow"))
    if not parts:
        raise InputNotFoundError.build("inputs", received="nothing", expected="at least one table")
    return (parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])).materialize()


def _name_rows(table: pyarrow.Table, *, label: str) -> pyarrow.Table:
    """Turn the ``id`` column that ``ray.data.range`` zipped in into ``__row__`` names (``rows.csv:17``)."""
    import pyarrow as pa

    ids = table.column("id").to_pylist()
    return table.drop_columns(["id"]).append_column(
        ROW_NAME_COLUMN, pa.array([f"{label}:{int(i) + 1}" for i in ids], type=pa.string()))


def predict_dataset(
    ds: ray.data.Dataset,
    model: str | os.PathLike[str],
    *,
    num_actors: int | None = None,
    batch_size: int = 32,
    num_cpus: float = 1,
    num_gpus: float = 0,
    open_options: dict[str, Any] | None = None,
    columns: Sequence[str] | None = None,
    **predict_options: Any,
) -> ray.data.Dataset:
    """Predict every row of ``ds`` with ``model`` on an actor pool; rows with the :data:`ROW_COLUMNS` schema, in
    input order.

    ``ds`` holds images (a ``path`` column, optionally ``name`` and ``bytes``: :func:`read_inputs`) or table rows
    (numeric columns, optionally ``__row__``: :func:`read_tables`; ``columns`` picks and orders them).
    ``num_actors``: the pool size (default: as many as the cluster's CPUs, or GPUs, allow at ``num_cpus`` /
    ``num_gpus`` per actor). ``model`` must be readable by every worker. ``predict_options``:
    :meth:`~pthkit.model.Model.predict`'s keyword arguments (``top_k``, ``mode`` …), checked here, before any work
    is scheduled.
    """
    ray = require("ray", "ray")
    from pthkit.model import OUTPUT_MODES

    mode = predict_options.get("mode")
    if mode is not None and mode not in OUTPUT_MODES:
        raise PthkitError.build("mode", received=repr(mode), expected=" | ".join(OUTPUT_MODES))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PthkitError.build("batch_size", received=repr(batch_size), expected="an integer >= 1")
    if num_actors is not None and (isinstance(num_actors, bool) or not isinstance(num_actors, int) or num_actors < 1):
        raise PthkitError.build("num_actors", received=repr(num_actors), expected="an integer >= 1")
    if not num_cpus > 0 or num_gpus < 0:
        raise PthkitError.build("num_cpus / num_gpus", received=f"{num_cpus} / {num_gpus}",
                                expected="num_cpus > 0 and num_gpus >= 0")
    actors = num_actors or default_actors(ray.cluster_resources(), num_cpus, num_gpus)
    options = {"batch_size": batch_size, **predict_options}
    source = str(model)
    udf: type[ImagePredictor] | type[TablePredictor] = TablePredictor
    kwargs: dict[str, Any] = {"model": source, "open_options": open_options, "predict_options": options}
    if "path" in ds.columns():
        udf = ImagePredictor
    else:
        kwargs["columns"] = columns
    import ray.data

    out = ds.map_batches(udf, fn_constructor_kwargs=kwargs, batch_size=batch_size, batch_format="numpy",
                         compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=num_cpus,
                         num_gpus=num_gpus or None)
    # Rows come back in input order (as local predict's), at a small cost in scheduling freedom. Set on this
    # dataset's own context (a copy), never on the user's global one.
    out.context.execution_options.preserve_order = True
    return out


def default_actors(resources: dict[str, float], num_cpus: float, num_gpus: float) -> int:
    """The default pool size: one actor per ``num_gpus`` GPUs when actors take GPUs, else per ``num_cpus`` CPUs of the cluster."""
    if num_gpus:
        return max(1, int(resources.get("GPU", 0) // num_gpus))
    return max(1, int(resources.get("CPU", 1) // num_cpus))


def iter_predictions(ds: ray.data.Dataset, *, output_names: Sequence[str] | None = None,
                     batch_size: int = 1024) -> Iterator[Prediction]:
    """Stream the rows of a :func:`predict_dataset` result to the driver as the
    :class:`~pthkit.tasks.predict.Prediction` objects the workers computed (``TensorPrediction`` for tables), in
    order, batch by batch (memory stays bounded however many rows there are)."""
    index = 0
    for batch in _arrow_batches(ds, batch_size):
        for record in batch.to_pylist():
            yield record_to_prediction(record, index=index, output_names=output_names)
            index += 1


def _arrow_batches(ds: ray.data.Dataset, batch_size: int) -> Iterator[pyarrow.Table]:
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=batch_size):
        # iter_batches is typed as returning any batch format; batch_format="pyarrow" gives Arrow tables.
        yield cast("pyarrow.Table", batch)


def write_rows(ds: ray.data.Dataset, out: str | os.PathLike[str], *, output_names: Sequence[str] | None = None,
               on_rows: Callable[[int], object] | None = None) -> tuple[Path, int, int]:
    """Stream prediction rows into one file on the driver; return ``(file, rows, failed rows)``. ``on_rows`` is
    called with each batch's row count as it is written (a progress bar).

    - ``.parquet``: the :data:`ROW_COLUMNS` schema (:func:`pthkit.integrations.row_schema`);
    - ``.jsonl``: one line per row, the very line ``pthkit predict --json`` prints for that input;
    - ``.csv``: the :data:`ROW_COLUMNS` columns, list cells joined with ``;``.

    The file is written beside the target and renamed into place at the end (a failed run leaves no half file);
    an existing file is replaced, as ``predict``'s other output files are.
    """
    import csv
    import json

    from pthkit.integrations import ROW_COLUMNS, row_schema

    target = Path(out)
    suffix = target.suffix.lower()
    if suffix not in (".parquet", ".jsonl", ".csv"):
        raise PreprocessError.build("--out", received=repr(str(target)), expected="a .parquet, .jsonl or .csv file",
                                    hint="e.g. --out results.parquet")
    if target.is_dir():
        raise PreprocessError.build("--out", received=f"{target} (a folder)", expected="a file name")
    target.parent.mkdir(parents=True, exist_ok=True)
    total = failed = 0
    tmp = target.with_name(f".{target.name}.partial")
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            schema = row_schema()
            with pq.ParquetWriter(str(tmp), schema) as writer:
                for batch in _arrow_batches(ds, 1024):
                    total += batch.num_rows
                    failed += batch.num_rows - sum(bool(v) for v in batch.column("ok").to_pylist())
                    writer.write_table(batch.select(list(ROW_COLUMNS)).cast(schema))
                    if on_rows is not None:
                        on_rows(batch.num_rows)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                writer_csv = csv.writer(fh) if suffix == ".csv" else None
                if writer_csv is not None:
                    writer_csv.writerow(ROW_COLUMNS)
                for batch in _arrow_batches(ds, 1024):
                    records = batch.to_pylist()
                    total += len(records)
                    failed += sum(not r["ok"] for r in records)
                    if writer_csv is None:
                        from pthkit.integrations import record_to_row

                        fh.writelines(json.dumps(record_to_row(r, output_names=output_names), ensure_ascii=False)
                                      + "\n" for r in records)
                    else:
                        writer_csv.writerows([_csv_cell(r[c]) for c in ROW_COLUMNS] for r in records)
                    if on_rows is not None:
                        on_rows(len(records))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target, total, failed


def _csv_cell(value: Any) -> Any:
    if isinstance(value, list):
        return ";".join("" if v is None else str(v) for v in value)
    return "" if value is None else value


def check_table_columns(ds: ray.data.Dataset, columns: Sequence[str]) -> None:
    """Refuse, before any work is scheduled, a feature column the table lacks or one that is not numeric."""
    import pyarrow as pa

    schema = ds.schema()
    if schema is None:
        return
    types = dict(zip(schema.names, schema.types))
    for name in columns:
        if name not in types:
            shown = ", ".join(n for n in schema.names[:10] if n != ROW_NAME_COLUMN)
            raise DatasetError.build(f"--columns {name}", received="no such column in the table",
                                     expected=f"one of {shown}")
        kind = types[name]
        if isinstance(kind, pa.DataType) and not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                                                  or pa.types.is_boolean(kind) or pa.types.is_null(kind)):
            raise DatasetError.build(f"column {name}", received=f"{kind} values", expected="numbers",
                                     hint="Pick numeric columns with --columns.")
