"""Spark: a pandas UDF built on ``pyspark.ml.functions.predict_batch_udf`` (pyspark >= 3.4).

``predict_batch_udf`` calls ``make_predict_fn`` once per Python worker and caches the function it returns, so the
model is loaded once per worker through :func:`pthkit.open`, and rows go through
:meth:`pthkit.model.Model.predict`: the same decoding, preprocessing and row builder as local ``pthkit predict``.

- Image models take a string column of image paths every executor can read, and return
  ``struct<ok: int, error: string, label: string, class_index: int, score: float, top_indices: array<int>,
  top_scores: array<float>>`` (top-k classes of the same softmax/sigmoid/logits mode as local predict).
- Tensor (table) models take numeric columns (or one ``array`` column) and return ``array<float>``: the model's
  outputs per row (or class probabilities with ``task="classify"``).

Spark's Python workers must run an interpreter with pthkit installed: set ``PYSPARK_PYTHON`` (Spark's own setting)
to it on every executor.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pthkit.integrations import require

__all__ = ["image_return_type", "predict_udf"]


def predict_udf(
    model: str | os.PathLike[str],
    *,
    kind: str | None = None,
    batch_size: int = 32,
    top_k: int = 5,
    open_options: dict[str, Any] | None = None,
    **predict_options: Any,
) -> Any:
    """A Spark UDF predicting with ``model`` (anything :func:`pthkit.open` takes, readable by every executor).

    ``kind``: ``"image"`` (a column of paths) or ``"tensor"`` (numeric columns); default: from the model's input
    spec, read once here on the driver. ``predict_options``: :meth:`~pthkit.model.Model.predict`'s (``mode`` …).
    Use it as ``df.withColumn("pred", udf("path"))``.
    """
    require("pyspark", "spark")
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, FloatType

    source = str(model)
    options = dict(open_options or {})
    if kind is None:
        from pthkit.api import open as open_model

        kind = "image" if open_model(source, **{**options, "check": False}).input_spec.kind == "image" else "tensor"
    if kind not in ("image", "tensor"):
        from pthkit.errors import PreprocessError

        raise PreprocessError.build("kind", received=repr(kind), expected="image | tensor")

    def make_predict_fn() -> Any:
        from pthkit.api import open as open_model

        handle = open_model(source, **options)

        def predict_images(paths: np.ndarray) -> dict[str, np.ndarray]:
            rows = list(handle.predict([str(p) for p in paths], batch_size=batch_size, top_k=top_k, workers=0,
                                       **predict_options))
            k = top_k
            out: dict[str, list[Any]] = {k_: [] for k_ in ("ok", "error", "label", "class_index", "score",
                                                            "top_indices", "top_scores")}
            for row in rows:
                classes = row.classes[:k]
                out["ok"].append(int(row.ok))
                out["error"].append(row.error or "")
                out["label"].append(classes[0].label or "" if classes else "")
                out["class_index"].append(classes[0].index if classes else -1)
                out["score"].append(classes[0].score if classes else float("nan"))
                out["top_indices"].append([c.index for c in classes] + [-1] * (k - len(classes)))
                out["top_scores"].append([c.score for c in classes] + [float("nan")] * (k - len(classes)))
            return {
                "ok": np.asarray(out["ok"], dtype=np.int32), "error": np.asarray(out["error"], dtype=object),
                "label": np.asarray(out["label"], dtype=object),
                "class_index": np.asarray(out["class_index"], dtype=np.int32),
                "score": np.asarray(out["score"], dtype=np.float32),
                "top_indices": np.asarray(out["top_indices"], dtype=np.int32).reshape(len(rows), k),
                "top_scores": np.asarray(out["top_scores"], dtype=np.float32).reshape(len(rows), k),
            }

        def predict_tensors(matrix: np.ndarray) -> np.ndarray:
            rows = list(handle.predict(np.asarray(matrix, dtype=np.float32), batch_size=batch_size,
                                       **predict_options))
            return np.stack([_values(row) for row in rows]).astype(np.float32)

        return predict_images if kind == "image" else predict_tensors

    if kind == "image":
        return predict_batch_udf(make_predict_fn, return_type=image_return_type(), batch_size=batch_size)
    return predict_batch_udf(make_predict_fn, return_type=ArrayType(FloatType()), batch_size=batch_size)


def image_return_type() -> Any:
    """The Spark ``StructType`` of an image prediction (see the module docstring)."""
    from pyspark.sql.types import (
        ArrayType,
        FloatType,
        IntegerType,
        StringType,
        StructField,
        StructType,
    )

    return StructType([
        StructField("ok", IntegerType()), StructField("error", StringType()), StructField("label", StringType()),
        StructField("class_index", IntegerType()), StructField("score", FloatType()),
        StructField("top_indices", ArrayType(IntegerType())), StructField("top_scores", ArrayType(FloatType())),
    ])


def _values(row: Any) -> np.ndarray:
    """The numbers of one tensor-model row: its outputs, or its class scores in index order."""
    if getattr(row, "outputs", None):
        flat: list[float] = []
        for value in row.outputs.values():
            flat.extend(np.ravel(np.asarray(value, dtype=np.float32)).tolist())
        return np.asarray(flat, dtype=np.float32)
    if row.raw_logits is not None:
        return np.asarray(row.raw_logits, dtype=np.float32).ravel()
    return np.asarray([c.score for c in sorted(row.classes, key=lambda c: c.index)], dtype=np.float32)


