"""Read the object a torch-style file holds (zip, legacy, raw pickle) with the inert unpickler — storages mapped."""

from __future__ import annotations

import hashlib
import io
import mmap as mmap_module
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch

from pthkit.checkpoint._inert import inert_class, unpickle
from pthkit.checkpoint._pickle_scan import BoundedReader
from pthkit.checkpoint._zip import ZipArchive, ZipStorages
from pthkit.checkpoint.detect import _LEGACY_PICKLED, LEGACY_MAGIC
from pthkit.errors import BudgetExceededError, CorruptCheckpointError, UnsupportedFormatError

MAX_NESTED = 3
MAX_NESTED_BYTES = 256 * 1024 * 1024  # distinct payload bytes per read (a repeated payload is read once)


@dataclass
class RawRead:
    """The unpickled object of one file plus what the unpickler saw."""

    obj: Any
    globals: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    trailing: int = 0  # bytes after the main pickle's STOP that no loader reads (a place to hide a second pickle)


def _merge(into: RawRead, globals_: list[str], notes: list[str]) -> None:
    into.globals.extend(g for g in globals_ if g not in into.globals)
    into.notes.extend(notes)


class NestedBudget:
    """Depth and byte budget for the payloads torch would unpickle from inside a file (one per read or scan)."""

    def __init__(self, max_depth: int = MAX_NESTED, max_bytes: int = MAX_NESTED_BYTES) -> None:
        self.max_depth, self.max_bytes, self.used = max_depth, max_bytes, 0
        self.seen: dict[bytes, Any] = {}  # payload digest -> object: a payload called again is read once

    def take(self, depth: int, nbytes: int) -> None:
        if depth > self.max_depth:
            raise BudgetExceededError.build(
                "nested payload", received=f"torch.storage._load_from_bytes payloads nested {depth} deep",
                expected=f"at most {self.max_depth}", hint="The file was crafted.",
            )
        self.used += nbytes
        if self.used > self.max_bytes:
            raise BudgetExceededError.build(
                "nested payload", received=f"more than {self.max_bytes:,} bytes of nested payloads",
                expected="a checkpoint", hint="The file was crafted.",
            )


class _Nested:
    """Reads ``torch.storage._load_from_bytes`` payloads inertly, as ``torch.load(io.BytesIO(data))`` would see them:
    a zip archive when the bytes start with ``PK\\x03\\x04``, otherwise the legacy pickle stream (whose first pickle
    torch unpickles whatever it is). Depth- and byte-budgeted."""

    def __init__(self, sink: RawRead, depth: int, budget: NestedBudget | None = None) -> None:
        self.sink, self.depth = sink, depth
        self.budget = budget if budget is not None else NestedBudget()

    def __call__(self, data: bytes) -> Any:
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if digest in self.budget.seen:
            return self.budget.seen[digest]
        self.budget.take(self.depth + 1, len(data))
        obj = self._read(data)
        self.budget.seen[digest] = obj
        return obj

    def _read(self, data: bytes) -> Any:
        if data[:4] == b"PK\x03\x04":
            archive = ZipArchive(data)
            try:
                archive.raise_problems()
                inner = read_zip(archive, depth=self.depth + 1, budget=self.budget)
            finally:
                archive.close()
        elif data[2:14] == _LEGACY_PICKLED:
            inner = read_legacy(io.BytesIO(data), len(data), lambda: bytearray(data), depth=self.depth + 1, budget=self.budget)
        else:
            # torch.load would unpickle this (its "magic number") and then fail: read it inertly for what it names.
            obj, up = unpickle(BoundedReader(io.BytesIO(data), 0, len(data)), None, nested=_Nested(self.sink, self.depth + 1, self.budget))
            _merge(self.sink, up.globals_seen, up.notes)
            self.sink.notes.append("a torch.storage._load_from_bytes payload that is a bare pickle, not a torch.save archive")
            return inert_class("torch.storage._load_from_bytes(<bare pickle>)")(obj)
        _merge(self.sink, inner.globals, inner.notes)
        if inner.trailing:
            self.sink.notes.append(f"{inner.trailing} bytes after the end of a nested payload")
            self.sink.trailing += inner.trailing
        return inner.obj


def read_zip(archive: ZipArchive, *, depth: int = 0, member: str | None = None, budget: NestedBudget | None = None) -> RawRead:
    """Unpickle ``<prefix>/data.pkl`` (or ``member``); storages come from ``<prefix>/data/<key>`` of the archive."""
    name = member or archive.find_main_pickle()
    if name is None:
        raise UnsupportedFormatError("zip archive: received no data.pkl; expected a torch.save archive.")
    data = archive.read_member(name)
    base = name[: -len(".pkl")]  # "archive/data.pkl" -> "archive/data"; "ts/constants.pkl" -> "ts/constants"
    out = RawRead(None)
    stream = io.BytesIO(data)
    obj, up = unpickle(stream, ZipStorages(archive, base), nested=_Nested(out, depth, budget))
    out.obj = obj
    out.trailing = len(data) - stream.tell()
    _merge(out, up.globals_seen, up.notes)
    return out


class _MetaStorages:
    """First pass over a legacy pickle: record each storage's dtype and size, hand back meta tensors (no memory)."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[torch.dtype, int]] = {}

    def get(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        self.seen[key] = (dtype, numel)
        return torch.empty(numel, dtype=dtype, device="meta")


class _LegacyStorages:
    def __init__(self, table: dict[str, tuple[int, int]], buffer: Callable[[], Any], copy: bool) -> None:
        self.table, self._buffer_fn, self.copy = table, buffer, copy
        self._buffer: Any = None

    def get(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        if key not in self.table:
            raise CorruptCheckpointError.build(
                "storage record", received=f"a reference to storage {key!r} that the file lacks",
                expected="every referenced storage present", hint="The file is truncated or damaged.",
            )
        start, nbytes = self.table[key]
        needed = numel * dtype.itemsize
        if nbytes < needed:
            raise CorruptCheckpointError.build(
                "storage record", received=f"storage {key!r} with {nbytes:,} bytes", expected=f"{needed:,} bytes as declared",
                hint="The file is damaged or crafted: a declared tensor size is larger than the stored data.",
            )
        if needed == 0:
            return torch.empty(0, dtype=dtype)
        if self._buffer is None:
            self._buffer = self._buffer_fn()
        return map_bytes(self._buffer, start, needed, dtype, copy=self.copy)


def map_bytes(buffer: Any, start: int, nbytes: int, dtype: torch.dtype, *, copy: bool) -> torch.Tensor:
    """``nbytes`` of ``buffer`` (an mmap or bytearray) from ``start`` as a 1-D ``dtype`` tensor sharing its memory.

    Each record gets its own tensor starting at the record, so records whose offset is not a multiple of the element
    size (the legacy format puts them right after pickles of any length) are mapped too, not copied — as the
    safetensors library does for unpadded headers, and as ``torch.from_numpy`` accepts for unaligned arrays. Loading
    into a model copies them into aligned parameters anyway.
    """
    raw = torch.frombuffer(buffer, dtype=torch.uint8, count=nbytes, offset=start)
    return raw.clone().view(dtype) if copy else raw.view(dtype)


def read_legacy(
    fh: BinaryIO, size: int, buffer: Callable[[], Any], *, depth: int = 0, copy: bool = False,
    budget: NestedBudget | None = None,
) -> RawRead:
    """The pre-1.6 ``torch.save`` layout: magic, protocol, sys info, object, storage keys, then raw storages."""
    reader = BoundedReader(fh, 0, size)
    out = RawRead(None)

    def small() -> Any:
        obj, up = unpickle(reader, None)
        _merge(out, up.globals_seen, up.notes)
        return obj

    magic = small()
    if magic != LEGACY_MAGIC:
        raise CorruptCheckpointError("legacy torch.save file: received a wrong magic number; expected a torch.save file.")
    version = small()
    if version != 1001:
        raise UnsupportedFormatError.build("legacy torch.save file", received=f"protocol version {version!r}", expected="1001")
    sys_info = small()
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise UnsupportedFormatError.build(
            "legacy torch.save file", received="a big-endian or unknown byte order", expected="little-endian storages"
        )
    obj_start = reader.tell()
    meta = _MetaStorages()
    budget = budget if budget is not None else NestedBudget()
    obj_first, up = unpickle(reader, meta, nested=_Nested(out, depth, budget))
    keys_start = reader.tell()
    keys, _ = unpickle(reader, None)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CorruptCheckpointError("legacy torch.save file: received a malformed storage key list; expected strings.")
    table: dict[str, tuple[int, int]] = {}
    pos = reader.tell()
    for key in keys:
        reader.seek(pos)
        head = reader.read(8)
        if len(head) != 8:
            raise CorruptCheckpointError.build(
                "legacy torch.save file", received=f"a truncated storage record {key!r}", expected="complete records",
                hint="The file is truncated; download it again.",
            )
        (numel,) = struct.unpack("<q", head)
        dtype, declared = meta.seen.get(key, (torch.uint8, 0))
        nbytes = numel * dtype.itemsize
        if numel < 0 or pos + 8 + nbytes > size:
            raise CorruptCheckpointError.build(
                "legacy torch.save file", received=f"storage {key!r} declaring {numel:,} elements past the end of the file",
                expected="records inside the file", hint="The file is truncated or damaged.",
            )
        table[key] = (pos + 8, nbytes)
        pos += 8 + nbytes
    missing = [k for k in meta.seen if k not in table]
    if missing:
        raise CorruptCheckpointError.build(
            "legacy torch.save file", received=f"references to storages {missing[:3]} that the file lacks",
            expected="every storage present", hint="The file is truncated or damaged.",
        )
    if not meta.seen:
        obj = obj_first
    else:
        reader.seek(obj_start)
        obj, up = unpickle(reader, _LegacyStorages(table, buffer, copy), nested=_Nested(RawRead(None), depth, NestedBudget()))
        if reader.tell() != keys_start:
            raise CorruptCheckpointError("legacy torch.save file: received an inconsistent object pickle; expected one.")
    _merge(out, up.globals_seen, up.notes)
    out.obj = obj
    out.trailing = size - pos  # bytes after the last storage record: torch never reads them
    return out


def open_legacy(path: Path, *, mmap: bool) -> RawRead:
    size = path.stat().st_size
    with open(path, "rb") as fh:

        def buffer() -> Any:
            return mmap_module.mmap(fh.fileno(), 0, access=mmap_module.ACCESS_COPY)

        return read_legacy(fh, size, buffer, copy=not mmap)


def read_raw_pickle(path: Path) -> RawRead:
    """A bare pickle (``pickle.dump`` of a dict of tensors / arrays); tensors inside come as nested archives."""
    size = path.stat().st_size
    out = RawRead(None)
    with open(path, "rb") as fh:
        reader = BoundedReader(fh, 0, size)
        obj, up = unpickle(reader, None, nested=_Nested(out, 0, NestedBudget()))
        end = reader.tell()
    _merge(out, up.globals_seen, up.notes)
    out.trailing = size - end
    out.obj = obj
    return out


