"""The README's second example through the CLI: a user module on tables (predict, finetune --target, evaluate,
bundle, identify), with numbers compared to model(x) and every refusal's exit code."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _tabular_model import NAMES, single_thread, write_model
from pthkit.cli.main import main


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def ex(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("ex")
    arch, weights, model = write_model(root, data_parallel=True)
    x = np.random.default_rng(0).normal(size=(30, 10)).astype(np.float32)
    with open(root / "rows.csv", "w") as fh:
        fh.write(",".join(NAMES) + "\n")
        np.savetxt(fh, x, delimiter=",", fmt="%.9g")
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    return {"root": root, "arch": arch, "weights": str(weights),
            "rows": str(root / "rows.csv"), "x": x, "expected": expected}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_json_lines_equal_model_of_x(ex: dict, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["predict", ex["weights"], ex["rows"], "--arch", ex["arch"], "--json"], capsys)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[16]["input"] == f"{ex['rows']}:17"
    np.testing.assert_allclose([r["outputs"] for r in rows], ex["expected"], atol=1e-5)


def test_predict_csv_and_save_outputs(ex: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["predict", ex["weights"], ex["rows"], "--arch", ex["arch"], "--csv"], capsys)
    assert code == 0
    table = list(csv.reader(io.StringIO(out)))
    assert table[0] == ["input", "ok", "error", "output_0", "output_1"]
    np.testing.assert_allclose([[float(v) for v in r[3:]] for r in table[1:]], ex["expected"], atol=1e-5)
    target = tmp_path / "out.npy"
    code, _, _ = _run(["predict", ex["weights"], ex["rows"], "--arch", ex["arch"], "--save-outputs", str(target)],
                      capsys)
    assert code == 0
    np.testing.assert_allclose(np.load(target), ex["expected"], atol=1e-5)


def test_predict_reads_csv_from_stdin(ex: dict, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data = Path(ex["rows"]).read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, _ = _run(["predict", ex["weights"], "-", "--arch", ex["arch"], "--json"], capsys)
    assert code == 0
    np.testing.assert_allclose([json.loads(line)["outputs"] for line in out.splitlines()], ex["expected"], atol=1e-5)


def test_predict_classify_and_regress_flags(ex: dict, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("no\nyes\n")
    code, out, _ = _run(["predict", ex["weights"], ex["rows"], "--arch", ex["arch"], "--labels", str(labels),
                         "--json", "--top-k", "1"], capsys)
    assert code == 0
    first = json.loads(out.splitlines()[0])
    assert first["classes"][0]["label"] == ["no", "yes"][int(np.argmax(ex["expected"][0]))]
    code, out, _ = _run(["predict", ex["weights"], ex["rows"], "--arch", ex["arch"], "--task", "regress",
                         "--output-names", "a,b", "--json"], capsys)
    assert code == 0
    assert json.loads(out.splitlines()[0])["outputs"] == pytest.approx(
        {"a": ex["expected"][0, 0], "b": ex["expected"][0, 1]}, abs=1e-5)


def test_refusals_have_their_exit_codes(ex: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wide = tmp_path / "wide.csv"
    np.savetxt(wide, np.zeros((3, 12)), delimiter=",")
    code, _, err = _run(["predict", ex["weights"], str(wide), "--arch", ex["arch"]], capsys)
    assert code == 8 and "takes 10 features" in err and "12 columns" in err
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(NAMES) + "\n" + ",".join(["1"] * 9 + ["x"]) + "\n")
    code, _, err = _run(["predict", ex["weights"], str(bad), "--arch", ex["arch"]], capsys)
    assert code == 8 and "row 1" in err and "'f9'" in err
    nan = tmp_path / "nan.csv"
    nan.write_text(",".join(NAMES) + "\n" + ",".join(["1"] * 9 + ["nan"]) + "\n")
    assert _run(["predict", ex["weights"], str(nan), "--arch", ex["arch"]], capsys)[0] == 8
    assert _run(["predict", ex["weights"], str(nan), "--arch", ex["arch"], "--allow-nan", "--json"], capsys)[0] == 0
    from PIL import Image

    png = tmp_path / "a.png"
    Image.new("RGB", (16, 16)).save(png)
    code, _, err = _run(["predict", ex["weights"], str(png), "--arch", ex["arch"]], capsys)
    assert code == 8 and "an image" in err


def test_table_given_to_an_image_model_is_refused(ex: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import timm

    torch.manual_seed(0)
    weights = tmp_path / "tiny.pth"
    torch.save(timm.create_model("test_resnet", num_classes=4).state_dict(), weights)
    code, _, err = _run(["predict", str(weights), ex["rows"], "--arch", "timm:test_resnet"], capsys)
    assert code == 8 and "image model" in err


def test_finetune_target_then_predict_and_evaluate_the_bundle(ex: dict, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 240)
    x = rng.normal(size=(3, 10))[y] * 3 + rng.normal(size=(240, 10))
    data = tmp_path / "train.csv"
    with open(data, "w") as fh:
        fh.write(",".join([*NAMES, "kind"]) + "\n")
        for r, t in zip(x, y):
            fh.write(",".join(f"{v:.6f}" for v in r) + f",{'abc'[t]}\n")
    out = tmp_path / "run"
    code, stdout, _ = _run(["finetune", ex["weights"], str(data), "--target", "kind", "--arch", ex["arch"], "--out",
                            str(out), "--epochs", "30", "--json"], capsys)
    assert code == 0
    result = json.loads(stdout)
    assert result["head_change"] == "layer2: 50 → 2 replaced by 50 → 3" and result["best"]["val_acc"] >= 0.85
    config = json.loads((out / "config.json").read_text())
    assert config["pthkit"]["input_spec"]["feature_names"] == NAMES
    assert not {"mean", "std", "input_size"} & set(config["pthkit"]["preprocess"])  # no image preprocessing
    code, stdout, _ = _run(["predict", str(out), str(data), "--arch", ex["arch"], "--json", "--top-k", "1"], capsys)
    assert code == 0
    predicted = [json.loads(line)["classes"][0]["label"] for line in stdout.splitlines()]
    assert np.mean([p == "abc"[t] for p, t in zip(predicted, y)]) >= 0.85
    code, stdout, _ = _run(["evaluate", str(out), str(data), "--arch", ex["arch"], "--json"], capsys)
    assert code == 0
    assert json.loads(stdout)["top1"] == pytest.approx(np.mean([p == "abc"[t] for p, t in zip(predicted, y)]))


def test_evaluate_regression_reports_mae_rmse_r2(ex: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "reg.csv"
    target = ex["expected"][:, 0] + 0.1
    with open(data, "w") as fh:
        fh.write(",".join([*NAMES, "y"]) + "\n")
        for r, t in zip(ex["x"], target):
            fh.write(",".join(f"{v:.9g}" for v in r) + f",{t:.9g}\n")
    out = tmp_path / "b"
    assert _run(["bundle", ex["weights"], "--arch", ex["arch"], "--out", str(out)], capsys)[0] == 0
    spec = json.loads((out / "config.json").read_text())["pthkit"]["input_spec"]
    assert spec["kind"] == "features" and spec["shape"] == [10]
    code, stdout, _ = _run(["evaluate", ex["weights"], str(data), "--arch", ex["arch"], "--target", "y",
                            "--columns", ",".join(NAMES), "--json"], capsys)
    assert code == 8  # two outputs for one target column: refused
    one_arch, one_weights, m1 = write_model(tmp_path / "one", seed=2, out_features=1)
    code, stdout, _ = _run(["evaluate", str(one_weights), str(data), "--arch", one_arch,
                            "--target", "y", "--json"], capsys)
    assert code == 0
    report = json.loads(stdout)
    with torch.no_grad():
        pred = m1(torch.from_numpy(ex["x"])).double().numpy()[:, 0]
    err = pred - target.astype(np.float64)
    assert report["mae"] == pytest.approx(np.abs(err).mean(), rel=1e-4)
    assert report["rmse"] == pytest.approx(np.sqrt((err**2).mean()), rel=1e-4)
    assert report["r2"] == pytest.approx(1 - (err**2).sum() / ((target - target.mean()) ** 2).sum(), rel=1e-3)


def test_identify_reports_no_num_classes_for_a_class_without_it(ex: dict, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["identify", ex["weights"], "--arch", ex["arch"], "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    first = data["candidates"][0] if "candidates" in data else data
    assert "num_classes" not in first.get("kwargs", {})


def test_predict_plain_lines_and_save_outputs_with_csv(ex: dict, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["predict", ex["weights"], ex["rows"], "--arch", ex["arch"]], capsys)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == len(ex["x"]) and lines[16].startswith(f"{ex['rows']}:17: output_0=")
    values = [[float(kv.split("=")[1]) for kv in line.split(": ", 1)[1].split(", ")] for line in lines]
    np.testing.assert_allclose(values, ex["expected"], atol=1e-5)
    target = tmp_path / "both.safetensors"
    code, out, _ = _run(["predict", ex["weights"], ex["rows"], "--arch", ex["arch"], "--csv", "--save-outputs",
                         str(target)], capsys)
    assert code == 0 and len(out.splitlines()) == len(ex["x"]) + 1
    from safetensors.numpy import load_file

    np.testing.assert_allclose(load_file(str(target))["output"], ex["expected"], atol=1e-5)


def test_save_outputs_of_an_empty_table_is_refused(ex: dict, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(NAMES) + "\n")
    code, _, err = _run(["predict", ex["weights"], str(empty), "--arch", ex["arch"], "--save-outputs",
                         str(tmp_path / "o.npy")], capsys)
    assert code == 8 and "no successful rows" in err and not (tmp_path / "o.npy").exists()


def test_backend_onnxruntime_runs_tables_too(ex: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    monkeypatch.setenv("PTHKIT_CACHE_DIR", str(tmp_path / "cache"))
    code, out, err = _run(["predict", ex["weights"], ex["rows"], "--arch", ex["arch"], "--backend", "onnxruntime",
                           "--json", "--explain"], capsys)
    assert code == 0 and "onnxruntime" in err
    np.testing.assert_allclose([json.loads(line)["outputs"] for line in out.splitlines()], ex["expected"], atol=1e-5)
