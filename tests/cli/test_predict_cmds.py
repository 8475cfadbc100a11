"""`pthkit predict`: table / --json lines / --csv / --logits / --multi-label / --features / --labels / --explain,
failures reported with a summary and an exit code, and the acceptance run on the real efficientnet-lite0 file."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from pthkit.cli.main import main
from pthkit.errors import PreprocessError

ARCH = ["--arch", "timm:test_efficientnet", "--size", "64", "--mean", "imagenet", "--std", "imagenet"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=10)
    path = tmp_path_factory.mktemp("w") / "tiny.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(root / f"ok{i}.png")
    (root / "zbad.jpg").write_text("this is not a picture")
    return root


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_table_summary_and_exit_code(capsys, weights, folder):
    code, out, err = run(capsys, weights, folder, *ARCH, "--top-k", "2")
    assert code == 1  # one input failed
    for name in ("ok0.png", "ok1.png", "ok2.png", "zbad.jpg"):
        assert name in out
    assert "failed" in out and "class " in out
    assert "4 images, 1 failed" in err
    code, _, err = run(capsys, weights, folder, *ARCH, "--allow-failures")
    assert code == 0 and "4 images, 1 failed" in err


def test_json_lines_one_per_input(capsys, weights, folder):
    code, out, err = run(capsys, weights, folder, *ARCH, "--json", "--top-k", "3", "--allow-failures")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [Path(r["path"]).name for r in rows] == ["ok0.png", "ok1.png", "ok2.png", "zbad.jpg"]
    assert all(len(r["classes"]) == 3 for r in rows[:3])
    assert rows[3]["ok"] is False and "not an image" in rows[3]["error"]
    assert "failed:" in err and "zbad.jpg" in err  # failures named on stderr too


def test_csv(capsys, weights, folder):
    code, out, _ = run(capsys, weights, folder, *ARCH, "--csv", "--top-k", "2")
    assert code == 1
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["path", "ok", "error", "label_1", "index_1", "score_1", "label_2", "index_2", "score_2"]
    assert [r["ok"] for r in rows] == ["1", "1", "1", "0"]
    assert 0.0 <= float(rows[0]["score_1"]) <= 1.0 and float(rows[0]["score_1"]) >= float(rows[0]["score_2"])


def test_logits_json_and_csv(capsys, weights, folder):
    _, out, _ = run(capsys, weights, folder / "ok0.png", *ARCH, "--logits", "--json")
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["mode"] == "logits" and len(row["logits"]) == 10
    assert row["classes"][0]["score"] == pytest.approx(max(row["logits"]), abs=1e-5)
    _, out, _ = run(capsys, weights, folder, *ARCH, "--logits", "--csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0][:4] == ["path", "ok", "error", "logit_0"] and len(rows[0]) == 13 and len(rows) == 5


def test_multi_label(capsys, weights, folder):
    _, out, _ = run(capsys, weights, folder / "ok1.png", *ARCH, "--multi-label", "--threshold", "0", "--json")
    row = json.loads(out.splitlines()[0])
    assert row["mode"] == "sigmoid" and len(row["classes"]) == 10
    _, out, _ = run(capsys, weights, folder / "ok1.png", *ARCH, "--multi-label", "--threshold", "1.0")
    assert "no label over the threshold" in out


@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_features_files(capsys, weights, folder, tmp_path: Path, suffix: str):
    out_file = tmp_path / f"emb{suffix}"
    code, _, err = run(capsys, weights, folder, *ARCH, "--features", out_file, "--allow-failures")
    assert code == 0 and out_file.exists() and "features: 3 rows" in err
    if suffix == ".npy":
        arr = np.load(out_file)
        assert (tmp_path / "emb.paths.txt").read_text().count("\n") == 3
    else:
        from safetensors.numpy import load_file

        arr = load_file(str(out_file))["features"]
    assert arr.shape[0] == 3 and arr.ndim == 2 and np.isfinite(arr).all()


def test_labels_file(capsys, weights, folder, tmp_path: Path):
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"thing{i}\n" for i in range(10)))
    _, out, _ = run(capsys, weights, folder / "ok2.png", *ARCH, "--labels", labels, "--json")
    row = json.loads(out.splitlines()[0])
    assert all(c["label"] == f"thing{c['index']}" for c in row["classes"])


def test_explain_goes_to_stderr_with_json(capsys, weights, folder):
    code, out, err = run(capsys, weights, folder / "ok0.png", *ARCH, "--explain", "--json")
    assert code == 0
    json.loads(out.strip())  # stdout is only the JSON line
    assert "preprocessing:" in err and "--mean flag" in err and "test_efficientnet" in err


def test_bad_flag_combinations(capsys, weights, folder):
    code, _, err = run(capsys, weights, folder, *ARCH, "--json", "--csv")
    assert code == PreprocessError.exit_code and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, weights, folder, *ARCH, "--features", "emb.txt")
    assert code == PreprocessError.exit_code and len(err.strip().splitlines()) == 1


def test_bundle_folder_needs_no_flags(capsys, folder, tmp_path: Path):
    from pthkit.bundle import save_bundle
    from pthkit.preprocess import Preprocess

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=3).eval()
    names = ["red", "green", "blue"]
    save_bundle(model, tmp_path / "bundle", architecture="timm:test_efficientnet",
                preprocess=Preprocess(input_size=(3, 64, 64), label_names=names), label_names=names)
    code, out, _ = run(capsys, tmp_path / "bundle", folder / "ok0.png", "--json")
    assert code == 0
    row = json.loads(out.splitlines()[0])
    assert {c["label"] for c in row["classes"]} <= set(names) and len(row["classes"]) == 3


def test_acceptance_efficientnet_lite0_no_flags(capsys, lite0_path):
    """The mission: a bare ImageNet .pth, no --arch, no preprocessing flags, right labels on the sample photos."""
    from pthkit.samples import photo

    inputs = [photo(n) for n in ("coffee.png", "china.jpg", "rocket.jpg", "chelsea.png")]
    code, out, err = run(capsys, lite0_path, *inputs, "--json", "--top-k", "3")
    assert code == 0, err
    top1 = {Path(r["path"]).name: r["classes"][0]["label"] for r in map(json.loads, out.splitlines())}
    assert top1["coffee.png"] == "espresso"
    assert top1["china.jpg"] == "palace"
    assert top1["rocket.jpg"] == "missile"
    assert top1["chelsea.png"] in {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}
    assert "identified as" in err


def test_json_help_says_json_lines(capsys):
    """predict --json streams one object per image; its help must say so (json.load on the whole output fails)."""
    code = main(["predict", "--help"])
    out, _ = capsys.readouterr()
    assert code == 0 and "JSON Lines" in " ".join(out.replace("│", " ").split())


def test_threshold_outside_0_1_is_refused(capsys, weights, folder):
    """A probability threshold over 1 used to be accepted and silently show no label for any image."""
    code, _, err = run(capsys, weights, folder, *ARCH, "--multi-label", "--threshold", "2")
    assert code == 2 and "--threshold" in err
