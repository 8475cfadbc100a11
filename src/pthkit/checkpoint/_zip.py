"""Zip archives written by ``torch.save`` / TorchScript: integrity checks, budgets, and memory-mapped storage records.

:mod:`zipfile` parses the archive; this module adds what it does not check (duplicate and path-traversal member names,
compression-ratio budgets, data offsets for zero-copy mapping) and maps ``<archive>/data/<key>`` records onto a
memory map of the file, so reading a large checkpoint costs pages touched, not its size.
"""

from __future__ import annotations

import io
import mmap as mmap_module
import struct
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from pthkit.errors import BudgetExceededError, CorruptCheckpointError, UnsupportedFormatError

# Everything zipfile raises on damaged input (NotImplementedError: unknown version/compression; ValueError/
# OverflowError: offsets beyond what seek accepts).
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, ValueError, OverflowError, struct.error)

# A torch.save archive stores its records uncompressed; total declared size far beyond the file is a zip bomb.
RATIO_LIMIT = 16
SLACK_BYTES = 1 << 20
PICKLE_LIMIT = 1 << 30  # a data.pkl larger than this is not a state dict


@dataclass(frozen=True)
class ZipProblem:
    kind: str  # "integrity" | "budget" | "traversal" | "duplicate"
    detail: str
    error: type[Exception]
    severity: str = "danger"


def _unsafe_name(name: str) -> bool:
    if name.startswith(("/", "\\")) or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return True
    return any(part == ".." for part in name.split("/"))


class ZipArchive:
    """An opened zip weights file (or in-memory bytes for nested archives)."""

    def __init__(self, source: Path | bytes, *, mmap: bool = True) -> None:
        self.source = source
        self.mmap = mmap
        if isinstance(source, (bytes, bytearray)):
            self.size = len(source)
            self._fh: BinaryIO = io.BytesIO(source)
        else:
            self.size = source.stat().st_size
            self._fh = open(source, "rb")  # noqa: SIM115 - closed in close()
        try:
            self.zf = zipfile.ZipFile(self._fh)
        except ZIP_ERRORS as err:
            self.close()
            raise CorruptCheckpointError.build(
                "zip archive", received=f"a damaged or truncated zip ({_text(err)})", expected="a complete torch.save archive",
                hint="Download the file again.",
            ) from err
        self.infos = self.zf.infolist()
        self.members = {i.filename: i for i in self.infos}
        self._buffer: object | None = None

    def close(self) -> None:
        try:
            self._fh.close()
        except Exception:  # noqa: BLE001
            pass

    # -- structure ------------------------------------------------------------------------------------------------
    def problems(self) -> list[ZipProblem]:
        """Everything structurally wrong, without decompressing anything."""
        out: list[ZipProblem] = []
        dups = [n for n, c in Counter(i.filename for i in self.infos).items() if c > 1]
        if dups:
            out.append(ZipProblem("duplicate", f"duplicate zip members {dups[:3]}: readers disagree on which is real", CorruptCheckpointError))
        bad = [i.filename for i in self.infos if _unsafe_name(i.filename)]
        if bad:
            out.append(ZipProblem("traversal", f"member names that escape the archive {bad[:3]}", CorruptCheckpointError))
        if any(i.flag_bits & 0x1 for i in self.infos):
            out.append(ZipProblem("integrity", "encrypted zip members", UnsupportedFormatError, "warning"))
        total = sum(i.file_size for i in self.infos)
        if total > RATIO_LIMIT * self.size + SLACK_BYTES:
            out.append(
                ZipProblem(
                    "budget",
                    f"members declare {total:,} bytes uncompressed in a {self.size:,}-byte file (zip bomb)",
                    BudgetExceededError,
                )
            )
        for info in self.infos:
            if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
                out.append(ZipProblem("integrity", f"stored member {info.filename} declares inconsistent sizes", CorruptCheckpointError))
                break
            if info.header_offset + info.compress_size > self.size:
                out.append(ZipProblem("integrity", f"member {info.filename} runs past the end of the file", CorruptCheckpointError))
                break
        return out

    def raise_problems(self) -> None:
        for p in self.problems():
            raise p.error(f"zip archive: received {p.detail}; expected an intact torch.save archive. Do not load this file.")

    def pickle_members(self) -> list[str]:
        return [i.filename for i in self.infos if i.filename.endswith(".pkl")]

    def find_main_pickle(self) -> str | None:
        """``<prefix>/data.pkl`` (the shallowest one)."""
        names = [n for n in self.members if n == "data.pkl" or n.endswith("/data.pkl")]
        return min(names, key=lambda n: n.count("/")) if names else None

    def is_torchscript(self) -> bool:
        return any(n.endswith("/constants.pkl") or "/code/" in n or n.startswith("code/") for n in self.members)

    def read_member(self, name: str, limit: int = PICKLE_LIMIT) -> bytes:
        """Bytes of a member, CRC-checked by :mod:`zipfile`, refusing sizes beyond ``limit``."""
        info = self.members[name]
        if info.file_size > limit:
            raise BudgetExceededError.build(
                "zip member", received=f"{name} of {info.file_size:,} bytes", expected=f"at most {limit:,} bytes"
            )
        try:
            with self.zf.open(info) as f:
                data = f.read(limit + 1)
        except ZIP_ERRORS as err:
            raise CorruptCheckpointError.build(
                "zip member", received=f"{name}: {_text(err)}", expected="an intact member", hint="Download the file again."
            ) from err
        if len(data) > limit:
            raise BudgetExceededError.build("zip member", received=f"{name} larger than declared", expected=f"{limit:,} bytes")
        return data

    def check_crc(self, max_bytes: int | None) -> tuple[list[str], int]:
        """CRC-check members until ``max_bytes`` have been read. Returns (bad members, members left unchecked)."""
        bad: list[str] = []
        budget = float("inf") if max_bytes is None else max_bytes
        read = 0
        for i, info in enumerate(self.infos):
            if read + info.file_size > budget:
                return bad, len(self.infos) - i
            try:
                with self.zf.open(info) as f:
                    while f.read(1 << 20):
                        pass
            except ZIP_ERRORS as err:
                bad.append(f"{info.filename} ({_text(err)})")
            read += info.file_size
        return bad, 0

    # -- storages -------------------------------------------------------------------------------------------------
    def data_offset(self, info: zipfile.ZipInfo) -> int:
        if not 0 <= info.header_offset < self.size:
            raise CorruptCheckpointError.build(
                "zip member", received=f"{info.filename} placed outside the file", expected="an intact archive"
            )
        self._fh.seek(info.header_offset)
        header = self._fh.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise CorruptCheckpointError.build(
                "zip member", received=f"{info.filename} without a valid local header", expected="an intact archive"
            )
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        if start + info.compress_size > self.size:
            raise CorruptCheckpointError.build(
                "zip member", received=f"{info.filename} running past the end of the file",
                expected="a complete archive", hint="The file is truncated; download it again.",
            )
        return start

    def _whole(self) -> object:
        if self._buffer is None:
            if isinstance(self.source, (bytes, bytearray)):
                self._buffer = bytearray(self.source)
            else:
                self._buffer = mmap_module.mmap(self._fh.fileno(), 0, access=mmap_module.ACCESS_COPY)
        return self._buffer

    def record(self, name: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        """Member ``name`` as a 1-D ``dtype`` tensor of at least ``numel`` elements (checked before any allocation)."""
        info = self.members.get(name)
        if info is None:
            raise CorruptCheckpointError.build(
                "storage record", received=f"a reference to {name}, which the archive lacks",
                expected="every referenced record present", hint="The file is truncated or damaged.",
            )
        itemsize = dtype.itemsize
        needed = numel * itemsize
        if info.file_size < needed:
            raise CorruptCheckpointError.build(
                "storage record",
                received=f"{name} with {info.file_size:,} bytes",
                expected=f"{needed:,} bytes ({numel:,} × {str(dtype).removeprefix('torch.')}) as the pickle declares",
                hint="The file is damaged or crafted: a declared tensor size is larger than the stored data.",
            )
        if needed == 0:
            return torch.empty(0, dtype=dtype)
        if info.compress_type != zipfile.ZIP_STORED:
            raw = torch.frombuffer(bytearray(self.read_member(name, limit=max(needed, info.file_size))), dtype=torch.uint8)
            return raw[:needed].view(dtype)
        from pthkit.checkpoint._formats import map_bytes

        return map_bytes(self._whole(), self.data_offset(info), needed, dtype, copy=not self.mmap)


class ZipStorages:
    """:class:`~pthkit.checkpoint._inert.StorageProvider` for ``<prefix><folder>/<key>`` records."""

    def __init__(self, archive: ZipArchive, base: str) -> None:
        self.archive, self.base = archive, base

    def get(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        return self.archive.record(f"{self.base}/{key}", dtype, numel)


def _text(err: BaseException) -> str:
    return (" ".join(str(err).split()) or type(err).__name__)[:160]
