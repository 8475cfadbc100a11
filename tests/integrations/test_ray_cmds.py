"""`pthkit predict … --engine ray`: the CLI prints (and writes) the rows local `pthkit predict` prints, and refuses
bad flags in one typed line before anything is loaded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pthkit.cli.main import main


def _run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def _same_row(mine: dict, theirs: dict) -> None:
    """Equal keys, path, ok, error, mode, labels and indices; scores within 1e-5."""
    assert set(mine) == set(theirs), (mine, theirs)
    for key in ("path", "ok", "error", "mode"):
        assert mine.get(key) == theirs.get(key), (key, mine, theirs)
    if theirs["ok"]:
        assert [(c["index"], c["label"]) for c in mine["classes"]] == [(c["index"], c["label"]) for c in theirs["classes"]]
        assert all(abs(a["score"] - b["score"]) <= 1e-5 for a, b in zip(mine["classes"], theirs["classes"]))


def test_ray_cli_rows_equal_local_predict(ray_cluster, image_folder: Path, small_classifier: Path,
                                          capsys, monkeypatch) -> None:
    monkeypatch.chdir(image_folder.parent)  # a relative folder: rows name the inputs as typed, as locally
    common = [small_classifier, image_folder.name, "--json", "--top-k", "3", "--device", "cpu", "--allow-failures"]
    code, out, _ = _run(capsys, *common)
    assert code == 0
    local = [json.loads(line) for line in out.splitlines()]
    assert len(local) == 120 and sum(not r["ok"] for r in local) >= 5
    assert local[0]["path"].startswith(image_folder.name + "/")

    progress = _record_progress(monkeypatch)
    code, out, err = _run(capsys, *common, "--engine", "ray", "--num-actors", "2", "--batch-size", "16")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]  # stdout holds the JSON lines and nothing else
    assert [r["path"] for r in rows] == [r["path"] for r in local]
    for mine, theirs in zip(rows, local):
        _same_row(mine, theirs)
    assert "120 images" in err and "failed: " in err
    assert progress == {"total": 120, "steps": 120}  # the bar (shown on a terminal) follows every row


def _record_progress(monkeypatch) -> dict[str, int]:
    """Record the progress bar the Ray CLI makes (its total, the steps it advances)."""
    import pthkit.engine.progress as progress_mod

    seen: dict[str, int] = {}
    real = progress_mod.progress_bar

    def recording(label: str, total: int, **options):
        bar = real(label, total, enabled=False)
        seen.update(total=total, steps=0)

        def advance(steps: float = 1) -> None:
            seen["steps"] += int(steps)

        bar.advance = advance  # type: ignore[method-assign]
        return bar

    monkeypatch.setattr(progress_mod, "progress_bar", recording)
    return seen


@pytest.mark.slow  # the API's write_rows is tested in the default suite (test_ray.py); this is the CLI's --out
def test_ray_cli_out_file_holds_local_predicts_rows(ray_cluster, image_folder: Path, small_classifier: Path,
                                                   tmp_path: Path, capsys, monkeypatch) -> None:
    import pyarrow.parquet as pq

    from pthkit.integrations import record_to_row

    monkeypatch.chdir(image_folder.parent)
    common = [small_classifier, image_folder.name, "--json", "--top-k", "3", "--device", "cpu", "--allow-failures"]
    code, out, _ = _run(capsys, *common)
    local = [json.loads(line) for line in out.splitlines()]
    target = tmp_path / "rows.parquet"
    target.write_bytes(b"an older file: replaced, as predict's other output files are")
    progress = _record_progress(monkeypatch)
    code, _, err = _run(capsys, *common[:2], "--top-k", "3", "--device", "cpu", "--engine", "ray", "--num-actors", "1",
                        "--out", target)
    assert progress == {"total": 120, "steps": 120}
    assert code == 1  # failed images and no --allow-failures: the exit code says so, the file is still written
    assert f"120 images, {sum(not r['ok'] for r in local)} failed" in err
    table = pq.read_table(target)
    assert table.num_rows == 120
    for record, theirs in zip(table.to_pylist(), local):
        _same_row(record_to_row(record), theirs)


@pytest.mark.slow
def test_ray_cli_table_model_equals_local(ray_cluster, tmp_path: Path, capsys, monkeypatch) -> None:
    import numpy as np
    import torch
    from torch import nn

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    Path("mlp.py").write_text("from torch import nn\nclass MLP(nn.Sequential):\n    def __init__(self):\n"
                              "        super().__init__(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))\n")
    torch.save(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).state_dict(), "mlp.pth")
    x = np.random.default_rng(0).normal(size=(40, 4))
    Path("rows.csv").write_text("a,b,c,d\n" + "".join(",".join(f"{v:.6f}" for v in r) + "\n" for r in x))
    common = ["mlp.pth", "rows.csv", "--arch", "mlp.py:MLP", "--json", "--device", "cpu"]
    code, out, err = _run(capsys, *common)
    assert code == 0, err
    local = [json.loads(line) for line in out.splitlines()]
    code, out, err = _run(capsys, *common, "--engine", "ray", "--num-actors", "1", "--batch-size", "16")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["input"] for r in rows] == [r["input"] for r in local] == [f"rows.csv:{i}" for i in range(1, 41)]
    assert np.allclose([r["outputs"] for r in rows], [r["outputs"] for r in local], atol=1e-5)


@pytest.mark.parametrize(("flags", "needle"), [
    (["--engine", "spark"], "--engine: received 'spark'"),
    (["--ray-address", "auto"], "--ray-address: received --ray-address with --engine local"),
    (["--out", "rows.parquet"], "--out: received --out with --engine local"),
    (["--engine", "ray", "--num-actors", "0"], "--num-actors: received 0"),
    (["--engine", "ray", "--out", "rows.txt"], "--out: received 'rows.txt'"),
    (["--engine", "ray", "--out", "rows.parquet", "--json"], "--out: received --out and --json"),
    (["--engine", "ray", "--features", "f.npy"], "--features: received --features with --engine ray"),
])
def test_ray_flags_refused_before_anything_loads(tmp_path: Path, capsys, flags: list[str], needle: str) -> None:
    (tmp_path / "a.jpg").write_bytes(b"not read: the flags are refused first")
    code, out, err = _run(capsys, tmp_path / "no-model.pth", tmp_path / "a.jpg", *flags)
    assert code != 0 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], err


def test_ray_out_never_overwrites_an_input(tmp_path: Path, capsys) -> None:
    table = tmp_path / "paths.csv"
    table.write_text("path\nx.jpg\n")
    code, _, err = _run(capsys, tmp_path / "m.pth", table, "--engine", "ray", "--out", table)
    assert code != 0 and "one of the inputs" in err and table.read_text() == "path\nx.jpg\n"


def test_missing_ray_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code, _, err = _run(capsys, tmp_path / "m.pth", tmp_path / "a.jpg", "--engine", "ray")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and "pip install 'pthkit[ray]'" in lines[0], err
