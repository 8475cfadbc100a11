"""Format detection from content: every known format, and a one-line typed error naming anything else."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from pthkit.checkpoint import detect_format, read_checkpoint
from pthkit.errors import CorruptCheckpointError, InputNotFoundError, UnsupportedFormatError


@pytest.fixture()
def sd():
    torch.manual_seed(0)
    return {"fc.weight": torch.randn(3, 4), "fc.bias": torch.randn(3)}


def test_formats_by_content_not_extension(tmp_path, sd):
    zip_path = tmp_path / "weights.safetensors"  # misleading names on purpose
    torch.save(sd, zip_path)
    legacy = tmp_path / "model.zip"
    torch.save(sd, legacy, _use_new_zipfile_serialization=False)
    st = tmp_path / "model.pth"
    save_file(sd, str(st))
    raw = tmp_path / "model.safetensors.bin"
    raw.write_bytes(pickle.dumps({"a": 1}))
    ts = tmp_path / "scripted.pth"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(ts))
    index = tmp_path / "weights.index.json"
    index.write_text(json.dumps({"weight_map": {"fc.weight": "model.pth"}}))
    assert detect_format(zip_path) == "zip"
    assert detect_format(legacy) == "legacy"
    assert detect_format(st) == "safetensors"
    assert detect_format(raw) == "pickle"
    assert detect_format(ts) == "torchscript"
    assert detect_format(index) == "sharded"
    assert detect_format(tmp_path) == "sharded"


@pytest.mark.parametrize(
    ("content", "error", "phrase"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, UnsupportedFormatError, "a PNG image"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 64, UnsupportedFormatError, "a JPEG image"),
        (
            b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n",
            UnsupportedFormatError,
            "a git-lfs pointer: the real file was never downloaded; run `git lfs pull`",
        ),
        (b"", CorruptCheckpointError, "an empty file (0 bytes)"),
        (b"<!DOCTYPE html><html><body>Sign in</body></html>", UnsupportedFormatError, "HTML"),
        (b'{"num_classes": 10}', UnsupportedFormatError, "without a weight_map"),
        (b"hello, these are not weights\n", UnsupportedFormatError, "a text file"),
        (bytes(range(200, 256)) * 4, UnsupportedFormatError, "unknown binary content"),
        (b"\x93NUMPY\x01\x00", UnsupportedFormatError, "NumPy"),
        (b"GGUF\x03\x00\x00\x00" + b"\0" * 32, UnsupportedFormatError, "GGUF"),
        (b"model.pkl".ljust(257, b"\0") + b"ustar\x0000" + b"\0" * 300, UnsupportedFormatError, "before PyTorch 0.4"),
    ],
)
def test_unknown_content_is_named(tmp_path, content, error, phrase):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(error) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert phrase in message
    assert "\n" not in message and "model.pth" in message


def test_missing_file(tmp_path):
    with pytest.raises(InputNotFoundError, match="no such file"):
        read_checkpoint(tmp_path / "nope.pth")


def test_truncated_files_get_typed_errors(tmp_path, sd):
    big = {"w": torch.randn(256, 256)}
    for kind in ("zip", "legacy", "safetensors", "pickle"):
        path = tmp_path / f"{kind}.pth"
        if kind == "zip":
            torch.save(big, path)
        elif kind == "legacy":
            torch.save(big, path, _use_new_zipfile_serialization=False)
        elif kind == "safetensors":
            save_file(big, str(path))
        else:
            path.write_bytes(pickle.dumps({"a": list(range(1000))}))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(CorruptCheckpointError) as info:
            read_checkpoint(path)
        assert "\n" not in str(info.value)
        assert any(w in str(info.value) for w in ("truncated", "damaged", "past the end")), str(info.value)
