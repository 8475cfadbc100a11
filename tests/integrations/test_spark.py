"""Spark's predict_batch_udf with a local[2] session: the same top-1 as local predict."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import pthkit

# Starting a JVM and Spark's Python workers takes a minute on 2 cores: run with `make test-slow`.
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("java") is None, reason="pyspark needs a Java runtime (none on PATH)")]


@pytest.fixture(scope="module")
def spark():
    import os
    import sys

    pyspark = pytest.importorskip("pyspark")
    from pyspark.sql import SparkSession

    # Spark's Python workers must run this interpreter (the one with pthkit, torch and pandas installed).
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable

    session = (SparkSession.builder.master("local[2]").appName("pthkit-test")
               .config("spark.ui.enabled", "false").config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
               .getOrCreate())
    yield session
    session.stop()
    del pyspark


def test_spark_image_udf_matches_local(spark, image_folder: Path, small_classifier: Path) -> None:
    from pthkit.integrations.spark import predict_udf

    paths = sorted(str(p) for p in image_folder.iterdir())[:24]
    df = spark.createDataFrame([(p,) for p in paths], ["path"])
    udf = predict_udf(small_classifier, batch_size=8, top_k=3, open_options={"device": "cpu"})
    rows = df.withColumn("pred", udf("path")).collect()
    local = {r.path: r for r in pthkit.open(small_classifier, device="cpu").predict(paths, top_k=3, workers=0)}
    assert len(rows) == 24
    for row in rows:
        want = local[row.path]
        assert bool(row.pred.ok) == want.ok
        if want.ok:
            assert row.pred.class_index == want.classes[0].index
            assert abs(row.pred.score - want.classes[0].score) < 1e-5
            assert list(row.pred.top_indices) == [c.index for c in want.classes]
        else:
            assert row.pred.error == want.error
