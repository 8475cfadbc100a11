"""evaluate: exact numbers on hand-checkable cases (logits we control), files written, class matching."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from pthkit.errors import DatasetError
from pthkit.tasks.evaluate import compute_metrics, evaluate, expected_calibration_error

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared tiny-data helpers
from _train_data import ChannelModel, make_image_folder

# Six samples, three classes; probabilities chosen away from the 15 ECE bin edges (k/15).
PROBS = [
    [0.90, 0.05, 0.05],  # true a, pred a (conf .90, bin 13)
    [0.28, 0.62, 0.10],  # true a, pred b (conf .62, bin 9)  wrong
    [0.20, 0.70, 0.10],  # true b, pred b (conf .70, bin 10)
    [0.11, 0.78, 0.11],  # true b, pred b (conf .78, bin 11)
    [0.11, 0.11, 0.78],  # true c, pred c (conf .78, bin 11)
    [0.50, 0.10, 0.40],  # true c, pred a (conf .50, bin 7)  wrong
]
TARGETS = [0, 0, 1, 1, 2, 2]


def _report():
    logits = torch.tensor(PROBS).log()
    return compute_metrics(logits, torch.tensor(TARGETS), ["a", "b", "c"])


def test_accuracy_confusion_and_per_class_scores_are_exact():
    r = _report()
    assert r.num_images == 6
    assert r.top1 == pytest.approx(4 / 6)
    assert r.top5 is None  # 3 classes: top-5 is meaningless
    assert r.confusion == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    by = {c.name: c for c in r.per_class}
    assert (by["a"].precision, by["a"].recall, by["a"].f1) == pytest.approx((1 / 2, 1 / 2, 1 / 2))
    assert (by["b"].precision, by["b"].recall, by["b"].f1) == pytest.approx((2 / 3, 1.0, 0.8))
    assert (by["c"].precision, by["c"].recall, by["c"].f1) == pytest.approx((1.0, 1 / 2, 2 / 3))
    assert [c.support for c in r.per_class] == [2, 2, 2]
    assert r.macro_f1 == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert [(p["true"], p["predicted"], p["count"]) for p in r.most_confused] == [("a", "b", 1), ("c", "a", 1)]
    expected_loss = -sum(math.log(PROBS[i][t]) for i, t in enumerate(TARGETS)) / 6
    assert r.mean_loss == pytest.approx(expected_loss, rel=1e-5)


def test_expected_calibration_error_15_bins_by_hand():
    # |acc - conf| per bin, weighted by bin size: .1 + .62 + .3 + 2×.22 + .5, over 6 samples
    assert _report().ece == pytest.approx((0.10 + 0.62 + 0.30 + 2 * 0.22 + 0.50) / 6, abs=1e-6)
    perfect = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, torch.tensor([0, 1])) == pytest.approx(0.0)


def test_top5_counts_a_hit_within_the_five_best():
    logits = torch.tensor([[6.0, 5, 4, 3, 2, 1], [6.0, 5, 4, 3, 2, 1]])
    r = compute_metrics(logits, torch.tensor([4, 5]), list("abcdef"))
    assert r.top1 == 0.0
    assert r.top5 == pytest.approx(0.5)  # class 4 is 5th best (hit), class 5 is 6th (miss)


def test_evaluate_runs_a_fixed_model_over_a_folder_and_writes_files(tmp_path):
    from pthkit.preprocess import Preprocess

    data = make_image_folder(tmp_path / "data", per_class=4, size=24)
    # Output 2 ("c_blue") reads the green channel: every blue image is predicted b_green.
    model = ChannelModel.build(permutation=(0, 1, 1))
    pre = Preprocess(input_size=(3, 24, 24), crop_pct=1.0)
    report = evaluate(model, data, preprocess=pre, workers=0, device="cpu", out_dir=tmp_path / "eval")
    assert report.classes == ["a_red", "b_green", "c_blue"]
    assert report.top1 == pytest.approx(8 / 12)
    assert report.confusion == [[4, 0, 0], [0, 4, 0], [0, 4, 0]]
    assert report.most_confused[0] == {"true": "c_blue", "predicted": "b_green", "count": 4, "fraction_of_true": 1.0}
    png = tmp_path / "eval" / "confusion_matrix.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "eval" / "confusion_matrix.json").read_text())
    assert saved["matrix"] == report.confusion and saved["classes"] == report.classes
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["top1"] == pytest.approx(8 / 12)


def test_evaluate_matches_classes_by_label_name_and_refuses_unknown_ones(tmp_path):
    from pthkit.preprocess import Preprocess

    data = make_image_folder(tmp_path / "data", per_class=2, size=24)
    pre = Preprocess(input_size=(3, 24, 24), crop_pct=1.0)
    # The model's outputs are named in another order: output 0 is "c_blue", which reads channel 2.
    model = ChannelModel.build(permutation=(2, 0, 1))
    r = evaluate(model, data, preprocess=pre, label_names=["c_blue", "a_red", "b_green"], workers=0, device="cpu")
    assert r.top1 == 1.0 and r.classes == ["c_blue", "a_red", "b_green"]
    with pytest.raises(DatasetError, match="not among the model's labels"):
        evaluate(model, data, preprocess=pre, label_names=["x", "y", "z"], workers=0, device="cpu")


def test_evaluate_refuses_bad_batch_size_and_workers(tmp_path):
    """These used to surface as an 'unexpected ValueError' from the DataLoader."""
    model = ChannelModel.build(permutation=(0, 1, 2))
    with pytest.raises(DatasetError, match="batch size: received 0"):
        evaluate(model, tmp_path, batch_size=0, device="cpu")
    with pytest.raises(DatasetError, match="workers: received -1"):
        evaluate(model, tmp_path, workers=-1, device="cpu")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="a file"):
        evaluate(model, tmp_path, out_dir=tmp_path / "file", device="cpu")


def test_evaluate_reports_an_unreadable_image_and_goes_on(tmp_path):
    from pthkit.preprocess import Preprocess

    data = make_image_folder(tmp_path / "data", per_class=2, size=24)
    (data / "a_red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    r = evaluate(ChannelModel.build(), data, preprocess=Preprocess(input_size=(3, 24, 24), crop_pct=1.0),
                 workers=0, device="cpu")
    assert r.num_images == 6 and r.top1 == 1.0
    assert [p for p, _ in r.skipped] == [str(data / "a_red" / "broken.png")]


def _jpeg_folder(root: Path) -> Path:
    """Large JPEGs (reduced-size decoding applies to them) in 3 class folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    for c, name in enumerate(("a_red", "b_green", "c_blue")):
        (root / name).mkdir(parents=True)
        for i in range(2):
            arr = rng.integers(0, 90, size=(300, 260, 3), dtype=np.uint8)
            arr[..., c] = rng.integers(120, 256, size=(300, 260), dtype=np.uint8)
            Image.fromarray(arr).save(root / name / f"{i}.jpg", quality=90)
    return root


def test_evaluate_decodes_exactly_as_predict_does(tmp_path):
    """Same engine, same decoding: evaluate's loss equals the loss of predict's logits (reduced-size JPEG decoding
    included); decoding in full gives a measurably different loss, so the test would see full-size decoding."""
    import timm
    from torch import nn

    from pthkit.preprocess import Preprocess
    from pthkit.tasks.predict import predict

    data = _jpeg_folder(tmp_path / "data")
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=3).eval()
    pre = Preprocess(input_size=(3, 32, 32), crop_pct=0.875)
    report = evaluate(model, data, preprocess=pre, device="cpu", batch_size=4)
    paths = sorted(data.rglob("*.jpg"))
    targets = torch.tensor([("a_red", "b_green", "c_blue").index(p.parent.name) for p in paths])

    def loss(draft: bool) -> float:
        rows = list(predict(model, pre, paths, mode="logits", draft=draft))
        return float(nn.functional.cross_entropy(torch.tensor([r.logits for r in rows]), targets))

    assert report.mean_loss == pytest.approx(loss(True), abs=1e-5)
    assert abs(loss(False) - loss(True)) > 1e-4


def test_evaluate_leaves_the_callers_module_as_it_was(tmp_path):
    import timm

    from pthkit.preprocess import Preprocess

    data = make_image_folder(tmp_path / "data", per_class=2, size=24)
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=3).train()
    flags = [m.training for m in model.modules()]
    ptrs = [p.data_ptr() for p in model.parameters()]
    r1 = evaluate(model, data, preprocess=Preprocess(input_size=(3, 24, 24), crop_pct=1.0), workers=0, device="cpu")
    assert [m.training for m in model.modules()] == flags
    assert [p.data_ptr() for p in model.parameters()] == ptrs
    r2 = evaluate(model.eval(), data, preprocess=Preprocess(input_size=(3, 24, 24), crop_pct=1.0), device="cpu")
    assert r1.mean_loss == pytest.approx(r2.mean_loss, abs=1e-6)  # evaluated in eval mode both times
