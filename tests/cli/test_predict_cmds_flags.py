"""`pthkit predict` flags: inputs checked before loading, a concise --explain, --size parsed once (usage errors exit 2),
and the preprocessing and speed flags the issue names (`--crop-pct`, `--interpolation`,
`--channel-order bgr`, `--scale 255`, `--amp`, `--compile`) reach the pipeline: `--explain` credits each flag, the
run still predicts, and `--compile` really wraps the model with `torch.compile`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from pthkit.cli.main import main

ARCH = ["--arch", "timm:test_efficientnet", "--size", "64", "--mean", "imagenet", "--std", "imagenet"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "tiny.pth"
    torch.save(timm.create_model("test_efficientnet", num_classes=10).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("imgs") / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(path)
    return path


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_preprocessing_override_flags_are_applied_and_credited(capsys, weights, image):
    code, out, err = run(capsys, weights, image, *ARCH, "--crop-pct", "0.5", "--interpolation", "bilinear",
                         "--channel-order", "bgr", "--scale", "255", "--explain", "--json")
    assert code == 0
    assert json.loads(out.strip())["ok"] is True
    flat = " ".join(err.split())  # rich wraps long lines
    assert "128 px" in flat and "crop_pct 0.5" in flat and "bilinear" in flat  # floor(64 / 0.5)
    for flag in ("--crop-pct", "--interpolation", "--channel-order", "--scale"):
        assert f"{flag} flag" in flat, flag
    assert "RGB -> BGR" in flat and "255" in flat


def test_amp_bf16_and_compile_flags(capsys, weights, image, monkeypatch):
    compiled: list[object] = []

    def fake_compile(fn, *args, **kwargs):  # a real torch.compile needs a C++ toolchain and minutes on CPU
        compiled.append(fn)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    code, out, _ = run(capsys, weights, image, *ARCH, "--amp", "bf16", "--compile", "--json")
    assert code == 0 and json.loads(out.strip())["ok"] is True
    assert len(compiled) == 1
    code, _, err = run(capsys, weights, image, *ARCH, "--amp", "int8")
    assert code != 0 and "bf16 or fp16" in err


def test_an_empty_input_folder_is_refused_before_the_model_is_loaded(capsys, tmp_path):
    from pthkit.errors import InputNotFoundError

    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage.pth").write_bytes(b"not a weights file")  # loading it would fail with exit 5
    code, _, err = run(capsys, tmp_path / "garbage.pth", tmp_path / "empty")
    assert code == InputNotFoundError.exit_code
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("size", ["0", "a,b", "1,2,3", "-4"])
def test_a_bad_size_is_a_usage_error(capsys, weights, image, size):
    code, _, _ = run(capsys, weights, image, "--arch", "timm:test_efficientnet", "--size", size)
    assert code == 2


def test_explain_of_a_finetuned_bundle_is_a_short_summary(capsys, tmp_path, weights, image):
    """It used to print ~340 lines of raw config; now one line per fact."""
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks"))
    from _train_data import make_image_folder

    from pthkit.tasks.finetune import finetune

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = make_image_folder(tmp_path / "data", per_class=4, size=32)
        finetune(weights, data, tmp_path / "b", arch="timm:test_efficientnet", epochs=1, batch_size=4, size=32,
                 workers=0, progress=False)
    finally:
        torch.set_num_threads(threads)
    code, out, err = run(capsys, tmp_path / "b", image, "--explain", "--json")
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) <= 40, len(lines)
    flat = " ".join(err.split())
    assert "labels: 3" in flat and "key map:" in flat and "training: 1 epochs" in flat
    assert "classifier head: classifier: 256 → 10 replaced by 256 → 3" in flat
    assert "pretrained_cfg" not in flat and "load_report" not in flat  # no raw config
