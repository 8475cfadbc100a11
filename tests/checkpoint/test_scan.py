"""scan_file verdicts on honest files: safe only for pure data; unknown classes and code need trust."""

from __future__ import annotations

import argparse
import json
import pickle
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pthkit.checkpoint import ScanReport, scan_file
from pthkit.errors import InputNotFoundError

from .hostile import corrupt_crc


@pytest.fixture()
def sd():
    torch.manual_seed(0)
    return {"fc.weight": torch.randn(3, 4), "fc.bias": torch.randn(3)}


def test_safe_formats(tmp_path, sd):
    files = {"zip": tmp_path / "a.pth", "legacy": tmp_path / "b.pth", "safetensors": tmp_path / "c.safetensors"}
    torch.save({"state_dict": sd, "epoch": 3}, files["zip"])
    torch.save(sd, files["legacy"], _use_new_zipfile_serialization=False)
    save_file(sd, str(files["safetensors"]))
    for fmt, path in files.items():
        report = scan_file(path)
        assert isinstance(report, ScanReport)
        assert (report.format, report.verdict, report.ok) == (fmt, "safe", True), report
        assert all(f.severity == "info" for f in report.findings)
        json.dumps(report.to_dict())
    assert set(scan_file(files["zip"]).globals) == {"torch._utils._rebuild_tensor_v2", "torch.FloatStorage", "collections.OrderedDict"}


def test_numpy_data_is_safe_but_namespace_needs_trust(tmp_path, sd):
    arrays = tmp_path / "arrays.pth"
    torch.save({"state_dict": sd, "best": np.float64(0.5), "mean": np.zeros(3)}, arrays)
    report = scan_file(arrays)
    assert report.verdict == "safe", report
    assert any("numpy" in g for g in report.globals)

    args = tmp_path / "args.pth"
    torch.save({"state_dict": sd, "args": argparse.Namespace(lr=0.1)}, args)
    report = scan_file(args)
    assert report.verdict == "needs-trust"
    assert "argparse.Namespace" in report.globals
    assert any(f.kind == "unknown-global" and "argparse.Namespace" in f.detail for f in report.findings)


def test_pickled_module_needs_trust(tmp_path):
    path = tmp_path / "whole.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    report = scan_file(path)
    assert report.verdict == "needs-trust" and "torch.nn.modules.linear.Linear" in report.globals


def test_torchscript_is_never_safe(tmp_path):
    path = tmp_path / "ts.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    report = scan_file(path)
    assert report.format == "torchscript" and report.verdict == "needs-trust"
    assert any(f.kind == "torchscript" for f in report.findings)


def test_bad_crc_in_a_storage_is_never_safe(tmp_path, sd):
    path = tmp_path / "crc.pth"
    torch.save(sd, path)
    corrupt_crc(path, "data/0")
    report = scan_file(path)
    assert report.verdict == "needs-trust" and any("CRC" in f.detail for f in report.findings)
    unchecked = scan_file(path, max_bytes=0)
    assert any("not verified" in f.detail for f in unchecked.findings)


def test_unparseable_and_unknown_files(tmp_path):
    png = tmp_path / "x.pth"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    report = scan_file(png)
    assert report.verdict == "needs-trust" and report.format == "unknown"
    assert "a PNG image" in report.findings[0].detail
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(pickle.dumps({"a": list(range(100))})[:-30])
    assert scan_file(broken).verdict != "safe"
    with pytest.raises(InputNotFoundError):
        scan_file(tmp_path / "missing.pth")


def test_trailing_second_pickle_is_flagged(tmp_path):
    path = tmp_path / "two.pkl"
    path.write_bytes(pickle.dumps({"a": 1}) + pickle.dumps(argparse.Namespace(x=1)))
    report = scan_file(path)
    assert report.verdict == "needs-trust"
    assert "argparse.Namespace" in report.globals and any(f.kind == "trailing-data" for f in report.findings)


def test_sharded_scan_merges_shards(tmp_path, sd):
    save_file({"fc.weight": sd["fc.weight"]}, str(tmp_path / "s1.safetensors"))
    torch.save({"fc.bias": sd["fc.bias"], "args": argparse.Namespace(a=1)}, tmp_path / "s2.bin")
    (tmp_path / "model.index.json").write_text(json.dumps({"weight_map": {"fc.weight": "s1.safetensors", "fc.bias": "s2.bin"}}))
    report = scan_file(tmp_path)
    assert report.format == "sharded" and report.verdict == "needs-trust" and "argparse.Namespace" in report.globals


def test_frame_shorter_than_its_opcodes_is_flagged(tmp_path):
    body = b"\x8c\x05posix\x8c\x06system\x93)R."  # STACK_GLOBAL posix.system, EMPTY_TUPLE, REDUCE, STOP
    path = tmp_path / "short_frame.pkl"
    path.write_bytes(b"\x80\x04\x95" + (4).to_bytes(8, "little") + body)  # frame ends inside the first string
    report = scan_file(path)
    assert report.verdict == "malicious-looking"
    assert any(f.kind == "frame" for f in report.findings)


def test_unresolvable_stack_global_is_flagged(tmp_path):
    path = tmp_path / "dynamic_global.pkl"
    path.write_bytes(b"\x80\x04)\x8c\x06system\x93)R.")  # module name is not a constant string
    report = scan_file(path)
    assert report.verdict == "malicious-looking"
    assert any(f.kind == "stack-global" for f in report.findings)


def test_common_config_objects_need_trust_but_are_not_malicious(tmp_path, sd):
    import functools
    import pathlib
    import types

    path = tmp_path / "cfg.pth"
    cfg = types.SimpleNamespace(data=pathlib.PurePosixPath("/data/imagenet"), norm=functools.partial(max, 1))
    torch.save({"state_dict": sd, "cfg": cfg}, path)
    report = scan_file(path)
    # functools.partial calls what it wraps: allowlist-first makes it malicious-looking, never merely "needs trust".
    assert report.verdict == "malicious-looking", report
    assert {"types.SimpleNamespace", "pathlib.PurePosixPath", "functools.partial"} <= set(report.globals)
    plain = tmp_path / "plain_cfg.pth"
    torch.save({"state_dict": sd, "cfg": types.SimpleNamespace(data=pathlib.PurePosixPath("/data"))}, plain)
    assert scan_file(plain).verdict == "needs-trust"
