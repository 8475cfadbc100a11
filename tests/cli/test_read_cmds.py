"""`pthkit inspect` and `pthkit scan` end to end on files written here (and the real EfficientNet-Lite0 .pth)."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from pthkit.cli import main as main_mod
from pthkit.cli._output import console

HOSTILE_PY = Path(__file__).resolve().parents[1] / "checkpoint" / "hostile.py"


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    # Rich wraps at 80 columns when not on a terminal; tests read whole lines.
    monkeypatch.setattr(console, "width", 250)
    monkeypatch.delenv("PTHKIT_DEBUG", raising=False)


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main_mod.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def resnet18_sd():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=50).state_dict()


@pytest.fixture()
def ddp_ckpt(tmp_path, resnet18_sd):
    """A training checkpoint: DataParallel prefixes, an EMA copy, optimizer state and the epoch."""
    path = tmp_path / "train.pth"
    ema = {k: v.clone() + 1 if v.is_floating_point() else v.clone() for k, v in resnet18_sd.items()}
    torch.save(
        {
            "epoch": 7,
            "state_dict": {f"module.{k}": v for k, v in resnet18_sd.items()},
            "state_dict_ema": {f"module.{k}": v for k, v in ema.items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9}]},
        },
        path,
    )
    return path


# --- inspect ---------------------------------------------------------------------------------------------------------


def test_inspect_real_lite0(capsys, lite0_path):
    code, out, err = run(capsys, "inspect", lite0_path)
    assert code == 0, err
    assert "296 (" in out
    assert "4,652,008 (4,694,024 values counting buffers" in out
    assert "_fc: 1280 → 1000" in out
    assert "12..14 × 3" in out
    assert "safe" in out


def test_inspect_real_lite0_json(capsys, lite0_path):
    code, out, _ = run(capsys, "inspect", lite0_path, "--json")
    assert code == 0
    data = json.loads(out)  # one JSON object, nothing else on stdout
    assert data["summary"]["tensors"] == 296
    assert data["summary"]["parameters"] == 4_652_008
    assert data["summary"]["values"] == 4_694_024
    assert data["summary"]["head"]["text"] == "_fc: 1280 → 1000"
    assert data["verdict"] == "safe"
    assert "tensors" not in data  # per-tensor listing only with --tensors

    code, out, _ = run(capsys, "inspect", lite0_path, "--json", "--tensors")
    data = json.loads(out)
    assert len(data["tensors"]) == 296
    assert data["tensors"]["_fc.weight"] == {"shape": [1000, 1280], "dtype": "float32"}


def test_inspect_tensors_table(capsys, lite0_path):
    code, out, _ = run(capsys, "inspect", lite0_path, "--tensors")
    assert code == 0
    assert "296 tensors" in out
    assert "_blocks.15._bn2.num_batches_tracked" in out and "counter" in out
    assert "[1000, 1280]" in out


def test_inspect_training_checkpoint(capsys, ddp_ckpt):
    code, out, err = run(capsys, "inspect", ddp_ckpt, "--select", "raw")
    assert code == 0, err
    assert "state_dict" in out and "'module.'" in out  # where the weights were, prefix removed and said
    assert "layer1.0..1 × 2" in out
    assert "fc: 512 → 50" in out
    assert "epoch: 7" in out
    assert "optimizer" in out

    code, out, _ = run(capsys, "inspect", ddp_ckpt, "--json", "--select", "raw")
    data = json.loads(out)
    assert data["source"] == ["state_dict"] and data["prefixes_removed"] == ["module."]
    assert "state_dict_ema" in data["summary"]["alternatives"]
    assert data["summary"]["alternatives"]["state_dict_ema"]["same_structure"] is True

    code, out, _ = run(capsys, "inspect", ddp_ckpt, "--json", "--select", "ema")
    assert json.loads(out)["source"] == ["state_dict_ema"]


def test_inspect_no_strip_prefix(capsys, ddp_ckpt):
    code, out, _ = run(capsys, "inspect", ddp_ckpt, "--json", "--tensors", "--select", "raw", "--no-strip-prefix")
    assert code == 0
    data = json.loads(out)
    assert data["prefixes_removed"] == []
    assert all(k.startswith("module.") for k in data["tensors"])


def test_inspect_safetensors_metadata(capsys, tmp_path, resnet18_sd):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in resnet18_sd.items()}, str(path), metadata={"arch": "resnet18"})
    code, out, _ = run(capsys, "inspect", path)
    assert code == 0
    assert "safetensors" in out and "arch: resnet18" in out and "fc: 512 → 50" in out


def test_inspect_plain_data_classes_reported(capsys, tmp_path, resnet18_sd):
    import numpy as np

    path = tmp_path / "with_args.pth"
    args = argparse.Namespace(arch="resnet18", lr=0.1)
    torch.save({"model": resnet18_sd, "args": args, "best_acc": np.float64(0.75)}, path)
    code, out, err = run(capsys, "inspect", path)
    assert code == 0, err
    assert "argparse.Namespace" in out  # named, not run
    assert "fc: 512 → 50" in out


def test_inspect_depth_limits_tree(capsys, lite0_path):
    code, out, _ = run(capsys, "inspect", lite0_path, "--depth", "1")
    assert code == 0
    tree_lines = [line for line in out.splitlines() if "──" in line]
    assert any("_blocks" in line for line in tree_lines)
    assert not any("_expand_conv" in line for line in tree_lines)
    code, out, _ = run(capsys, "inspect", lite0_path)
    assert any("_expand_conv" in line for line in out.splitlines() if "──" in line)


# --- scan ------------------------------------------------------------------------------------------------------------


def test_scan_safe_files_exit_zero(capsys, lite0_path, tmp_path, resnet18_sd):
    plain = tmp_path / "plain.pth"
    torch.save(resnet18_sd, plain)
    code, out, _ = run(capsys, "scan", lite0_path, plain)
    assert code == 0
    assert out.count("safe") >= 2 and "All 2 file(s) safe." in out

    code, out, _ = run(capsys, "scan", plain, "--json")
    data = json.loads(out)
    assert data["safe"] is True and data["files"][0]["verdict"] == "safe"


def test_scan_unreadable_files_are_rows_and_scanning_goes_on(capsys, tmp_path, lite0_path):
    png = tmp_path / "photo.pth"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    missing = tmp_path / "missing.pth"
    code, out, err = run(capsys, "scan", png, missing, lite0_path, "--json")
    assert code == 1
    data = json.loads(out)
    verdicts = [r["verdict"] for r in data["files"]]
    assert verdicts[0] != "safe"  # not a weights file: never safe
    assert verdicts[1:] == ["unreadable", "safe"]
    assert "no such file" in data["files"][1]["error"] and "\n" not in data["files"][1]["error"]
    assert data["safe"] is False
    assert err == ""

    code, out, _ = run(capsys, "scan", png, missing, lite0_path)
    assert code == 1 and "unreadable" in out and "2 of 3 file(s) not safe." in out


def test_scan_does_not_render_emoji_codes(capsys, tmp_path):
    # rich would turn ':x:' (as in /etc/passwd lines quoted by an error) into an emoji
    path = tmp_path / "passwd.pth"
    path.write_text("root:x:0:0:root:/root:/bin/bash\n")
    code, out, _ = run(capsys, "scan", path)
    assert code == 1
    assert "❌" not in out


def test_scan_needs_trust_for_unknown_class(capsys, tmp_path, resnet18_sd):
    path = tmp_path / "with_args.pth"
    torch.save({"model": resnet18_sd, "args": argparse.Namespace(arch="resnet18")}, path)
    code, out, _ = run(capsys, "scan", path, "--json")
    assert code == 1
    row = json.loads(out)["files"][0]
    assert row["verdict"] != "safe"
    assert "argparse.Namespace" in row["globals"]


# --- hostile files: no payload ever runs; scan flags every one --------------------------------------------------------


def _hostile_module():
    if not HOSTILE_PY.exists():  # written by the checkpoint reader's tests (tests/checkpoint/hostile.py)
        pytest.fail(f"{HOSTILE_PY} is missing: the hostile-file builders are part of the checkpoint tests")
    spec = importlib.util.spec_from_file_location("pthkit_tests_hostile", HOSTILE_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hostile_builders():
    try:
        return list(_hostile_module().ALL_HOSTILE)
    except BaseException:  # reported by the test below instead of breaking collection
        return []


def test_hostile_builders_available():
    assert len(_hostile_module().ALL_HOSTILE) >= 5


@pytest.mark.parametrize("make", _hostile_builders(), ids=lambda f: getattr(f, "__name__", str(f)))
def test_hostile_file_never_runs_and_scan_flags_it(make, tmp_path, capsys):
    path, marker = make(tmp_path)
    assert not Path(marker).exists()

    code, out, err = run(capsys, "inspect", path)
    assert not Path(marker).exists(), "inspect ran the payload"
    assert "Traceback" not in out + err
    if code != 0:  # refusing is fine, as one typed line
        assert len(err.splitlines()) == 1 and err.startswith("Error: ") and "unexpected" not in err
    else:
        assert "safe: tensors and plain data only" not in out  # never called safe

    code, out, err = run(capsys, "inspect", path, "--json")
    assert not Path(marker).exists()

    code, out, err = run(capsys, "scan", path, "--json")
    assert not Path(marker).exists(), "scan ran the payload"
    assert code == 1
    row = json.loads(out)["files"][0]
    assert row["verdict"] == "malicious-looking"  # every builder's payload calls os.system / exec / importlib
    assert any(f["severity"] == "danger" for f in row["findings"])

    code, out, err = run(capsys, "scan", path)
    assert not Path(marker).exists()
    assert code == 1 and "malicious-looking" in out and "1 of 1 file(s) not safe." in out


def test_scan_keeps_going_after_an_internal_error(capsys, tmp_path, lite0_path, monkeypatch):
    import pthkit.checkpoint

    real_scan = pthkit.checkpoint.scan_file

    def flaky(path, **kwargs):
        if Path(path).name == "boom.pth":
            raise RuntimeError("parser\nexploded")
        return real_scan(path, **kwargs)

    monkeypatch.setattr(pthkit.checkpoint, "scan_file", flaky)
    boom = tmp_path / "boom.pth"
    boom.write_bytes(b"x")
    code, out, _ = run(capsys, "scan", boom, lite0_path, "--json")
    rows = json.loads(out)["files"]
    assert code == 1
    assert rows[0]["verdict"] == "unreadable" and rows[0]["error"] == "unexpected RuntimeError: parser exploded"
    assert rows[1]["verdict"] == "safe"


def test_inspect_trust_warns(capsys, lite0_path):
    code, out, err = run(capsys, "inspect", lite0_path, "--trust", "--json")
    assert code == 0
    assert json.loads(out)["summary"]["parameters"] == 4_652_008
    assert err.startswith("Warning: --trust: code inside") and len(err.splitlines()) == 1
