"""Fixtures for architecture tests: a private signature cache and a small set of fast architectures."""

from __future__ import annotations

import os

import pytest

# ~24 architectures: enough look-alikes (resnet18/34, timm vs torchvision, lite0 vs tf_lite0, ViTs) to make
# identification non-trivial, small enough that their signatures build in seconds on the meta device.
SMALL = [
    "torchvision:resnet18", "timm:resnet18", "timm:resnet18d", "timm:resnet34", "torchvision:resnet34",
    "torchvision:mobilenet_v2", "timm:mobilenetv2_100", "torchvision:mobilenet_v3_small",
    "timm:mobilenetv3_small_100", "timm:efficientnet_lite0", "timm:tf_efficientnet_lite0", "timm:efficientnet_lite1",
    "timm:efficientnet_b0", "torchvision:squeezenet1_0",
    "torchvision:squeezenet1_1", "torchvision:shufflenet_v2_x0_5", "timm:vit_tiny_patch16_224",
    "timm:deit_tiny_patch16_224", "timm:test_vit", "timm:test_resnet", "timm:test_efficientnet", "timm:test_convnext",
    "timm:regnetx_002", "torchvision:alexnet",
]


@pytest.fixture(scope="session")
def arch_cache(tmp_path_factory):
    """PTHKIT_CACHE_DIR pointed at a private folder for the whole session; the in-memory index reset around it."""
    from pthkit.architectures import index as index_mod

    old = os.environ.get("PTHKIT_CACHE_DIR")
    path = tmp_path_factory.mktemp("pthkit-cache")
    os.environ["PTHKIT_CACHE_DIR"] = str(path)
    index_mod.reset_index()
    yield path
    index_mod.reset_index()
    if old is None:
        os.environ.pop("PTHKIT_CACHE_DIR", None)
    else:
        os.environ["PTHKIT_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def small_index(arch_cache):
    """A SignatureIndex of SMALL, built in-process once per session."""
    from pthkit.architectures.index import build_index

    index = build_index(SMALL, workers=1, progress=False)
    index.names = list(SMALL)  # what tests pass as include=
    return index
