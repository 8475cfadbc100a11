"""pthkit finetune / evaluate / bundle through the CLI (in-process): JSON output, files, one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks"))
from _train_data import CLASSES, TINY_ARCH, make_image_folder, make_tiny_weights  # noqa: E402
from _tabular_model import MODEL_PY  # noqa: E402

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
    assert row["ok"] is True and [c["label"] for c in row["classes"]][:1] != []
    assert {c["label"] for c in row["classes"]} <= set(CLASSES)  # the bundle's own labels, not ImageNet's


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


def test_errors_are_one_line_with_the_exit_code_of_their_class(tmp_path, capsys):
    from pthkit.errors import InputNotFoundError, TrainingError

    data = make_image_folder(tmp_path / "data", per_class=2, size=16)
    assert main(["finetune", str(tmp_path / "missing.pth"), str(data), "--out", str(tmp_path / "o"),
                 "--arch", TINY_ARCH]) == InputNotFoundError.exit_code == 3
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and len(err.strip().splitlines()) == 1
    (tmp_path / "notabundle").mkdir()
    assert main(["evaluate", str(tmp_path / "notabundle"), str(data)]) in (3, 5)
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    weights = make_tiny_weights(tmp_path / "w.pth")
    assert main(["finetune", str(weights), str(data), "--out", str(tmp_path / "o"), "--arch", TINY_ARCH,
                 "--resume"]) == TrainingError.exit_code == 11


def test_bundle_refuses_size_zero_and_names_a_replaced_head(tmp_path, capsys):
    """--size 0 used to be ignored silently; a --labels count unlike the file's head replaces the head: say so."""
    import safetensors.torch

    weights = make_tiny_weights(tmp_path / "w.pth", num_classes=4)
    assert main(["bundle", str(weights), "--out", str(tmp_path / "a"), "--arch", TINY_ARCH, "--size", "0"]) == 2
    assert not (tmp_path / "a").exists()
    (tmp_path / "labels.txt").write_text("ant\nbee\n")
    assert main(["bundle", str(weights), "--out", str(tmp_path / "b"), "--arch", TINY_ARCH, "--labels",
                 str(tmp_path / "labels.txt"), "--json"]) == 0
    section = _json(capsys)["config"]["pthkit"]
    assert section["head_change"] == "classifier: 256 → 4 replaced by 256 → 2"
    written = safetensors.torch.load_file(str(tmp_path / "b" / "model.safetensors"))
    original = torch.load(weights, weights_only=True)
    assert written["classifier.weight"].shape == (2, 256)
    same = [k for k in original if not k.startswith("classifier.")]
    assert all(torch.equal(written[k], original[k]) for k in same)  # everything but the head comes from the file


def test_bundle_with_labels_and_a_wrong_arch_is_refused_and_writes_nothing(tmp_path, capsys):
    """It used to load 50 of 102 tensors, re-initialize the rest, print "Bundle written" and exit 0."""
    from pthkit.errors import LoadError

    weights = make_tiny_weights(tmp_path / "w.pth", num_classes=4)
    (tmp_path / "labels.txt").write_text("ant\nbee\ncat\n")
    code = main(["bundle", str(weights), "--out", str(tmp_path / "b"), "--arch", "timm:test_resnet", "--labels",
                 str(tmp_path / "labels.txt")])
    assert code == LoadError.exit_code == 7
    assert not (tmp_path / "b").exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_evaluate_takes_the_same_model_flags_as_predict(tmp_path, capsys):
    """--arch-kwargs, --select and the preprocessing overrides reach pthkit.open (they used to be missing)."""
    import pthkit.api as api

    seen: dict = {}
    real_open = api.open

    def spy(source, **kwargs):
        seen.update(kwargs)
        return real_open(source, **kwargs)

    weights = make_tiny_weights(tmp_path / "w.pth", num_classes=3)
    data = make_image_folder(tmp_path / "data", per_class=2, size=16)
    import unittest.mock

    with unittest.mock.patch.object(api, "open", spy):
        code = main(["evaluate", str(weights), str(data), "--arch", TINY_ARCH, "--arch-kwargs", "drop_rate=0.1",
                     "--select", "raw", "--size", "24,32", "--crop-pct", "1.0", "--mean", "imagenet", "--std",
                     "0.5,0.5,0.5", "--interpolation", "bilinear", "--workers", "0", "--json"])
    assert code == 0, capsys.readouterr().err
    report = _json(capsys)
    assert report["num_images"] == 6
    assert seen["arch_kwargs"] == {"drop_rate": 0.1} and seen["select"] == "raw"
    assert seen["overrides"]["size"] == (24, 32) and seen["overrides"]["crop_pct"] == 1.0


# --- flags reach the API unchanged (the training behaviour behind each is tested in tests/tasks/test_finetune.py) ---


class _Result:
    def to_dict(self) -> dict[str, Any]:
        return {"ok": True}

    def __str__(self) -> str:
        return "trained"


def test_finetune_flags_reach_the_api(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch):
    import pthkit.tasks.finetune as ft

    seen: dict[str, Any] = {}

    def fake(weights, data, out, **kwargs):
        seen.update(kwargs, weights=weights, data=data, out=out)
        return _Result()

    monkeypatch.setattr(ft, "finetune", fake)
    data = tmp_path / "data"
    data.mkdir()
    code = main(["finetune", "w.pth", str(data), "--out", str(tmp_path / "run"), "--freeze-epochs", "2",
                 "--accum-steps", "3", "--class-weights", "balanced", "--amp", "bf16", "--patience", "4",
                 "--save-every-steps", "5", "--resume", "--seed", "7", "--val-split", "0.3", "--monitor", "val_loss",
                 "--epochs", "6", "--no-progress"])
    assert code == 0, capsys.readouterr()
    assert "trained" in capsys.readouterr().out
    expected = {"freeze_epochs": 2, "accum_steps": 3, "class_weights": "balanced", "amp": "bf16", "patience": 4,
                "save_every_steps": 5, "resume": True, "seed": 7, "val_split": 0.3, "monitor": "val_loss",
                "epochs": 6, "progress": False}
    assert {k: seen[k] for k in expected} == expected
    # options not given reach the API as None, so a resume can tell "not given" from "given the default"
    assert seen["lr"] is None and seen["batch_size"] is None and seen["keep_checkpoint"] is False
    assert Path(seen["out"]) == tmp_path / "run"


def test_bundle_of_a_user_class_without_num_classes_records_and_rebuilds_its_new_head(tmp_path, capsys):
    """The document's custom model: its head is found by structure, replaced for 3 labels, and rebuilt on open."""
    import pthkit

    (tmp_path / "my_model.py").write_text(MODEL_PY)
    spec = f"{tmp_path / 'my_model.py'}:MyModel"
    torch.manual_seed(0)
    state = {"layer1.weight": torch.randn(50, 10), "layer1.bias": torch.randn(50),
             "layer2.weight": torch.randn(2, 50), "layer2.bias": torch.randn(2)}
    torch.save(state, tmp_path / "w.pth")
    (tmp_path / "labels.txt").write_text("x\ny\nz\n")
    code = main(["bundle", str(tmp_path / "w.pth"), "--out", str(tmp_path / "b"), "--arch", spec, "--labels",
                 str(tmp_path / "labels.txt"), "--json"])
    assert code == 0, capsys.readouterr().err
    section = _json(capsys)["config"]["pthkit"]
    assert section["head_change"] == "layer2: 50 → 2 replaced by 50 → 3"
    assert section["head"]["out_features"] == 3 and "num_classes" not in section["arch_kwargs"]
    model = pthkit.open(tmp_path / "b", arch=spec, device="cpu")
    assert model.labels == ["x", "y", "z"] and model.module is not None
    assert torch.equal(model.module.layer1.weight, state["layer1.weight"])
    assert model.module(torch.randn(4, 10)).shape == (4, 3)


def test_the_torchrun_entry_maps_errors_like_the_console_script(tmp_path):
    """`python -m pthkit.cli.train_cmds` (what torchrun runs) used to map only pthkit errors, and to its own codes."""
    import subprocess

    data = make_image_folder(tmp_path / "data", per_class=2, size=16)
    base = [sys.executable, "-m", "pthkit.cli.train_cmds", "finetune"]
    missing = subprocess.run([*base, str(tmp_path / "missing.pth"), str(data), "--out", str(tmp_path / "o")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 3 and len(missing.stderr.strip().splitlines()) == 1
    usage = subprocess.run([*base, "w.pth", str(data), "--out", str(tmp_path / "o"), "--size", "0"],
                           capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2
