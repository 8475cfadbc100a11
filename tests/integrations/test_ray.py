"""--engine ray gives the same rows as local predict, row for row (labels, indices; scores within 1e-5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import pthkit
from pthkit.integrations import ROW_COLUMNS, record_to_row


def _local_rows(model: Path, folder: Path) -> dict[str, dict]:
    handle = pthkit.open(model, device="cpu")
    paths = sorted(str(p) for p in folder.iterdir())
    return {row.path: row.to_dict() for row in handle.predict(paths, top_k=3, workers=0)}


@pytest.mark.slow  # the default suite proves the same through the CLI (test_ray_cmds), which runs predict_dataset
def test_ray_predict_equals_local_row_for_row(ray_cluster, image_folder: Path, small_classifier: Path) -> None:
    from pthkit.integrations.ray import predict_dataset, read_inputs

    ds = read_inputs([str(image_folder)])
    out = predict_dataset(ds, small_classifier, num_actors=2, batch_size=16, top_k=3,
                          open_options={"device": "cpu"})
    records = out.take_all()
    assert len(records) == 120
    assert set(records[0]) == set(ROW_COLUMNS)
    local = _local_rows(small_classifier, image_folder)
    assert sum(not r["ok"] for r in records) == sum(not r["ok"] for r in local.values()) >= 5
    for rec in records:
        mine = record_to_row(rec)
        theirs = local[rec["path"]]
        assert mine["ok"] == theirs["ok"], rec["path"]
        if not theirs["ok"]:
            assert mine["error"] == theirs["error"]
            continue
        assert [c["label"] for c in mine["classes"]] == [c["label"] for c in theirs["classes"]]
        assert [c["index"] for c in mine["classes"]] == [c["index"] for c in theirs["classes"]]
        for a, b in zip(mine["classes"], theirs["classes"]):
            assert abs(a["score"] - b["score"]) <= 1e-5


def test_ray_rows_keep_input_order_and_write_files(ray_cluster, image_folder: Path, small_classifier: Path,
                                                   tmp_path: Path) -> None:
    from pthkit.integrations.ray import predict_dataset, read_inputs, write_rows

    paths = sorted(str(p) for p in image_folder.iterdir())[:20]
    ds = read_inputs(paths)
    out = predict_dataset(ds, small_classifier, num_actors=1, batch_size=8, top_k=2,
                          open_options={"device": "cpu"}).materialize()  # run once, written twice
    target, total, failed = write_rows(out, tmp_path / "rows.jsonl")
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert total == 20 and len(lines) == 20 and [r["path"] for r in lines] == paths
    assert failed == sum(not r["ok"] for r in lines)
    pq, n, _ = write_rows(out, tmp_path / "rows.parquet")
    import pyarrow.parquet as parquet

    assert parquet.read_table(pq).num_rows == n == 20


def test_ray_table_model(ray_cluster, tmp_path: Path) -> None:
    import numpy as np
    import ray.data
    import torch
    from torch import nn

    from pthkit.integrations.ray import predict_dataset

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    code = tmp_path / "mlp.py"
    code.write_text("from torch import nn\nclass MLP(nn.Sequential):\n    def __init__(self):\n"
                    "        super().__init__(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))\n")
    weights = tmp_path / "mlp.pth"
    torch.save(net.state_dict(), weights)
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    ds = ray.data.from_items([{f"f{j}": float(x[i, j]) for j in range(4)} for i in range(50)])
    out = predict_dataset(ds, weights, num_actors=1, batch_size=16, columns=["f0", "f1", "f2", "f3"],
                          open_options={"arch": f"{code}:MLP", "device": "cpu"})
    got = np.asarray([r["outputs"] for r in out.take_all()], dtype=np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert got.shape == (50, 3)
    assert np.allclose(got, want, atol=1e-5)


def test_bad_options_fail_before_scheduling(ray_cluster, small_classifier: Path) -> None:
    import ray.data

    from pthkit.errors import PthkitError
    from pthkit.integrations.ray import predict_dataset

    ds = ray.data.from_items([{"path": "x.jpg"}])
    with pytest.raises(PthkitError):
        predict_dataset(ds, small_classifier, mode="probabilities")
    with pytest.raises(PthkitError):
        predict_dataset(ds, small_classifier, batch_size=0)
