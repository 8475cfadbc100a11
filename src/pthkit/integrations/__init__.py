"""Running pthkit models on existing distributed engines (Ray Data, Spark), never on a home-made one.

Each integration loads the model once per worker through :func:`pthkit.open` and predicts through the same code as
local ``pthkit predict``, so a row computed on a cluster equals the row computed locally.

A prediction crosses the engine as a flat *record* with the fixed :data:`ROW_COLUMNS` schema (Arrow and Parquet
need one schema for every batch); :func:`record_to_prediction` rebuilds the very
:class:`~pthkit.tasks.predict.Prediction` the worker computed, so ``record_to_row(r)`` is the dict local
``pthkit predict --json`` prints for that input, key for key and float for float.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pthkit.errors import PthkitError

if TYPE_CHECKING:
    import pyarrow

    from pthkit.tasks.predict import Prediction

__all__ = ["ROW_COLUMNS", "record_to_prediction", "record_to_row", "records_to_table", "require", "row_schema",
           "row_to_record"]

# The fixed schema of a prediction row on a distributed engine (see row_schema for the types):
# - path: the input as the user named it (as local predict prints it); error: the message (null when ok);
# - mode: softmax | sigmoid | logits (images, classify tables) or raw (tables); task: null for images, the table
#   task (raw | regress | classify) for table rows;
# - labels / indices / scores: the classes, best first (a label is null when the model has no names);
# - outputs: images in logits mode: the full logit vector; tables: every output value, flattened;
# - output_keys: for table rows, the output each value of ``outputs`` belongs to ("output", "output_0" …).
ROW_COLUMNS: tuple[str, ...] = ("path", "ok", "error", "mode", "task", "labels", "indices", "scores", "outputs",
                                "output_keys")


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency, or raise a one-line error naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise PthkitError.build(f"{module}", received="not installed", expected=f"the {module} package",
                                hint=f"pip install 'pthkit[{extra}]'") from err


def row_schema() -> pyarrow.Schema:
    """The Arrow schema of :data:`ROW_COLUMNS` (fixed, so a batch of failures has the same types as any other)."""
    import pyarrow as pa

    return pa.schema([
        ("path", pa.string()), ("ok", pa.bool_()), ("error", pa.string()), ("mode", pa.string()),
        ("task", pa.string()), ("labels", pa.list_(pa.string())), ("indices", pa.list_(pa.int64())),
        ("scores", pa.list_(pa.float64())), ("outputs", pa.list_(pa.float64())),
        ("output_keys", pa.list_(pa.string())),
    ])


def records_to_table(records: Sequence[Mapping[str, Any]]) -> pyarrow.Table:
    """Records (dicts with the :data:`ROW_COLUMNS` keys) as an Arrow table with :func:`row_schema`."""
    import pyarrow as pa

    return pa.Table.from_pylist([dict(r) for r in records], schema=row_schema())


def row_to_record(row: Prediction, path: str | None = None) -> dict[str, Any]:
    """A :class:`~pthkit.tasks.predict.Prediction` (or a table row's ``TensorPrediction``) as a flat record with the
    :data:`ROW_COLUMNS` schema; floats are kept as computed (the rounding happens when a row is printed)."""
    from pthkit.tasks.outputs import TensorPrediction

    task: str | None = None
    outputs: list[float] = []
    keys: list[str] = []
    if isinstance(row, TensorPrediction):
        task = row.task
        for key, values in (row.outputs or {}).items():
            outputs += [float(v) for v in values]
            keys += [key] * len(values)
    if not keys and row.logits is not None:
        outputs = [float(v) for v in row.logits]
    return {
        "path": str(row.path if path is None else path),
        "ok": row.ok,
        "error": row.error,
        "mode": row.mode if row.ok else None,
        "task": task,
        "labels": [c.label for c in row.classes],
        "indices": [int(c.index) for c in row.classes],
        "scores": [float(c.score) for c in row.classes],
        "outputs": outputs,
        "output_keys": keys,
    }


def record_to_prediction(record: Mapping[str, Any], *, index: int = 0,
                         output_names: Sequence[str] | None = None) -> Prediction:
    """The :class:`~pthkit.tasks.predict.Prediction` a record was made from (a ``TensorPrediction`` for table rows).

    ``index`` is the row's position (not stored); ``output_names``: the names of a table model's output values
    (``--output-names``, or the model's), which a record does not repeat on every row.
    """
    from pthkit.tasks.outputs import TensorPrediction
    from pthkit.tasks.predict import ClassScore, Prediction

    path = str(record["path"])
    ok = bool(record["ok"])
    task = record.get("task")
    error = None if ok else str(record.get("error") or "")
    mode = str(record.get("mode") or ("raw" if task else "softmax"))
    classes = [ClassScore(int(i), None if lab is None else str(lab), float(s))
               for lab, i, s in zip(_list(record.get("labels")), _list(record.get("indices")),
                                    _list(record.get("scores")))]
    values = [float(v) for v in _list(record.get("outputs"))]
    keys = [str(k) for k in _list(record.get("output_keys"))]
    if not task:
        return Prediction(path=path, index=index, mode=mode, classes=classes, error=error,
                          logits=values if ok and mode == "logits" else None)
    outputs: dict[str, list[float]] | None = None
    if keys:
        outputs = {}
        for key, value in zip(keys, values):
            outputs.setdefault(key, []).append(value)
    return TensorPrediction(path=path, index=index, mode=mode, classes=classes, error=error, task=str(task),
                            logits=values if ok and not keys and mode == "logits" else None, outputs=outputs,
                            output_names=list(output_names) if output_names is not None else None)


def record_to_row(record: Mapping[str, Any], *, output_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The dict local ``pthkit predict --json`` prints for the input of ``record`` (the inverse of
    :func:`row_to_record`, then ``Prediction.to_dict``)."""
    return record_to_prediction(record, output_names=output_names).to_dict()


def _list(value: Any) -> list[Any]:
    """A list column's cell as a list (Arrow gives lists, numpy batches give arrays, a null cell gives None)."""
    return [] if value is None else list(value)
