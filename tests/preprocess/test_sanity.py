"""Post-load sanity checks on predictions for different images."""

from __future__ import annotations

import pytest
import torch

from pthkit.errors import PreprocessError
from pthkit.preprocess import check_model_sane, check_predictions_sane, resolve_preprocess


def test_healthy_predictions_give_no_warning():
    logits = torch.zeros(4, 10)
    for i in range(4):
        logits[i, i] = 8.0
    assert check_predictions_sane(logits) == []


def test_same_top1_for_every_image():
    logits = torch.randn(5, 10, generator=torch.Generator().manual_seed(0))
    logits[:, 7] += 20
    (warning,) = check_predictions_sane(logits, label_names=[f"c{i}" for i in range(10)])
    assert "all 5 different sample images get the same top-1 class 7 (c7)" in warning
    assert "preprocessing" in warning


def test_identical_outputs():
    (warning,) = check_predictions_sane(torch.tensor([[0.1, 2.0, 0.3]] * 3))
    assert "outputs are identical for all 3 different images" in warning


def test_near_uniform_softmax():
    logits = torch.randn(4, 1000, generator=torch.Generator().manual_seed(0)) * 0.01
    warnings = check_predictions_sane(logits)
    assert any("predictions are nearly uniform" in w and "over 1000 classes" in w for w in warnings)
    sig = check_predictions_sane(torch.randn(4, 5, generator=torch.Generator().manual_seed(0)) * 0.01,
                                 mode="sigmoid")
    assert any("every sigmoid probability is within 0.45-0.55" in w for w in sig)


def test_non_finite_and_bad_shape():
    logits = torch.eye(4)
    logits[1, 0] = float("nan")
    assert any("1 of 4 outputs contain NaN" in w for w in check_predictions_sane(logits))
    with pytest.raises(PreprocessError, match="expected \\(images, classes\\) logits"):
        check_predictions_sane(torch.zeros(2, 3, 4))


def test_real_model_right_and_wrong(lite0_model):
    pre = resolve_preprocess(lite0_model, arch="timm:efficientnet_lite0",
                             overrides={"mean": "inception", "std": "inception"})  # what inference finds (test_infer)
    assert check_model_sane(lite0_model, pre) == []
    # badly wrong preprocessing (raw 0-255 into a [-1,1] model): photos of known content get nonsense classes
    wrong = pre.with_values("test", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), scale=255.0)
    (warning,) = check_model_sane(lite0_model, wrong)
    assert "only 0 of 3 sample photos with known content get their class in the top 5" in warning
    assert "photo-coffee.jpg ->" in warning and "(expected espresso)" in warning
    # a model whose head was left at zero predicts the same thing for everything
    broken = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                 torch.nn.Linear(4, 10))
    torch.nn.init.zeros_(broken[3].weight)
    torch.nn.init.zeros_(broken[3].bias)
    warnings = check_model_sane(broken, pre.with_values("test", input_size=(3, 32, 32), label_names=None))
    assert any("identical" in w for w in warnings)
