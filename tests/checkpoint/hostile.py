"""Builders of hostile weights files for tests: each ``make_<kind>(tmp_path) -> (path, marker_path)``.

Every payload would create ``marker_path`` if the file were loaded unsafely (``pickle.load`` /
``torch.load(weights_only=False)``); tests assert the marker never appears. ``ALL_HOSTILE`` lists every builder.
This module is self-contained (only torch and the standard library) so other test folders can load it by path.
"""

from __future__ import annotations

import builtins
import importlib
import io
import os
import pickle
import struct
import warnings
import zipfile
from pathlib import Path

import torch

__all__ = ["ALL_HOSTILE", "Call", "zip_with_members", "corrupt_crc", "torch_zip_bytes"]


class Call:
    """Pickles as ``func(*args)`` — the classic reduce payload."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)

    def __call__(self, *args):  # pickle requires the reduce callable to be callable
        raise RuntimeError("never called in tests")


def _marker(tmp_path: Path, kind: str) -> Path:
    return Path(tmp_path) / f"PWNED_{kind}"


def _system(marker: Path) -> Call:
    return Call(os.system, f"touch '{marker}'")


def _exec(marker: Path) -> Call:
    return Call(builtins.exec, f"open({str(marker)!r}, 'w').close()")


def _importlib(marker: Path) -> Call:
    os_module = Call(importlib.import_module, "os")
    system = Call(builtins.getattr, os_module, "system")
    return Call(system, f"touch '{marker}'")


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"fc.weight": torch.randn(3, 4, generator=g), "fc.bias": torch.randn(3, generator=g)}


def torch_zip_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def zip_with_members(path: Path, members: list[tuple[str, bytes]], compress: int = zipfile.ZIP_STORED) -> Path:
    """Write a zip with exactly these (name, data) members, duplicates and odd names allowed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(path, "w", compression=compress) as zf:
            for name, data in members:
                zf.writestr(zipfile.ZipInfo(name), data, compress_type=compress)
    return path


def torch_members(obj) -> list[tuple[str, bytes]]:
    zf = zipfile.ZipFile(io.BytesIO(torch_zip_bytes(obj)))
    return [(i.filename, zf.read(i)) for i in zf.infolist()]


def corrupt_crc(path: Path, member_suffix: str) -> None:
    """Flip the CRC-32 of the member ending with ``member_suffix`` in both its local and central headers."""
    data = bytearray(Path(path).read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(member_suffix))
    off = info.header_offset
    data[off + 14 : off + 18] = struct.pack("<I", (info.CRC ^ 0xDEADBEEF) & 0xFFFFFFFF)
    name = info.filename.encode()
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        n = struct.unpack("<H", data[pos + 28 : pos + 30])[0]
        if bytes(data[pos + 46 : pos + 46 + n]) == name:
            data[pos + 16 : pos + 20] = struct.pack("<I", (info.CRC ^ 0xDEADBEEF) & 0xFFFFFFFF)
        pos = data.find(b"PK\x01\x02", pos + 4)
    Path(path).write_bytes(bytes(data))


# --- builders --------------------------------------------------------------------------------------------------------


def make_zip_os_system(tmp_path):
    marker = _marker(tmp_path, "zip_os_system")
    path = Path(tmp_path) / "zip_os_system.pth"
    torch.save(_system(marker), path)
    return path, marker


def make_zip_exec(tmp_path):
    marker = _marker(tmp_path, "zip_exec")
    path = Path(tmp_path) / "zip_exec.pt"
    torch.save({"state_dict": _tensors(), "hook": _exec(marker)}, path)
    return path, marker


def make_zip_importlib(tmp_path):
    marker = _marker(tmp_path, "zip_importlib")
    path = Path(tmp_path) / "zip_importlib.pth"
    torch.save({"model": _tensors(), "cfg": _importlib(marker)}, path)
    return path, marker


def make_legacy_os_system(tmp_path):
    marker = _marker(tmp_path, "legacy_os_system")
    path = Path(tmp_path) / "legacy_os_system.pth"
    torch.save({"state_dict": _tensors(), "x": _system(marker)}, path, _use_new_zipfile_serialization=False)
    return path, marker


def make_legacy_exec(tmp_path):
    marker = _marker(tmp_path, "legacy_exec")
    path = Path(tmp_path) / "legacy_exec.pth"
    torch.save(_exec(marker), path, _use_new_zipfile_serialization=False)
    return path, marker


def make_raw_pickle_bin(tmp_path):
    marker = _marker(tmp_path, "raw_bin")
    path = Path(tmp_path) / "pytorch_model.bin"
    path.write_bytes(pickle.dumps({"weight": [1.0, 2.0], "x": _system(marker)}, protocol=2))
    return path, marker


def make_raw_pickle_ckpt(tmp_path):
    marker = _marker(tmp_path, "raw_ckpt")
    path = Path(tmp_path) / "last.ckpt"
    path.write_bytes(pickle.dumps(_importlib(marker), protocol=4))
    return path, marker


def make_raw_pickle_nested_archive(tmp_path):
    """A raw pickle whose 'tensor' is torch.storage._load_from_bytes of an archive that carries the payload."""
    marker = _marker(tmp_path, "nested")
    path = Path(tmp_path) / "nested.pkl"
    inner = torch_zip_bytes(_exec(marker))
    path.write_bytes(pickle.dumps({"w": Call(torch.storage._load_from_bytes, inner)}, protocol=2))
    return path, marker


def make_bad_crc(tmp_path):
    marker = _marker(tmp_path, "bad_crc")
    path = Path(tmp_path) / "bad_crc.pth"
    torch.save({"state_dict": _tensors(), "x": _system(marker)}, path)
    corrupt_crc(path, "data.pkl")
    return path, marker


def make_duplicate_members(tmp_path):
    """Benign data.pkl first, hostile one second: readers that take different copies see different files."""
    marker = _marker(tmp_path, "duplicate")
    benign = torch_members(_tensors())
    hostile = dict(torch_members({"fc.weight": torch.zeros(3, 4), "x": _system(marker)}))
    pkl = next(n for n, _ in benign if n.endswith("data.pkl"))
    members = [*benign, (pkl, hostile[next(n for n in hostile if n.endswith("data.pkl"))])]
    path = zip_with_members(Path(tmp_path) / "duplicate.pth", members)
    return path, marker


def _frame_overrun_pickle(marker: Path) -> bytes:
    body = (
        b"cposix\nsystem\n"
        + b"\x8c" + bytes([len(f"touch '{marker}'")]) + f"touch '{marker}'".encode()
        + b"\x85"  # TUPLE1
        + b"R"  # REDUCE
        + b"."  # STOP
    )
    # FRAME declares far more bytes than follow: scanners that trust the frame length mis-parse.
    return b"\x80\x04" + b"\x95" + struct.pack("<Q", len(body) + 4096) + body


def make_frame_overrun(tmp_path):
    marker = _marker(tmp_path, "frame")
    path = Path(tmp_path) / "frame_trick.pth"
    path.write_bytes(_frame_overrun_pickle(marker))
    return path, marker


def make_zip_frame_overrun(tmp_path):
    marker = _marker(tmp_path, "zip_frame")
    members = [(n, _frame_overrun_pickle(marker) if n.endswith("data.pkl") else d) for n, d in torch_members(_tensors())]
    path = zip_with_members(Path(tmp_path) / "zip_frame_trick.pth", members)
    return path, marker


def make_stack_global_memo(tmp_path):
    """Protocol-4 STACK_GLOBAL whose module/name strings come through the memo (obfuscated)."""
    marker = _marker(tmp_path, "stack_global")
    cmd = f"touch '{marker}'".encode()
    body = (
        b"\x8c\x05posix\x94"  # SHORT_BINUNICODE 'posix', MEMOIZE 0
        b"\x8c\x06system\x94"  # 'system', MEMOIZE 1
        b"0"  # POP
        b"0"  # POP
        b"h\x00h\x01\x93"  # BINGET 0, BINGET 1, STACK_GLOBAL
        + b"\x8c" + bytes([len(cmd)]) + cmd + b"\x85R."
    )
    path = Path(tmp_path) / "stack_global.pth"
    path.write_bytes(b"\x80\x04" + body)
    return path, marker


ALL_HOSTILE = [
    make_zip_os_system,
    make_zip_exec,
    make_zip_importlib,
    make_legacy_os_system,
    make_legacy_exec,
    make_raw_pickle_bin,
    make_raw_pickle_ckpt,
    make_raw_pickle_nested_archive,
    make_bad_crc,
    make_duplicate_members,
    make_frame_overrun,
    make_zip_frame_overrun,
    make_stack_global_memo,
]
