"""Malformed and crafted files: typed one-line errors, bounded memory and time — never a traceback from inside."""

from __future__ import annotations

import json
import resource
import struct
import time
import zipfile

import pytest
import torch

from pthkit.checkpoint import read_checkpoint, scan_file
from pthkit.errors import BudgetExceededError, CheckpointError, CorruptCheckpointError

from .forge import FakeStorage, FakeTensor, float_bytes, forged_zip, safetensors_file
from .hostile import torch_members, zip_with_members


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_forged_zip_reads_when_honest(tmp_path):
    """The forging helper makes files the reader accepts when they do not lie (so the failures below are real)."""
    path = forged_zip(tmp_path / "ok.pth", {"w": FakeTensor(FakeStorage("0", 10), (2, 5), (5, 1))}, {"0": float_bytes(10)})
    assert torch.equal(read_checkpoint(path).tensors["w"], torch.arange(10.0).reshape(2, 5))


@pytest.mark.parametrize(
    ("obj", "records", "phrase"),
    [
        ({"w": FakeTensor(FakeStorage("0", 10**12), (10**12,), (1,))}, {"0": float_bytes(10)}, "larger than the stored data"),
        ({"w": FakeTensor(FakeStorage("0", 10), (1000,), (1,))}, {"0": float_bytes(10)}, "larger than the stored data"),
        ({"w": FakeTensor(FakeStorage("0", 10), (2**40, 2**40), (2**40, 1))}, {"0": float_bytes(10)}, "larger than the stored data"),
        ({"w": FakeTensor(FakeStorage("0", 10), (5,), (1,), offset=8)}, {"0": float_bytes(10)}, "larger than the stored data"),
        ({"w": FakeTensor(FakeStorage("7", 10), (10,), (1,))}, {"0": float_bytes(10)}, "which the archive lacks"),
        ({"w": FakeTensor(FakeStorage("0", 10), (10,), (1,))}, {"0": float_bytes(2)}, "larger than the stored data"),
        ({"w": FakeTensor(FakeStorage("0", 10), (-1,), (1,))}, {"0": float_bytes(10)}, "non-negative"),
        ({"w": FakeTensor(FakeStorage("0", 10), (2, 5), (5,))}, {"0": float_bytes(10)}, "one stride per dimension"),
    ],
    ids=["huge-storage", "tensor-past-storage", "overflowing-size", "offset-past-end", "missing-record", "short-record",
         "negative-size", "stride-mismatch"],
)
def test_lying_sizes_and_records(tmp_path, obj, records, phrase):
    path = forged_zip(tmp_path / "lying.pth", obj, records)
    start, peak = time.perf_counter(), _peak_mib()
    with pytest.raises(CorruptCheckpointError, match=phrase) as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value)
    assert time.perf_counter() - start < 5 and _peak_mib() - peak < 100
    report = scan_file(path)  # scan checks the records too: a lying file is never "safe"
    assert report.verdict == "needs-trust" and any(f.kind == "integrity" for f in report.findings)


def test_zip_bomb_refused_before_decompressing(tmp_path):
    members = torch_members({"w": torch.zeros(4)})
    members.append(("archive/data/99", b"\0" * (24 * 2**20)))
    path = zip_with_members(tmp_path / "bomb.pth", members, compress=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 2**20
    peak = _peak_mib()
    with pytest.raises(BudgetExceededError, match="zip bomb"):
        read_checkpoint(path)
    assert _peak_mib() - peak < 20
    report = scan_file(path)
    assert report.verdict == "malicious-looking" and any(f.kind == "budget" for f in report.findings)


def test_forged_central_directory_size_is_refused(tmp_path):
    path = tmp_path / "lies.pth"
    torch.save({"w": torch.zeros(4)}, path)
    data = bytearray(path.read_bytes())
    pos = data.find(b"PK\x01\x02")
    data[pos + 24 : pos + 28] = struct.pack("<I", 0xFFFFFFF0)  # uncompressed size of the first member
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        read_checkpoint(path)
    assert scan_file(path).verdict != "safe"


def test_path_traversal_member(tmp_path):
    members = torch_members({"w": torch.zeros(4)}) + [("../../evil.sh", b"rm -rf ~")]
    path = zip_with_members(tmp_path / "traversal.pth", members)
    with pytest.raises(CorruptCheckpointError, match="escape the archive"):
        read_checkpoint(path)
    report = scan_file(path)
    assert report.verdict == "malicious-looking" and any(f.kind == "traversal" for f in report.findings)


def _nested_list_pickle(depth: int) -> bytes:
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def test_deep_nesting_raw_and_zip(tmp_path):
    raw = tmp_path / "deep.pkl"
    raw.write_bytes(_nested_list_pickle(20_000))
    start = time.perf_counter()
    with pytest.raises(BudgetExceededError, match="nesting deeper"):
        read_checkpoint(raw)
    members = [("archive/data.pkl", _nested_list_pickle(5_000)), ("archive/version", b"3\n")]
    path = zip_with_members(tmp_path / "deep.pth", members)
    with pytest.raises(BudgetExceededError, match="nesting deeper"):
        read_checkpoint(path)
    assert time.perf_counter() - start < 20


def test_huge_declared_pickle_string_does_not_allocate(tmp_path):
    path = tmp_path / "liar.pkl"
    path.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 2**60) + b"abc")  # BINBYTES8 claiming 1 EiB
    peak = _peak_mib()
    with pytest.raises(CorruptCheckpointError):
        read_checkpoint(path)
    assert _peak_mib() - peak < 50
    assert scan_file(path).verdict != "safe"


# --- safetensors headers -----------------------------------------------------------------------------------------------


def _t(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


SAFETENSORS_CASES = {
    "huge-length": (lambda p: safetensors_file(p, {"a": _t()}, b"\0" * 8, length=2**62), BudgetExceededError, "header length"),
    "past-eof": (lambda p: safetensors_file(p, {"a": _t()}, b"\0" * 8, length=5000), CorruptCheckpointError, "past the end"),
    "leading-spaces": (lambda p: safetensors_file(p, "   " + json.dumps({"a": _t()}), b"\0" * 8), CorruptCheckpointError, "whitespace"),
    "duplicate-keys": (
        lambda p: safetensors_file(p, f'{{"a": {json.dumps(_t())}, "a": {json.dumps(_t(offsets=(8, 16)))}}}', b"\0" * 16),
        CorruptCheckpointError, "twice",
    ),
    "overlap": (lambda p: safetensors_file(p, {"a": _t(), "b": _t(offsets=(4, 12))}, b"\0" * 12), CorruptCheckpointError, "overlapping"),
    "gap": (lambda p: safetensors_file(p, {"a": _t(offsets=(4, 12))}, b"\0" * 12), CorruptCheckpointError, "gap"),
    "trailing-bytes": (lambda p: safetensors_file(p, {"a": _t()}, b"\0" * 20), CorruptCheckpointError, "trailing bytes"),
    "offset-overflow": (
        lambda p: safetensors_file(p, {"a": _t(shape=(2**62,), offsets=(0, 2**64))}, b"\0" * 8), CorruptCheckpointError, "overflow",
    ),
    "offsets-past-data": (lambda p: safetensors_file(p, {"a": _t(offsets=(0, 800))}, b"\0" * 8), CorruptCheckpointError, "offsets inside"),
    "size-mismatch": (lambda p: safetensors_file(p, {"a": _t(shape=(3,))}, b"\0" * 8), CorruptCheckpointError, "shape × dtype"),
    "unknown-dtype": (lambda p: safetensors_file(p, {"a": _t(dtype="F128")}, b"\0" * 8), CorruptCheckpointError, "unknown dtype"),
    "bad-json": (lambda p: safetensors_file(p, '{"a": [1, 2', b""), CorruptCheckpointError, "invalid JSON"),
    "bad-metadata": (
        lambda p: safetensors_file(p, {"__metadata__": {"x": 1}, "a": _t()}, b"\0" * 8), CorruptCheckpointError, "__metadata__",
    ),
}


@pytest.mark.parametrize("case", list(SAFETENSORS_CASES))
def test_malformed_safetensors_headers(tmp_path, case):
    build, error, phrase = SAFETENSORS_CASES[case]
    path = build(tmp_path / "model.safetensors")
    with pytest.raises(error, match=phrase) as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value) and "safetensors header" in str(info.value)
    assert scan_file(path).verdict != "safe"


def test_valid_handmade_safetensors(tmp_path):
    path = safetensors_file(tmp_path / "ok.safetensors", {"a": _t(), "__metadata__": {"k": "v"}}, struct.pack("<2f", 1.5, -2.0))
    ckpt = read_checkpoint(path)
    assert ckpt.tensors["a"].tolist() == [1.5, -2.0] and ckpt.metadata == {"k": "v"}
