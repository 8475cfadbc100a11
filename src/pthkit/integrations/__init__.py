"""Running pthkit models on existing distributed engines (Ray Data, Spark), never on a home-made one.

Each integration loads the model once per worker through :func:`pthkit.open` and predicts through the same code as
local ``pthkit predict``, so a row computed on a cluster equals the row computed locally.
"""

from __future__ import annotations

from typing import Any

from pthkit.errors import PthkitError

__all__ = ["ROW_COLUMNS", "record_to_row", "require", "row_to_record"]

# The fixed schema of a prediction row on a distributed engine (Arrow needs one schema for every batch).
ROW_COLUMNS: tuple[str, ...] = ("path", "ok", "error", "mode", "labels", "indices", "scores", "outputs")


def require(module: str, extra: str) -> Any:
    """Import an optional dependency, or raise a one-line error naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise PthkitError.build(f"{module}", received="not installed", expected=f"the {module} package",
                                hint=f"pip install 'pthkit[{extra}]'") from err


def row_to_record(row: Any) -> dict[str, Any]:
    """A :class:`~pthkit.tasks.predict.Prediction` as a flat record with the fixed :data:`ROW_COLUMNS` schema."""
    data = row.to_dict()
    classes = data.get("classes") or []
    outputs = data.get("outputs")
    flat: list[float] = []
    if isinstance(outputs, dict):
        for value in outputs.values():
            flat.extend(float(v) for v in (value if isinstance(value, list) else [value]))
    elif isinstance(outputs, list):
        flat = [float(v) for v in outputs]
    return {
        "path": str(data.get("path", "")),
        "ok": bool(data.get("ok", False)),
        "error": str(data.get("error") or ""),
        "mode": str(data.get("mode") or ""),
        "labels": [str(c.get("label")) if c.get("label") is not None else "" for c in classes],
        "indices": [int(c["index"]) for c in classes],
        "scores": [float(c["score"]) for c in classes],
        "outputs": flat,
    }


def record_to_row(record: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`row_to_record` for image rows: the same dict ``pthkit predict --json`` prints."""
    if not record["ok"]:
        return {"path": record["path"], "ok": False, "error": record["error"]}
    out: dict[str, Any] = {"path": record["path"], "ok": True, "mode": record["mode"],
                           "classes": [{"index": int(i), "label": (lab or None), "score": float(s)}
                                       for i, lab, s in zip(record["indices"], record["labels"], record["scores"])]}
    if len(record.get("outputs") or []):
        out["outputs"] = [float(v) for v in record["outputs"]]
    return out
