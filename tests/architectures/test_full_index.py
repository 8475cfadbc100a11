"""The full index (every torchvision + timm architecture): slow, builds the real cache on first use (minutes)."""

from __future__ import annotations

import pytest
import torch

from pthkit.architectures import build_model, identify, list_architectures


@pytest.fixture(scope="module")
def full_index():
    # The user's cache (~/.cache/pthkit or $PTHKIT_CACHE_DIR): building it is what this test measures the use of.
    from pthkit.architectures.index import get_index, reset_index

    reset_index()
    index = get_index(progress=False)
    yield index
    reset_index()


def test_index_covers_the_registry(full_index):
    names = set(list_architectures(source="timm")) | set(list_architectures(source="torchvision"))
    assert names <= set(full_index.signatures) | set(full_index.failures)
    assert len(full_index.failures) < 0.02 * len(names)


def test_real_lite0_against_everything(full_index, lite0_path):
    result = identify(torch.load(lite0_path, map_location="cpu", weights_only=True))
    assert result.confident and result.best.architecture == "timm:efficientnet_lite0"
    assert "timm:tf_efficientnet_lite0" in result.best.equivalent and len(result.best.key_map) == 296
    assert result.elapsed_s < 5


@pytest.mark.parametrize("name,kwargs", [
    ("torchvision:resnet50", {"num_classes": 10}), ("timm:convnext_tiny", {}), ("timm:vit_small_patch16_224", {}),
    ("torchvision:mobilenet_v3_large", {}), ("timm:efficientnet_b0", {"num_classes": 3}),
])
def test_models_against_everything(full_index, name, kwargs):
    with torch.device("meta"):
        sd = build_model(name, **kwargs).state_dict()
    result = identify({f"module.{k}": v for k, v in sd.items()})
    assert result.confident, result.message
    assert name in [result.best.architecture, *result.best.equivalent]
    assert result.best.kwargs["num_classes"] == kwargs.get("num_classes", 1000)
