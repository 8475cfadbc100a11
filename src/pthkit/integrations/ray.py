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
:func:`pthkit.integrations.record_to_row` turns one back into ``pthkit predict --json``'s dict.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pthkit.errors import InputNotFoundError, PthkitError
from pthkit.integrations import ROW_COLUMNS, require, row_to_record

if TYPE_CHECKING:
    import ray.data

__all__ = ["ImagePredictor", "TablePredictor", "init_local", "predict_dataset", "read_inputs", "write_rows"]


class ImagePredictor:
    """A callable class for ``Dataset.map_batches``: ``{"path": [...], ("bytes": [...])}`` → prediction records.

    ``model`` is anything :func:`pthkit.open` takes (a path every worker can read); ``open_options`` its keyword
    arguments; ``predict_options`` those of :meth:`~pthkit.model.Model.predict` (``top_k``, ``mode``,
    ``threshold`` …).
    """

    def __init__(self, model: str, *, open_options: dict[str, Any] | None = None,
                 predict_options: dict[str, Any] | None = None) -> None:
        import pthkit

        self.model = pthkit.open(model, **(open_options or {}))
        self.predict_options = dict(predict_options or {})
        self.predict_options.setdefault("workers", 0)  # one actor = one decoding thread; Ray scales actors instead

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        paths = [str(p) for p in batch["path"]]
        payloads = batch.get("bytes")
        items: list[Any] = []
        decode_errors: dict[int, str] = {}
        for i, path in enumerate(paths):
            if payloads is None or _readable_locally(path):
                items.append(path)  # the local code path, byte for byte
                continue
            try:
                items.append(_decode_bytes(bytes(payloads[i]), path, self.model))
            except PthkitError as err:
                decode_errors[i] = str(err)
                items.append(None)
        wanted = [item for item in items if item is not None]
        rows = list(self.model.predict(wanted, **self.predict_options)) if wanted else []
        records: list[dict[str, Any]] = []
        it = iter(rows)
        for i, item in enumerate(items):
            if item is None:
                records.append({"path": paths[i], "ok": False, "error": decode_errors[i], "mode": "", "labels": [],
                                "indices": [], "scores": [], "outputs": []})
                continue
            record = row_to_record(next(it))
            record["path"] = paths[i]
            records.append(record)
        return {name: [r[name] for r in records] for name in ROW_COLUMNS}


class TablePredictor:
    """A callable class for ``Dataset.map_batches`` over table rows: the feature columns (in ``columns`` order, or
    the model's input spec's feature names) → prediction records named ``"<source>:<row>"``."""

    def __init__(self, model: str, *, columns: Sequence[str] | None = None,
                 open_options: dict[str, Any] | None = None, predict_options: dict[str, Any] | None = None) -> None:
        import pthkit

        self.model = pthkit.open(model, **(open_options or {}))
        names = columns or self.model.input_spec.feature_names
        self.columns = list(names) if names else None
        self.predict_options = dict(predict_options or {})

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        columns = self.columns or [c for c in batch if c not in ("__row__", "__source__")]
        matrix = np.stack([np.asarray(batch[c], dtype=np.float32) for c in columns], axis=1)
        rows = list(self.model.predict(matrix, **self.predict_options))
        names = batch.get("__row__")
        records = []
        for i, row in enumerate(rows):
            record = row_to_record(row)
            if names is not None:
                record["path"] = str(names[i])
            records.append(record)
        return {name: [r[name] for r in records] for name in ROW_COLUMNS}


def _readable_locally(path: str) -> bool:
    return "://" not in path and os.path.exists(path)


def _decode_bytes(data: bytes, name: str, model: Any) -> Any:
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


def init_local(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (``auto``, ``ray://host:10001``), or start a local cluster sized to this machine."""
    ray = require("ray", "ray")
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)


def read_inputs(inputs: Sequence[str], *, path_column: str = "path") -> ray.data.Dataset:
    """A dataset of ``{"path"}`` rows (local files, read by path in the workers) or ``{"path", "bytes"}`` rows
    (URIs Ray reads: ``s3://…``, ``gs://…``); a ``.parquet`` / ``.csv`` input is a table whose ``path_column`` (or
    ``uri``) lists the images."""
    require("ray", "ray")
    import ray.data

    from pthkit.images import expand_inputs

    local: list[str] = []
    remote: list[str] = []
    for item in inputs:
        text = str(item)
        if text.lower().endswith((".parquet", ".csv")) and _readable_locally(text):
            table = ray.data.read_parquet(text) if text.lower().endswith(".parquet") else ray.data.read_csv(text)
            names = table.columns()
            column = path_column if path_column in names else ("uri" if "uri" in names else None)
            if column is None:
                raise InputNotFoundError.build("path table", received=f"{text} (columns {names})",
                                               expected=f"a '{path_column}' or 'uri' column", hint="Name the column.")
            listed = [str(r[column]) for r in table.select_columns([column]).take_all()]
            remote += [p for p in listed if "://" in p]
            local += [str(p) for p in expand_inputs([p for p in listed if "://" not in p])] if any(
                "://" not in p for p in listed) else []
        elif "://" in text:
            remote.append(text)
        else:
            local += [str(Path(p).resolve()) if Path(p).exists() else str(p) for p in expand_inputs([text])]
    parts = []
    if local:
        parts.append(ray.data.from_items([{"path": p} for p in local]))
    if remote:
        ds = ray.data.read_binary_files(remote, include_paths=True)
        parts.append(ds)
    if not parts:
        raise InputNotFoundError.build("inputs", received="nothing", expected="at least one image or URI")
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])


def predict_dataset(
    ds: ray.data.Dataset,
    model: str | os.PathLike[str],
    *,
    num_actors: int | None = None,
    batch_size: int = 32,
    open_options: dict[str, Any] | None = None,
    columns: Sequence[str] | None = None,
    **predict_options: Any,
) -> ray.data.Dataset:
    """Predict every row of ``ds`` with ``model`` on an actor pool; rows with the :data:`ROW_COLUMNS` schema.

    ``ds`` holds images (a ``path`` column, optionally ``bytes``) or table rows (numeric columns; ``columns`` picks
    and orders them). ``num_actors``: the pool size (default: one per CPU of the cluster). ``predict_options``:
    :meth:`~pthkit.model.Model.predict`'s keyword arguments (``top_k``, ``mode`` …), checked here, before any work
    is scheduled.
    """
    ray = require("ray", "ray")
    import pthkit.model as model_mod

    mode = predict_options.get("mode")
    if mode is not None and mode not in model_mod.OUTPUT_MODES:
        raise PthkitError.build("mode", received=repr(mode), expected=" | ".join(model_mod.OUTPUT_MODES))
    if not isinstance(batch_size, int) or batch_size < 1:
        raise PthkitError.build("batch_size", received=repr(batch_size), expected="an integer >= 1")
    actors = num_actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
    # Rows come back in input order (as local predict's), at a small cost in scheduling freedom.
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    options = {"batch_size": batch_size, **predict_options}
    source = str(model)
    if "path" in ds.columns():
        return ds.map_batches(ImagePredictor, fn_constructor_kwargs={
            "model": source, "open_options": open_options, "predict_options": options},
            batch_size=batch_size, concurrency=actors, num_cpus=1)
    return ds.map_batches(TablePredictor, fn_constructor_kwargs={
        "model": source, "columns": columns, "open_options": open_options, "predict_options": options},
        batch_size=batch_size, concurrency=actors, num_cpus=1)


def write_rows(ds: ray.data.Dataset, out: str | os.PathLike[str]) -> tuple[Path, int, int]:
    """Stream prediction rows into one ``.parquet``, ``.jsonl`` or ``.csv`` file on the driver (batch by batch, so
    memory stays bounded however many rows there are); return ``(file, rows, failed rows)``."""
    import csv
    import json

    from pthkit.integrations import record_to_row

    target = Path(out)
    suffix = target.suffix.lower()
    if suffix not in (".parquet", ".jsonl", ".csv"):
        raise PthkitError.build("--out", received=str(target), expected="a .parquet, .jsonl or .csv file")
    target.parent.mkdir(parents=True, exist_ok=True)
    total = failed = 0
    tmp = target.with_name(f".{target.name}.partial")
    writer: Any = None
    with open(tmp, "wb" if suffix == ".parquet" else "w", **({} if suffix == ".parquet" else {
            "encoding": "utf-8", "newline": ""})) as fh:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=1024):
            total += batch.num_rows
            failed += batch.num_rows - sum(bool(v) for v in batch.column("ok").to_pylist())
            if suffix == ".parquet":
                import pyarrow.parquet as pq

                if writer is None:
                    writer = pq.ParquetWriter(fh, batch.schema)
                writer.write_table(batch)
                continue
            records = batch.to_pylist()
            if suffix == ".jsonl":
                fh.writelines(json.dumps(record_to_row(r)) + "\n" for r in records)
            else:
                if writer is None:
                    writer = csv.writer(fh)
                    writer.writerow(ROW_COLUMNS)
                writer.writerows([";".join(map(str, r[c])) if isinstance(r[c], list) else r[c] for c in ROW_COLUMNS]
                                 for r in records)
        if suffix == ".parquet" and writer is not None:
            writer.close()
    os.replace(tmp, target)
    return target, total, failed
