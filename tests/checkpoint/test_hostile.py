"""Hostile files: no payload ever runs (read_checkpoint, scan_file), and scan never calls one safe."""

from __future__ import annotations

import pickle

import pytest
import torch

from pthkit.checkpoint import read_checkpoint, scan_file
from pthkit.errors import CheckpointError

from .hostile import ALL_HOSTILE, make_raw_pickle_bin, make_zip_importlib, make_zip_os_system


@pytest.mark.parametrize("make", ALL_HOSTILE, ids=lambda f: f.__name__)
def test_read_never_runs_the_payload(make, tmp_path):
    path, marker = make(tmp_path)
    try:
        ckpt = read_checkpoint(path)
    except CheckpointError as err:  # refusing is fine, as a typed one-line error
        assert "\n" not in str(err)
    else:
        assert ckpt.verdict == "malicious-looking"
        assert any(f.severity == "danger" for f in ckpt.findings)
    assert not marker.exists()


@pytest.mark.parametrize("make", ALL_HOSTILE, ids=lambda f: f.__name__)
def test_scan_flags_every_hostile_file(make, tmp_path):
    path, marker = make(tmp_path)
    report = scan_file(path)
    assert not marker.exists()
    assert report.verdict != "safe" and not report.ok
    assert report.verdict == "malicious-looking", report
    assert any(f.severity == "danger" for f in report.findings)
    assert report.to_dict()["verdict"] == "malicious-looking"


def test_payload_next_to_real_tensors_keeps_tensors(tmp_path):
    path, marker = make_zip_importlib(tmp_path)
    ckpt = read_checkpoint(path)
    assert not marker.exists()
    assert set(ckpt.tensors) == {"fc.weight", "fc.bias"}
    assert {"importlib.import_module", "builtins.getattr"} <= set(ckpt.classes)
    assert "cfg" in ckpt.entries


def test_scan_names_the_dangerous_globals(tmp_path):
    path, _ = make_zip_os_system(tmp_path)
    report = scan_file(path)
    assert "posix.system" in report.globals
    assert any("posix.system" in f.detail and "calls it" in f.detail for f in report.findings)


def test_the_payloads_are_real(tmp_path):
    """Control: loading the same files unsafely does run the payload, so the tests above mean something."""
    path, marker = make_raw_pickle_bin(tmp_path)
    pickle.loads(path.read_bytes())
    assert marker.exists()
    path, marker = make_zip_os_system(tmp_path)
    torch.load(path, weights_only=False)
    assert marker.exists()
