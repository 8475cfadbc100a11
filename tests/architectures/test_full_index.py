"""The full index (every torchvision + timm architecture), built ONCE per test session into the session's private
cache by the ``full_index`` fixture (tests/conftest.py) and shared with every test that identifies without
``include=`` (tests/loading/test_lite0_acceptance.py among them): never into ~/.cache, never twice per run."""

from __future__ import annotations

import zipfile

import pytest
import torch

from pthkit.architectures import build_model, identify, list_architectures
from pthkit.architectures import index as index_mod


def test_index_covers_the_registry_in_the_private_cache(full_index, pthkit_cache_dir):
    names = set(list_architectures(source="timm")) | set(list_architectures(source="torchvision"))
    assert names <= set(full_index.signatures) | set(full_index.failures)
    assert len(full_index.failures) < 0.02 * len(names)
    assert full_index.path is not None and full_index.path.parent == pthkit_cache_dir
    with zipfile.ZipFile(full_index.path) as zf:  # small pre-filter + one member per signature
        infos = {i.filename: i for i in zf.infolist()}
    assert len(infos) == 1 + len(full_index.signatures)
    assert infos["index.json"].compress_size < 0.25 * sum(i.compress_size for i in infos.values())


def test_the_global_index_is_the_fixture_one_and_reads_little(full_index):
    assert index_mod.get_index(progress=False) is full_index  # built once; identify() reuses it
    fresh = index_mod.SignatureIndex.load(full_index.path)
    with torch.device("meta"):
        sd = build_model("timm:resnet50").state_dict()
    result = identify(sd, index=fresh)
    # resnet50 has twins that differ in function (blur/aa pooling): from shapes alone it is named, not decided.
    assert result.best.confidence == "high" and "timm:resnet50" in [result.best.architecture, *result.best.equivalent]
    total = full_index.path.stat().st_size
    assert fresh.bytes_read < 0.35 * total, (fresh.bytes_read, total)  # pre-filter + a few dozen signatures


def test_real_lite0_against_everything(full_index, lite0_path):
    sd = torch.load(lite0_path, map_location="cpu", weights_only=True)
    result = identify(sd)
    names = [result.best.architecture, *result.best.equivalent]
    assert {"timm:efficientnet_lite0", "timm:tf_efficientnet_lite0"} & set(names)
    assert len(result.best.key_map) == 296
    again = identify(dict(sorted(sd.items())))  # as a safetensors file stores them
    assert again.best.architecture == result.best.architecture and again.best.key_map == result.best.key_map
    assert again.confident == result.confident


@pytest.mark.parametrize("name,kwargs", [
    ("torchvision:resnet50", {"num_classes": 10}), ("timm:convnext_tiny", {}), ("timm:vit_small_patch16_224", {}),
    ("torchvision:mobilenet_v3_large", {}), ("timm:efficientnet_b0", {"num_classes": 3}),
])
def test_models_against_everything(full_index, name, kwargs):
    with torch.device("meta"):
        sd = build_model(name, **kwargs).state_dict()
    result = identify({f"module.{k}": v for k, v in sorted(sd.items())})
    # Shapes only (meta tensors): twins that differ in function are listed, never decided (issue 9).
    assert result.best.confidence == "high" and result.best.score == 1.0, result.message
    assert name in [result.best.architecture, *result.best.equivalent]
    assert result.best.kwargs["num_classes"] == kwargs.get("num_classes", 1000)


def test_segmentation_file_with_aux_head_against_everything(full_index):
    with torch.device("meta"):
        sd = build_model("torchvision:deeplabv3_resnet50", aux_loss=True).state_dict()
    result = identify(dict(sorted(sd.items())))
    assert result.best.architecture == "torchvision:deeplabv3_resnet50"
    assert result.best.kwargs.get("aux_loss") is True and result.best.confidence == "high"
