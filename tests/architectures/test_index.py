"""The on-disk signature cache: a zip of JSON (never pickle) with a small pre-filter member and one member per
signature read on demand, keyed by library versions, built once under a file lock, failures retried and reported."""

from __future__ import annotations

import json
import sys
import textwrap
import threading
import zipfile

import pytest
import torch

from pthkit.architectures import REGISTRY, Architecture, Registry, identify
from pthkit.architectures import index as index_mod
from pthkit.architectures.index import SignatureIndex, build_index, cache_path, get_index


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PTHKIT_CACHE_DIR", str(tmp_path))
    index_mod.reset_index()
    monkeypatch.setattr(index_mod, "_RETRIED", set())
    yield tmp_path
    index_mod.reset_index()


def _tiny_registry(monkeypatch, **extra):
    """A registry of a few fast 'timm:' names (so they are cached), swapped in for the global one."""
    reg = Registry(builtin=False)
    reg.register(Architecture(name="timm:test_resnet", source="timm", builder=REGISTRY.get("timm:test_resnet").builder))
    reg.register(Architecture(name="timm:tiny_mlp", source="timm",
                              builder=lambda **kw: torch.nn.Sequential(torch.nn.Linear(4, 3))))
    for name, builder in extra.items():
        reg.register(Architecture(name=f"timm:{name}", source="timm", builder=builder))
    monkeypatch.setattr(index_mod, "REGISTRY", reg)
    return reg


def test_cache_round_trip_in_tmp_dir(private_cache):
    idx = build_index(["timm:test_resnet", "torchvision:squeezenet1_1"], workers=1, progress=False)
    path = idx.save()
    assert path.parent == private_cache and path.name.startswith("signatures-v2-") and path.suffix == ".zip"
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        assert names == {"index.json", "sig/timm:test_resnet.json", "sig/torchvision:squeezenet1_1.json"}
        meta = json.loads(zf.read("index.json"))
        assert set(meta["prefilter"]) == {"timm:test_resnet", "torchvision:squeezenet1_1"}
    again = SignatureIndex.load(path)
    assert again.signatures == idx.signatures and again.versions == idx.versions
    assert again.counters() == idx.counters() and again.group_of("timm:test_resnet") == ["timm:test_resnet"]


def test_signatures_are_read_on_demand_and_bytes_counted(private_cache):
    names = ["timm:test_resnet", "timm:test_vit", "timm:test_efficientnet", "torchvision:squeezenet1_1"]
    path = build_index(names, workers=1, progress=False).save()
    idx = SignatureIndex.load(path)
    with zipfile.ZipFile(path) as zf:
        sizes = {i.filename: i.compress_size for i in zf.infolist()}
    assert idx.bytes_read == idx.prefilter_bytes == sizes["index.json"]
    idx.counters()  # the pre-filter is in memory already: nothing read
    assert idx.bytes_read == sizes["index.json"]
    sig = idx.signatures["timm:test_vit"]
    assert sig.keys[0] and idx.bytes_read == sizes["index.json"] + sizes["sig/timm:test_vit.json"]
    assert idx.signatures["timm:test_vit"] is sig and idx.bytes_read == sizes["index.json"] + sizes["sig/timm:test_vit.json"]


def test_cache_is_keyed_by_library_versions_and_an_old_cache_is_not_read(private_cache, monkeypatch):
    versions = index_mod.library_versions()
    assert versions["schema"] == "2" and cache_path(versions) == cache_path(dict(versions))
    assert cache_path({**versions, "timm": "0.0.1"}) != cache_path(versions)
    # A schema-1 cache (one gzip JSON) under the old name is never opened; garbage under the new name is rebuilt.
    (private_cache / "signatures-e2c93b42b481.json.gz").write_bytes(b"old")
    cache_path().write_bytes(b"not a zip")
    fresh = get_index(build=False)
    assert len(fresh) == 0
    build_index(["timm:test_resnet"], workers=1, progress=False).save()
    monkeypatch.setattr(index_mod, "library_versions", lambda: {**versions, "timm": "99.0"})
    index_mod.reset_index()
    assert "timm:test_resnet" not in get_index(build=False)


def test_first_build_says_one_time_and_where_then_loads(private_cache, monkeypatch, capsys):
    _tiny_registry(monkeypatch)
    idx = get_index(progress=False, workers=1)
    err = capsys.readouterr().err
    assert "one-time step" in err and str(private_cache) in err
    assert set(idx.signatures) == {"timm:test_resnet", "timm:tiny_mlp"} and cache_path().is_file()
    index_mod.reset_index()
    again = get_index(progress=False, workers=1)
    assert "one-time" not in capsys.readouterr().err and again.complete and again is not idx
    assert again.signatures["timm:tiny_mlp"].keys == ["0.weight", "0.bias"]


def test_failures_are_reported_retried_on_a_later_run_and_capped(private_cache, monkeypatch, capsys):
    state = {"fail": True, "calls": 0}

    def flaky(**kwargs):
        state["calls"] += 1
        if state["fail"]:
            raise RuntimeError("transient")
        return torch.nn.Linear(2, 2)

    def broken(**kwargs):
        raise RuntimeError("always")

    _tiny_registry(monkeypatch, flaky=flaky, broken=broken)
    idx = get_index(progress=False, workers=1)
    assert "transient" in idx.failures["timm:flaky"] and "always" in idx.failures["timm:broken"]
    assert "2 architectures could not be indexed" in capsys.readouterr().err
    calls = state["calls"]
    state["fail"] = False
    # Still this process: no retry per call.
    assert get_index(progress=False, workers=1).failures.keys() == {"timm:flaky", "timm:broken"}
    assert state["calls"] == calls
    for _ in range(index_mod.MAX_ATTEMPTS + 1):  # later runs: a new process reads the cache
        index_mod.reset_index()
        index_mod._RETRIED.clear()
        idx = get_index(progress=False, workers=1)
    assert "timm:flaky" in idx.signatures and "timm:flaky" not in idx.failures
    assert idx.attempts["timm:broken"] == index_mod.MAX_ATTEMPTS  # then left as failed (until versions change)
    on_disk = SignatureIndex.load(cache_path())
    assert "timm:flaky" in on_disk.signatures and on_disk.attempts == {"timm:broken": index_mod.MAX_ATTEMPTS}


def test_concurrent_builds_wait_for_the_lock_and_reuse_the_result(private_cache, monkeypatch):
    _tiny_registry(monkeypatch)
    prebuilt = build_index(["timm:test_resnet", "timm:tiny_mlp"], workers=1, progress=False)
    lock = index_mod._file_lock(cache_path())
    got: list[SignatureIndex] = []
    with lock:  # another process is building
        worker = threading.Thread(target=lambda: got.append(get_index(progress=False, workers=1)))
        monkeypatch.setattr(index_mod, "build_index", lambda *a, **k: pytest.fail("built twice"))
        worker.start()
        worker.join(1.0)
        assert worker.is_alive() and not got  # waiting on the lock
        prebuilt.save(cache_path())  # ... which the other process finishes by saving the cache
    worker.join(30)
    assert got and set(got[0].signatures) == {"timm:test_resnet", "timm:tiny_mlp"}


def test_lazy_signatures_are_thread_safe(private_cache):
    names = ["timm:test_resnet", "timm:test_vit", "timm:test_efficientnet", "timm:test_convnext"]
    idx = SignatureIndex.load(build_index(names, workers=1, progress=False).save())
    seen: list[object] = []
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def read() -> None:
        start.wait()
        try:
            seen.extend(idx.signatures[n] for n in names)
        except BaseException as exc:  # the old code raised KeyError when two threads decoded the same name
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(seen) == 64 and len({id(s) for s in seen}) == 4


def test_identify_include_does_not_change_the_global_index(private_cache, tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(textwrap.dedent("""
        import torch.nn as nn

        class Mine(nn.Module):
            def __init__(self, num_classes=3):
                super().__init__()
                self.fc = nn.Linear(4, num_classes)
    """))
    spec = f"{path}:Mine"
    sd = {"fc.weight": torch.zeros(3, 4), "fc.bias": torch.zeros(3)}
    result = identify(sd, include=[spec, "timm:test_resnet"])
    assert result.best.architecture == spec
    shared = index_mod._INDEX
    assert shared is not None and spec not in shared.signatures and spec not in shared.failures
    assert "timm:test_resnet" in shared.signatures  # a library signature is memoised (a pure function of versions)
    assert "timm:test_resnet" in identify(sd, include=["timm:test_resnet"]).best.architecture


def test_worker_processes_compute_the_same_signatures(private_cache):
    from pthkit.architectures.index import _run_workers, compute_one

    got = {name: (data, error) for name, data, error in _run_workers(["timm:test_resnet", "timm:nope_net"], 2)}
    assert got["timm:test_resnet"] == (compute_one("timm:test_resnet")[1], None)
    assert got["timm:nope_net"][0] is None and "UnknownArchitectureError" in got["timm:nope_net"][1]


CRASHING_WORKER = """
import json, os, sys
for line in sys.stdin:
    name = line.strip()
    if name == "timm:crash":
        print("worker stderr: about to die on", name, file=sys.stderr, flush=True)
        os._exit(7)
    sys.stdout.write(json.dumps([name, {"k": ["w"], "s": [[1]]}, None]) + "\\n")
    sys.stdout.flush()
"""


def test_a_crashed_worker_is_logged_and_named_and_its_other_names_still_built(private_cache, tmp_path, monkeypatch):
    script = tmp_path / "worker.py"
    script.write_text(CRASHING_WORKER)
    monkeypatch.setattr(index_mod, "_worker_command", lambda: [sys.executable, str(script)])
    log = tmp_path / "build.log"
    names = ["timm:a", "timm:crash", "timm:b", "timm:c", "timm:d"]
    got = {name: (data, error) for name, data, error in index_mod._run_workers(names, 1, log)}
    assert set(got) == set(names)
    assert got["timm:crash"][0] is None and "exited with code 7 while computing it" in got["timm:crash"][1]
    assert all(got[n][0] == {"k": ["w"], "s": [[1]]} for n in names if n != "timm:crash")  # the rest: a new round
    assert "worker stderr: about to die on timm:crash" in log.read_text()


def test_parallel_build_matches_in_process(private_cache):
    names = [f"timm:{n}" for n in ("test_resnet", "test_vit", "test_efficientnet", "test_convnext", "test_byobnet",
                                   "test_nfnet", "test_vit2", "test_vit3", "test_mambaout", "test_coatnet")]
    parallel = build_index(names, workers=2, progress=False)
    serial = build_index(names, workers=1, progress=False)
    assert parallel.signatures == serial.signatures
