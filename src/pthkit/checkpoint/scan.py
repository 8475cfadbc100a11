"""``scan_file``: what a weights file would do if loaded, found by running the inert reader's machine — never executing.

Verdicts (see :class:`~pthkit.checkpoint.types.ScanReport`): "safe" only when every pickle that ``torch.load`` could
unpickle was run to its end by the machine, references only pure-data rebuilders, and the container is intact;
"needs-trust" for unknown classes, TorchScript code, unparseable or damaged data, bytes no loader reads, budgets hit;
"malicious-looking" for globals that can call, import or fetch attributes, and for structural tricks.

The order of formats is ``torch.load``'s own: a zip (``PK\\x03\\x04``) first; then, for a real file, a valid tar header
(torch's pre-0.4 format, whose members it unpickles); then the legacy stream of pickles, whose first pickle torch
unpickles whatever it is. Every ``torch.storage._load_from_bytes`` payload is followed the same way, recursively,
within a depth and byte budget.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from pthkit.checkpoint._formats import MAX_NESTED, MAX_NESTED_BYTES, NestedBudget
from pthkit.checkpoint._inert import ByteSource, InertObject, StorageProvider, _Marker, inert_class
from pthkit.checkpoint._paths import check_input, read_small
from pthkit.checkpoint._pickle_scan import BoundedReader, PickleScan, scan_pickle
from pthkit.checkpoint._policy import classify
from pthkit.checkpoint._safetensors import read_header
from pthkit.checkpoint._zip import ZipArchive
from pthkit.checkpoint.detect import INDEX_LIMIT, LEGACY_MAGIC, detect_format, is_tar_header
from pthkit.checkpoint.types import Finding, ScanReport, Verdict
from pthkit.errors import BudgetExceededError, CheckpointError, CorruptCheckpointError, InputNotFoundError

_ORDER = {"safe": 0, "needs-trust": 1, "malicious-looking": 2}
MAX_TRAILING_PICKLES = 64  # pickles walked in bytes no loader reads (best effort, to name what hides there)
MAX_TAR_MEMBER = 1 << 30
MAX_RECORDS = 1_000_000


class _Collector:
    def __init__(self) -> None:
        self.globals: list[str] = []
        self.findings: list[Finding] = []
        self.verdict: Verdict = "safe"

    def raise_to(self, verdict: Verdict) -> None:
        if _ORDER[verdict] > _ORDER[self.verdict]:
            self.verdict = verdict

    def add(self, kind: str, detail: str, severity: str) -> None:
        f = Finding(kind, detail, severity)  # type: ignore[arg-type]
        if f not in self.findings and len(self.findings) < 1000:
            self.findings.append(f)
        if severity == "danger":
            self.raise_to("malicious-looking")
        elif severity == "warning":
            self.raise_to("needs-trust")

    def pickle(self, where: str, result: PickleScan) -> None:
        for g in result.globals:
            if g not in self.globals:
                self.globals.append(g)
            rating = classify(g)
            called = " and calls it" if g in result.called else ""
            if rating == "dangerous":
                self.add("dangerous-global", f"{where}: references {g}{called} (can call, import or fetch attributes)", "danger")
            elif rating == "unknown":
                self.add("unknown-global", f"{where}: references {g}{called} (loading would import and run it)", "warning")
        for kind, detail, severity in result.problems:
            self.add(kind, f"{where}: {detail}", severity)
        if result.error is not None:
            self.add(result.error_kind, f"{where}: the pickle machine stopped ({result.error})", "warning")


class _AnyRecords:
    """Storage references of pickles torch does not read as the main one: meta tensors, nothing checked or mapped."""

    def get(self, key: str, dtype: Any, numel: int) -> Any:
        import torch

        return torch.empty(numel, dtype=dtype, device="meta")


class _MetaRecords:
    """Checks every storage reference against the archive (present, large enough) and maps nothing."""

    def __init__(self, archive: ZipArchive, base: str) -> None:
        self.archive, self.base = archive, base

    def get(self, key: str, dtype: Any, numel: int) -> Any:
        import torch

        name = f"{self.base}/{key}"
        info = self.archive.members.get(name)
        if info is None or info.file_size < numel * dtype.itemsize:
            raise CorruptCheckpointError(
                f"storage record: received {'a missing' if info is None else 'a short'} record {name}; expected the declared size."
            )
        return torch.empty(numel, dtype=dtype, device="meta")


class _LegacyRecords:
    """Legacy stream: remember each storage's dtype and size (the records follow the pickles)."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[Any, int]] = {}

    def get(self, key: str, dtype: Any, numel: int) -> Any:
        import torch

        if len(self.seen) > MAX_RECORDS:
            raise BudgetExceededError(f"legacy file: received more than {MAX_RECORDS:,} storages; expected a checkpoint.")
        self.seen[key] = (dtype, numel)
        return torch.empty(numel, dtype=dtype, device="meta")


class _Scanner:
    def __init__(self, c: _Collector, max_bytes: int | None) -> None:
        self.c, self.max_bytes = c, max_bytes
        self.budget = NestedBudget(MAX_NESTED, MAX_NESTED_BYTES)
        self._payloads = 0
        self._seen_payloads: dict[bytes, Any] = {}

    # -- one pickle ---------------------------------------------------------------------------------------------------
    def run(self, where: str, stream: ByteSource, storages: StorageProvider | None, depth: int) -> PickleScan:
        result = scan_pickle(stream, storages, nested=self._nested(where, depth))
        self.c.pickle(where, result)
        return result

    def _nested(self, where: str, depth: int) -> Callable[[bytes], Any]:
        def follow(data: bytes) -> Any:
            digest = hashlib.blake2b(data, digest_size=16).digest()
            if digest in self._seen_payloads:  # the same payload called again (memo): walked once
                return self._seen_payloads[digest]
            self._payloads += 1
            w = f"{where}[payload {self._payloads}]"
            placeholder = inert_class("torch.storage._load_from_bytes()")()
            self._seen_payloads[digest] = placeholder
            try:
                self.budget.take(depth + 1, len(data))
            except BudgetExceededError as err:
                self.c.add("budget", f"{w}: {err}", "warning")
                return placeholder
            self.c.add("nested", f"{w}: a {len(data):,}-byte payload torch.load unpickles (followed)", "info")
            if data[:4] == b"PK\x03\x04":
                try:
                    archive = ZipArchive(data)
                except CheckpointError as err:
                    self.c.add("unparseable", f"{w}: {err}", "warning")
                    return placeholder
                try:
                    value = self.zip(archive, w, None, depth + 1)
                finally:
                    archive.close()
            else:
                value = self.legacy_stream(io.BytesIO(data), len(data), w, depth + 1)[1]
            value = placeholder if value is None else value  # a storage payload goes on as a (meta) storage
            self._seen_payloads[digest] = value
            return value

        return follow

    def trailing(self, where: str, stream: ByteSource, start: int, size: int, depth: int, why: str) -> None:
        """Bytes no loader reads: a finding, and every pickle found there walked to name what hides in it."""
        if start >= size:
            return
        self.c.add("trailing-data", f"{where}: {size - start:,} bytes {why}", "warning")
        reader = BoundedReader(stream, 0, size)
        pos = start
        for _ in range(MAX_TRAILING_PICKLES):
            reader.seek(pos)
            result = scan_pickle(reader, _AnyRecords(), nested=self._nested(f"{where}+{pos}", depth))
            if result.error is not None and not result.globals:
                return
            result.error = None  # not being a pickle is expected here; the trailing-data finding already says so
            self.c.pickle(f"{where}+{pos}", result)
            if result.end <= pos or result.end >= size:
                return
            pos = result.end

    # -- legacy stream: what torch.load reads when the file is neither zip nor tar ----------------------------------
    def legacy_stream(self, fh: BinaryIO, size: int, where: str, depth: int) -> tuple[str, Any]:
        """Walk the pickles torch.load's legacy path reads; returns the kind seen and the main object (scan mode)."""
        reader = BoundedReader(fh, 0, size)
        first = self.run(where, reader, None, depth)
        if first.error is not None:
            return "pickle", None
        if first.value != LEGACY_MAGIC:
            # torch.load stops here ("Invalid magic number"); pickle.load reads only this pickle too.
            self.trailing(where, reader, first.end, size, depth, "after the pickle (no loader reads them)")
            return "pickle", None
        version = self.run(f"{where}@{first.end}", reader, None, depth)
        if version.error is not None or version.value != 1001:
            return "legacy", None
        sys_info = self.run(f"{where}@{version.end}", reader, None, depth)
        if sys_info.error is not None:
            return "legacy", None
        records = _LegacyRecords()
        main = self.run(f"{where}@{sys_info.end}", reader, records, depth)
        if main.error is not None:
            return "legacy", None
        keys = self.run(f"{where}@{main.end}", reader, None, depth)
        if keys.error is not None:
            return "legacy", None
        if not isinstance(keys.value, list) or not all(isinstance(k, str) for k in keys.value):
            self.c.add("integrity", f"{where}: a malformed storage key list", "warning")
            return "legacy", None
        pos = keys.end
        for key in keys.value:
            reader.seek(pos)
            head = reader.read(8)
            dtype, declared = records.seen.get(key, (None, 0))
            if len(head) != 8 or dtype is None:
                self.c.add("integrity", f"{where}: storage record {key!r} missing or unreferenced", "warning")
                return "legacy", None
            (numel,) = struct.unpack("<q", head)
            if numel < declared or numel < 0 or pos + 8 + numel * dtype.itemsize > size:
                self.c.add("integrity", f"{where}: storage record {key!r} shorter than declared or past the end", "warning")
                return "legacy", None
            pos += 8 + numel * dtype.itemsize
        missing = [k for k in records.seen if k not in set(keys.value)]
        if missing:
            self.c.add("integrity", f"{where}: references to storages {missing[:3]} that the file lacks", "warning")
        self.trailing(where, reader, pos, size, depth, "after the last storage record (torch.load never reads them)")
        return "legacy", main.value

    # -- zip ------------------------------------------------------------------------------------------------------------
    def zip(self, archive: ZipArchive, where: str, max_bytes: int | None, depth: int) -> Any:
        """Walk every pickle member; returns the main pickle's object (scan mode) or None."""
        main_value: Any = None
        problems = archive.problems()
        for prob in problems:
            self.c.add(prob.kind, f"{where}: {prob.detail}", prob.severity)
        if archive.is_torchscript():
            self.c.add("torchscript", f"{where}: a TorchScript archive carries code that runs when loaded with torch.jit.load", "warning")
        main = archive.find_main_pickle()
        if main is None:
            self.c.add("unparseable", f"{where}: no data.pkl in the archive", "warning")
        if not any(p.kind == "budget" for p in problems):
            bad, unchecked = archive.check_crc(max_bytes)
            for b in bad:
                self.c.add("integrity", f"{where}: bad CRC or damaged member {b}", "warning")
            if unchecked:
                self.c.add("integrity", f"{where}: CRC of {unchecked} members not verified (max_bytes budget)", "info")
        strict = not any(p.kind in ("budget", "duplicate") for p in problems)
        for name in archive.pickle_members():
            try:
                data = archive.read_member(name)
            except CheckpointError as err:
                # A damaged member: still walk it, from its raw bytes when stored uncompressed.
                self.c.add("integrity", f"{where}/{name}: {err}", "warning")
                raw = _raw_member(archive, name)
                if raw is None:
                    continue
                data = raw
            storages: StorageProvider = (
                _MetaRecords(archive, name[: -len(".pkl")]) if strict and name == main else _AnyRecords()
            )
            stream = io.BytesIO(data)
            result = self.run(f"{where}/{name}", stream, storages, depth)
            if result.error is None:
                if name == main:
                    main_value = result.value
                self.trailing(f"{where}/{name}", stream, result.end, len(data), depth, "after the pickle's STOP")
        # Duplicate members: zipfile keeps the last; other readers the first. Walk every copy.
        seen: set[str] = set()
        for info in archive.infos:
            if info.filename.endswith(".pkl") and info.filename in seen:
                try:
                    with archive.zf.open(info) as f:
                        data = f.read(1 << 30)
                except Exception as err:  # noqa: BLE001 - a damaged duplicate is reported, not raised
                    self.c.add("integrity", f"{where}/{info.filename} (duplicate): {type(err).__name__}", "warning")
                    continue
                self.run(f"{where}/{info.filename} (duplicate)", io.BytesIO(data), _AnyRecords(), depth)
            seen.add(info.filename)
        return main_value

    # -- tar: torch's pre-0.4 format, tried first for every real file that is not a zip ---------------------------------
    def tar(self, p: Path) -> None:
        self.c.add(
            "legacy-tar",
            f"{p.name}: the first 512 bytes form a tar header, so torch.load reads the file as its pre-0.4 tar format and "
            "unpickles the members storages, tensors and pickle (torch.load(weights_only=True) refuses it)",
            "warning",
        )
        try:
            with tarfile.open(p, mode="r:", format=tarfile.PAX_FORMAT) as tf:
                for member in ("storages", "tensors", "pickle"):
                    try:
                        info = tf.getmember(member)
                    except KeyError:
                        continue
                    if not info.isfile() or info.size > MAX_TAR_MEMBER:
                        self.c.add("unparseable", f"{p.name}:{member}: not a regular member or too large", "warning")
                        continue
                    fh = tf.extractfile(info)
                    if fh is None:
                        continue
                    data = fh.read(info.size)
                    self._tar_member(f"{p.name}:{member}", member, data)
        except (tarfile.TarError, OSError, EOFError, ValueError, OverflowError) as err:
            self.c.add("unparseable", f"{p.name}: tar archive ({type(err).__name__}: {' '.join(str(err).split())[:120]})", "warning")

    def _tar_member(self, where: str, member: str, data: bytes) -> None:
        stream = io.BytesIO(data)
        reader = BoundedReader(stream, 0, len(data))

        def one(label: str, storages: StorageProvider | None = None) -> PickleScan | None:
            result = self.run(f"{where}@{reader.tell()}{label}", reader, storages, 0)
            return None if result.error is not None else result

        if member == "pickle":
            result = one("", _AnyRecords())
            if result is not None:
                self.trailing(where, stream, result.end, len(data), 0, "after the pickle")
            return
        count = one("")
        if count is None or not isinstance(count.value, int) or isinstance(count.value, bool):
            return
        for _ in range(min(count.value, MAX_RECORDS)):
            args = one("")
            if args is None:
                return
            value = args.value
            if member == "storages":
                kind = value[2] if isinstance(value, tuple) and len(value) == 3 else None
                if not isinstance(kind, _Marker) or kind.dtype is None:
                    self.c.add("unparseable", f"{where}: a storage record of an unknown type", "warning")
                    return
                head = reader.read(8)
                if len(head) != 8:
                    return
                (numel,) = struct.unpack("<q", head)
                reader.seek(reader.tell() + max(0, numel) * kind.dtype.itemsize)
            else:
                head = reader.read(8)
                if len(head) != 8:
                    return
                (ndim,) = struct.unpack("<i", head[:4])
                reader.seek(reader.tell() + 16 * max(0, min(ndim, 64)) + 8)
        if member == "storages":
            one(" (storage views)")

    # -- sharded -------------------------------------------------------------------------------------------------------
    def sharded(self, p: Path) -> None:
        from pthkit.checkpoint.reader import _find_index, _safe_shard, single_weights_file

        index = _find_index(p) if p.is_dir() else p
        if index is None:
            self.merge(scan_file(single_weights_file(p), max_bytes=self.max_bytes))
            return
        doc = json.loads(read_small(index, what="shard index", limit=INDEX_LIMIT).decode("utf-8"))
        weight_map = doc.get("weight_map", {}) if isinstance(doc, dict) else {}
        shards = sorted({str(v) for v in weight_map.values()}) if isinstance(weight_map, dict) else []
        for shard in shards:
            shard_path = _safe_shard(index.parent, shard)
            try:
                check_input(shard_path, what="shard", allow_dir=False)
            except InputNotFoundError:
                self.c.add("integrity", f"{index.name}: shard {shard} is missing", "warning")
                continue
            self.merge(scan_file(shard_path, max_bytes=self.max_bytes))

    def merge(self, sub: ScanReport) -> None:
        for g in sub.globals:
            if g not in self.c.globals:
                self.c.globals.append(g)
        for f in sub.findings:
            if f not in self.c.findings:
                self.c.findings.append(f)
        self.c.raise_to(sub.verdict)


def scan_file(path: str | os.PathLike, *, max_bytes: int | None = None) -> ScanReport:
    """Scan one weights file (or a shard index / folder) without executing anything from it.

    ``max_bytes`` bounds how many bytes of zip members are read to verify CRCs (``None``: all); members beyond the
    budget are reported as not verified. Pickles are always run through the machine in full.
    """
    p = Path(path)
    c = _Collector()
    kind, size = check_input(p)  # typed errors for FIFOs, devices, names too long, missing paths
    s = _Scanner(c, max_bytes)
    fmt = "sharded" if kind == "dir" else "unknown"
    try:
        if kind == "file":
            fmt = _scan_file(s, p, size)
        else:
            s.sharded(p)
    except BudgetExceededError as err:
        c.add("budget", str(err), "warning")
    except CheckpointError as err:
        c.add("unreadable", str(err), "warning")
    except (OSError, ValueError, OverflowError, MemoryError, RecursionError, NotImplementedError, EOFError) as err:
        c.add("unreadable", f"{type(err).__name__}: {' '.join(str(err).split())[:160]}", "warning")
    return ScanReport(p, fmt, c.verdict, c.globals, c.findings)


def _scan_file(s: _Scanner, p: Path, size: int) -> str:
    with open(p, "rb") as fh:
        head = fh.read(512)
    if head.startswith(b"PK\x03\x04"):
        archive = ZipArchive(p)
        try:
            s.zip(archive, p.name, s.max_bytes, 0)
            return "torchscript" if archive.is_torchscript() else "zip"
        finally:
            archive.close()
    if is_tar_header(head):
        s.tar(p)
        # Other readers (pickle.load, pthkit before this check) see the same bytes as a pickle stream: walk it too.
        with open(p, "rb") as fh:
            s.legacy_stream(fh, size, p.name, 0)
        return "tar"
    fmt: str
    try:
        fmt = detect_format(p)
    except CheckpointError as err:
        fmt = "unknown"
        s.c.add("unreadable", str(err), "warning")
    if fmt == "safetensors":
        header, _, _ = read_header(p)
        s.c.add("format", f"safetensors with {len(header)} tensors: holds no code", "info")
        if not p.name.endswith(".safetensors"):
            # torch.load picks safetensors by the name only; under another name it unpickles the first bytes.
            probe = _Scanner(_Collector(), s.max_bytes)
            with open(p, "rb") as fh:
                probe.legacy_stream(fh, size, p.name, 0)
            if probe.c.globals:
                s.merge(ScanReport(p, fmt, probe.c.verdict, probe.c.globals, probe.c.findings))
        return fmt
    if fmt == "sharded":
        s.sharded(p)
        return fmt
    if fmt in ("zip", "torchscript"):  # "PK\x05\x06" (an empty archive): torch reads it as a pickle stream
        s.c.add("unparseable", f"{p.name}: a zip archive torch.load does not recognize as one", "warning")
    # Neither zip nor tar: torch.load unpickles the legacy stream's first pickle, whatever the file looks like.
    with open(p, "rb") as fh:
        kind = s.legacy_stream(fh, size, p.name, 0)[0]
    if fmt in ("legacy", "pickle") and kind != fmt:
        s.c.add("format", f"{p.name}: detected as {fmt} but torch.load reads it as {kind}", "warning")
    return fmt


def _raw_member(archive: ZipArchive, name: str) -> bytes | None:
    info = archive.members[name]
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size > (1 << 30):
        return None
    try:
        start = archive.data_offset(info)
    except CheckpointError:
        return None
    archive._fh.seek(start)
    return archive._fh.read(info.compress_size)


__all__ = ["scan_file", "InertObject"]
