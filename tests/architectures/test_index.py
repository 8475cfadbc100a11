"""The on-disk signature cache: JSON (never pickle), keyed by library versions, extended without rebuilding."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from pthkit.architectures import Architecture, REGISTRY
from pthkit.architectures import index as index_mod
from pthkit.architectures.index import SignatureIndex, build_index, cache_path, get_index


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PTHKIT_CACHE_DIR", str(tmp_path))
    index_mod.reset_index()
    yield tmp_path
    index_mod.reset_index()


def test_cache_round_trip_in_tmp_dir(private_cache):
    idx = build_index(["timm:test_resnet", "torchvision:squeezenet1_1"], workers=1, progress=False)
    path = idx.save()
    assert path.parent == private_cache and path.name.startswith("signatures-") and path.suffix == ".gz"
    with gzip.open(path, "rt") as fh:
        assert set(json.load(fh)["signatures"]) == {"timm:test_resnet", "torchvision:squeezenet1_1"}
    again = SignatureIndex.load(path)
    assert again.signatures == idx.signatures and again.versions == idx.versions


def test_cache_is_keyed_by_library_versions(private_cache, monkeypatch):
    versions = index_mod.library_versions()
    assert cache_path(versions) == cache_path(dict(versions))
    assert cache_path({**versions, "timm": "0.0.1"}) != cache_path(versions)
    build_index(["timm:test_resnet"], workers=1, progress=False).save()
    # A new timm version: the old file is not used.
    monkeypatch.setattr(index_mod, "library_versions", lambda: {**versions, "timm": "99.0"})
    index_mod.reset_index()
    fresh = get_index(build=False)
    assert "timm:test_resnet" not in fresh


def test_failures_recorded_and_user_architecture_added_without_rebuild(private_cache):
    def broken(**kwargs):
        raise RuntimeError("cannot build")

    REGISTRY.register(Architecture(name="testsuite:broken", source="entrypoint", builder=broken))
    REGISTRY.register(Architecture(name="testsuite:mlp", source="entrypoint",
                                   builder=lambda **kw: torch.nn.Sequential(torch.nn.Linear(4, 3))))
    try:
        idx = build_index(["timm:test_resnet", "testsuite:broken"], workers=1, progress=False)
        assert "cannot build" in idx.failures["testsuite:broken"]
        before = dict(idx.signatures)
        build_index(["testsuite:mlp"], index=idx, workers=1, progress=False)
        assert idx.signatures["testsuite:mlp"].keys == ["0.weight", "0.bias"]
        assert all(idx.signatures[n] is s for n, s in before.items())  # nothing rebuilt
        assert idx.group_of("testsuite:mlp") == ["testsuite:mlp"]
        # Saved: the libraries' signatures only; user/plugin code may change without a version bump.
        assert set(SignatureIndex.load(idx.save()).signatures) == {"timm:test_resnet"}
    finally:
        REGISTRY.unregister("testsuite:broken")
        REGISTRY.unregister("testsuite:mlp")


def test_worker_processes_compute_the_same_signatures(private_cache):
    from pthkit.architectures.index import _run_workers, compute_one

    got = {name: (data, error) for name, data, error in _run_workers(["timm:test_resnet", "timm:nope_net"], 2)}
    assert got["timm:test_resnet"] == (compute_one("timm:test_resnet")[1], None)
    assert got["timm:nope_net"][0] is None and "UnknownArchitectureError" in got["timm:nope_net"][1]


def test_parallel_build_matches_in_process(private_cache):
    names = [f"timm:{n}" for n in ("test_resnet", "test_vit", "test_efficientnet", "test_convnext", "test_byobnet",
                                   "test_nfnet", "test_vit2", "test_vit3", "test_mambaout", "test_coatnet")]
    parallel = build_index(names, workers=2, progress=False)
    serial = build_index(names, workers=1, progress=False)
    assert parallel.signatures == serial.signatures
