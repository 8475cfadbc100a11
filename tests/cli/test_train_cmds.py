"""pthkit finetune / evaluate / bundle through the CLI (in-process): JSON output, files, one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks"))
from _train_data import CLASSES, TINY_ARCH, make_image_folder, make_tiny_weights  # noqa: E402

from pthkit.cli.main import main  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_finetune_then_evaluate_then_predict_the_bundle(tmp_path, capsys):
    weights = make_tiny_weights(tmp_path / "w.pth")
    data = make_image_folder(tmp_path / "data", per_class=6, size=32)
    out = tmp_path / "run"
    code = main(["finetune", str(weights), str(data), "--out", str(out), "--arch", TINY_ARCH, "--epochs", "1",
                 "--batch-size", "4", "--size", "32", "--workers", "0", "--seed", "3", "--json"])
    assert code == 0
    result = _json(capsys)
    assert result["classes"] == list(CLASSES) and result["epochs_run"] == 1
    assert (out / "model.safetensors").is_file() and (out / "metrics.csv").is_file()

    code = main(["evaluate", str(out), str(data), "--json", "--out", str(tmp_path / "eval"), "--workers", "0"])
    assert code == 0
    report = _json(capsys)
    assert report["num_images"] == 18 and report["classes"] == list(CLASSES)
    assert 0.0 <= report["top1"] <= 1.0 and len(report["confusion"]) == 3
    assert (tmp_path / "eval" / "confusion_matrix.png").is_file()

    img = data / "b_green" / "000.png"
    code = main(["predict", str(out), str(img), "--json"])  # the bundle carries arch, preprocessing and labels
    assert code == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert any(name in json.dumps(row) for name in CLASSES)


def test_bundle_turns_a_weights_file_into_a_timm_loadable_folder(tmp_path, capsys):
    import timm

    weights = make_tiny_weights(tmp_path / "w.pth", num_classes=4)
    (tmp_path / "labels.txt").write_text("ant\nbee\ncat\ndog\n")
    out = tmp_path / "b"
    code = main(["bundle", str(weights), "--out", str(out), "--arch", TINY_ARCH, "--labels",
                 str(tmp_path / "labels.txt"), "--json"])
    assert code == 0
    cfg = _json(capsys)["config"]
    assert cfg["architecture"] == "test_efficientnet" and cfg["label_names"] == ["ant", "bee", "cat", "dog"]
    assert len(cfg["pthkit"]["source_sha256"]) == 64
    ref = timm.create_model("test_efficientnet", num_classes=4)
    ref.load_state_dict(torch.load(weights, weights_only=True))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        got = timm.create_model(f"local-dir:{out}", pretrained=True).eval()(x)
        assert torch.allclose(got, ref.eval()(x))


def test_errors_are_one_line_with_exit_code_1(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", per_class=2, size=16)
    assert main(["finetune", str(tmp_path / "missing.pth"), str(data), "--out", str(tmp_path / "o"),
                 "--arch", TINY_ARCH]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and "missing.pth" in err.splitlines()[0]
    (tmp_path / "notabundle").mkdir()
    assert main(["evaluate", str(tmp_path / "notabundle"), str(data)]) == 1
    assert capsys.readouterr().err.startswith("Error: ")
    assert main(["finetune", str(tmp_path / "x.pth"), str(data), "--out", str(tmp_path / "o"), "--resume"]) == 1
    assert "no checkpoint at" in capsys.readouterr().err


def test_bundle_refuses_size_zero_and_names_a_reinitialized_head(tmp_path, capsys):
    """--size 0 used to be ignored silently; a --labels count unlike the file's head re-initializes it: say so."""
    weights = make_tiny_weights(tmp_path / "w.pth", num_classes=4)
    assert main(["bundle", str(weights), "--out", str(tmp_path / "a"), "--arch", TINY_ARCH, "--size", "0"]) == 1
    assert "input_size" in capsys.readouterr().err
    (tmp_path / "labels.txt").write_text("ant\nbee\n")
    assert main(["bundle", str(weights), "--out", str(tmp_path / "b"), "--arch", TINY_ARCH, "--labels",
                 str(tmp_path / "labels.txt")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(2 classes)" in out and "re-initialized" in out and "random until fine-tuned" in out
