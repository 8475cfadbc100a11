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

__all__ = ["ALL_HOSTILE", "NESTED", "DECOYS", "TAR", "DENYLIST_GAPS", "Call", "zip_with_members", "corrupt_crc", "torch_zip_bytes", "tar_polyglot"]


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


# --- family 1: nested payloads (everything torch.storage._load_from_bytes would unpickle) ---------------------------


def _load_from_bytes(data: bytes) -> Call:
    return Call(torch.storage._load_from_bytes, data)


def legacy_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def make_nested_raw_pickle(tmp_path):
    """The payload bytes are a bare pickle: torch.load unpickles it as its 'magic number' before failing."""
    marker = _marker(tmp_path, "nested_raw")
    path = Path(tmp_path) / "nested_raw.pth"
    torch.save({"state_dict": _tensors(), "w": _load_from_bytes(pickle.dumps(_system(marker), protocol=2))}, path)
    return path, marker


def make_nested_legacy_blob(tmp_path):
    """The payload bytes are an old-format (pre-zip) torch.save stream."""
    marker = _marker(tmp_path, "nested_legacy")
    path = Path(tmp_path) / "nested_legacy.bin"
    inner = legacy_bytes({"fc.weight": torch.zeros(2), "x": _system(marker)})
    path.write_bytes(pickle.dumps({"w": _load_from_bytes(inner)}, protocol=4))
    return path, marker


def make_nested_zip_from_ints(tmp_path):
    """The nested zip is built by builtins.bytes([ints]): no literal in the file starts with PK."""
    marker = _marker(tmp_path, "nested_ints")
    path = Path(tmp_path) / "nested_ints.pth"
    inner = torch_zip_bytes({"x": _exec(marker)})
    torch.save({"state_dict": _tensors(), "w": Call(torch.storage._load_from_bytes, Call(bytes, list(inner)))}, path)
    assert b"PK\x03\x04" not in pickle.dumps(Call(bytes, list(inner)), protocol=2)
    return path, marker


def make_nested_twice(tmp_path):
    """A legacy file holding a zip payload holding a zip payload holding the call."""
    marker = _marker(tmp_path, "nested_twice")
    path = Path(tmp_path) / "nested_twice.pth"
    inner2 = torch_zip_bytes({"x": _system(marker)})
    inner1 = torch_zip_bytes({"w": _load_from_bytes(inner2)})
    torch.save({"state_dict": _tensors(), "w": _load_from_bytes(inner1)}, path, _use_new_zipfile_serialization=False)
    return path, marker


# --- family 2: stack decoys (what a string-tracking scanner gets wrong) ---------------------------------------------


def _u(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE


def _call_with(cmd: str) -> bytes:
    return _u(cmd) + b"\x85R."  # TUPLE1, REDUCE, STOP


def _decoy(tmp_path, kind: str, body) -> tuple[Path, Path]:
    marker = _marker(tmp_path, f"decoy_{kind}")
    path = Path(tmp_path) / f"decoy_{kind}.pkl"
    path.write_bytes(b"\x80\x04" + body(f"touch '{marker}'"))
    return path, marker


def make_decoy_pop(tmp_path):
    # posix, system, then a decoy collections/OrderedDict pushed and POPped, then STACK_GLOBAL.
    return _decoy(tmp_path, "pop", lambda c: _u("posix") + _u("system") + _u("collections") + _u("OrderedDict")
                  + b"00\x93" + _call_with(c))


def make_decoy_pop_mark(tmp_path):
    return _decoy(tmp_path, "pop_mark", lambda c: _u("posix") + _u("system") + b"(" + _u("collections")
                  + _u("OrderedDict") + b"1\x93" + _call_with(c))


def make_decoy_dup(tmp_path):
    return _decoy(tmp_path, "dup", lambda c: _u("posix") + b"2" + b"0" + _u("collections") + b"0" + _u("system")
                  + b"\x93" + _call_with(c))


def make_decoy_memo_after_pop(tmp_path):
    # MEMOIZE after a POP stores what is really on top (posix), not the last string pushed (a decoy).
    return _decoy(tmp_path, "memo", lambda c: _u("posix") + _u("collections") + b"0\x94" + b"0" + b"h\x00"
                  + _u("system") + b"\x93" + _call_with(c))


def make_decoy_in_zip(tmp_path):
    path, marker = make_decoy_pop(tmp_path)
    members = [(n, path.read_bytes() if n.endswith("data.pkl") else d) for n, d in torch_members(_tensors())]
    out = zip_with_members(Path(tmp_path) / "decoy_zip.pth", members)
    return out, marker


# --- family 3: tar polyglots (torch.load tries its pre-0.4 tar format first) ----------------------------------------


def tar_polyglot(path: Path, members: dict[str, bytes]) -> Path:
    """A raw pickle (BINBYTES holding a whole tar archive, then an empty dict) whose first 512 bytes are also a valid
    tar header: pickle readers see ``{}``, torch.load sees a tar archive and unpickles its members."""
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in [("pad", b""), *members.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    tar = bytearray(buf.getvalue())
    prefix = b"\x80\x03B" + struct.pack("<I", len(tar) - 7)  # PROTO 3, BINBYTES covering the rest of the tar
    tar[: len(prefix)] = prefix
    tar[148:156] = b" " * 8
    tar[148:155] = b"%06o\x00" % sum(tar[:512])
    path.write_bytes(bytes(tar) + b"0}.")  # POP the bytes, EMPTY_DICT, STOP
    return path


def make_tar_polyglot_storages(tmp_path):
    marker = _marker(tmp_path, "tar_storages")
    path = tar_polyglot(Path(tmp_path) / "tar_storages.pth", {
        "storages": pickle.dumps(_system(marker), protocol=2) + pickle.dumps([]),
        "tensors": pickle.dumps(0), "pickle": pickle.dumps({}),
    })
    return path, marker


def make_tar_polyglot_pickle(tmp_path):
    marker = _marker(tmp_path, "tar_pickle")
    path = tar_polyglot(Path(tmp_path) / "tar_pickle.pth", {
        "storages": pickle.dumps(0) + pickle.dumps([]), "tensors": pickle.dumps(0),
        "pickle": pickle.dumps({"x": _exec(marker)}, protocol=2),
    })
    return path, marker


# --- family 8: globals a denylist misses (allowlist-first) -----------------------------------------------------------


def make_uuid_command(tmp_path):
    import uuid

    marker = _marker(tmp_path, "uuid")
    path = Path(tmp_path) / "uuid.pth"
    torch.save({"state_dict": _tensors(), "x": Call(uuid._get_command_stdout, "touch", str(marker))}, path)
    return path, marker


def make_pydoc_locate(tmp_path):
    import pydoc

    marker = _marker(tmp_path, "pydoc")
    path = Path(tmp_path) / "pydoc.pth"
    torch.save({"state_dict": _tensors(), "x": Call(Call(pydoc.locate, "os.system"), f"touch '{marker}'")}, path)
    return path, marker


def make_attrgetter(tmp_path):
    import operator

    marker = _marker(tmp_path, "attrgetter")
    path = Path(tmp_path) / "attrgetter.pkl"
    system = Call(Call(operator.attrgetter, "system"), Call(importlib.import_module, "os"))
    path.write_bytes(pickle.dumps({"w": [1.0], "x": Call(system, f"touch '{marker}'")}, protocol=4))
    return path, marker


def make_functools_partial(tmp_path):
    import functools

    marker = _marker(tmp_path, "partial")
    path = Path(tmp_path) / "partial.pth"
    torch.save({"state_dict": _tensors(), "x": Call(functools.partial(os.system, f"touch '{marker}'"))}, path)
    return path, marker


NESTED = [make_raw_pickle_nested_archive, make_nested_raw_pickle, make_nested_legacy_blob, make_nested_zip_from_ints,
          make_nested_twice]
DECOYS = [make_stack_global_memo, make_decoy_pop, make_decoy_pop_mark, make_decoy_dup, make_decoy_memo_after_pop,
          make_decoy_in_zip]
TAR = [make_tar_polyglot_storages, make_tar_polyglot_pickle]
DENYLIST_GAPS = [make_uuid_command, make_pydoc_locate, make_attrgetter, make_functools_partial]

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
    *NESTED[1:],
    *DECOYS[1:],
    *TAR,
    *DENYLIST_GAPS,
]
