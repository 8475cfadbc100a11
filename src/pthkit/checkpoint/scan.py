"""``scan_file``: what a weights file would do if loaded, found by walking its pickles' opcodes — never executing.

Verdicts (see :class:`~pthkit.checkpoint.types.ScanReport`): "safe" only when every pickle parses, references only
pure-data rebuilders, and the container is intact; "needs-trust" for unknown classes, TorchScript code, unparseable
or damaged data; "malicious-looking" for globals that run commands or code and for structural tricks.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

from pthkit.checkpoint._formats import scan_stream_pickles
from pthkit.checkpoint._pickle_scan import PickleScan, scan_pickle
from pthkit.checkpoint._policy import classify
from pthkit.checkpoint._safetensors import read_header
from pthkit.checkpoint._zip import ZipArchive
from pthkit.checkpoint.detect import detect_format
from pthkit.checkpoint.types import Finding, ScanReport, Verdict
from pthkit.errors import (
    BudgetExceededError,
    CheckpointError,
    CorruptCheckpointError,
    InputNotFoundError,
    UnsupportedFormatError,
)

MAX_NESTED = 2
_ORDER = {"safe": 0, "needs-trust": 1, "malicious-looking": 2}


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
        if f not in self.findings:
            self.findings.append(f)
        if severity == "danger":
            self.raise_to("malicious-looking")
        elif severity == "warning":
            self.raise_to("needs-trust")

    def pickle(self, where: str, result: PickleScan, depth: int) -> None:
        for g in result.globals:
            if g not in self.globals:
                self.globals.append(g)
            kind = classify(g)
            called = " and calls it" if g in result.called else ""
            if kind == "dangerous":
                self.add("dangerous-global", f"{where}: references {g}{called} (can run code)", "danger")
            elif kind == "unknown":
                self.add("unknown-global", f"{where}: references {g}{called} (loading would import and run it)", "warning")
        for kind, detail, severity in result.problems:
            self.add(kind, f"{where}: {detail}", severity)
        if result.error is not None:
            self.add("unparseable", f"{where}: pickle could not be parsed ({result.error})", "warning")
        for i, blob in enumerate(result.nested_zips):
            if depth >= MAX_NESTED:
                self.add("budget", f"{where}: archives nested too deep", "warning")
                break
            try:
                _scan_zip(self, ZipArchive(blob), f"{where}[nested {i}]", None, depth + 1)
            except CheckpointError as err:
                self.add("unparseable", f"{where}[nested {i}]: {err}", "warning")


def scan_file(path: str | os.PathLike, *, max_bytes: int | None = None) -> ScanReport:
    """Scan one weights file (or a shard index / folder) without executing anything from it.

    ``max_bytes`` bounds how many bytes of zip members are read to verify CRCs (``None``: all); members beyond the
    budget are reported as not verified. Pickles are always walked in full.
    """
    p = Path(path)
    c = _Collector()
    try:
        fmt: str = detect_format(p)
    except InputNotFoundError:
        raise
    except CheckpointError as err:
        c.add("unreadable", str(err), "warning")
        return ScanReport(p, "unknown", c.verdict, c.globals, c.findings)
    try:
        _scan_format(c, p, fmt, max_bytes)
    except BudgetExceededError as err:
        c.add("budget", str(err), "danger")
    except CheckpointError as err:
        c.add("unreadable", str(err), "warning")
    except (OSError, ValueError, OverflowError, MemoryError, RecursionError, NotImplementedError, EOFError) as err:
        c.add("unreadable", f"{type(err).__name__}: {' '.join(str(err).split())[:160]}", "warning")
    return ScanReport(p, fmt, c.verdict, c.globals, c.findings)


def _scan_format(c: _Collector, p: Path, fmt: str, max_bytes: int | None) -> None:
    if fmt == "safetensors":
        header, _, _ = read_header(p)
        c.add("format", f"safetensors with {len(header)} tensors: holds no code", "info")
    elif fmt in ("zip", "torchscript"):
        archive = ZipArchive(p)
        try:
            _scan_zip(c, archive, p.name, max_bytes, 0)
        finally:
            archive.close()
    elif fmt == "legacy":
        size = p.stat().st_size
        with open(p, "rb") as fh:
            n = 0
            for start, result in scan_stream_pickles(fh, size, count=5):
                c.pickle(f"{p.name}@{start}", result, 0)
                n += 1
            if n < 5:
                c.add("unparseable", f"{p.name}: legacy file with {n} of its 5 pickles", "warning")
        _validate_file(c, p, fmt)
    elif fmt == "pickle":
        size = p.stat().st_size
        with open(p, "rb") as fh:
            results = list(scan_stream_pickles(fh, size))
        for i, (start, result) in enumerate(results):
            if i and result.error is not None:
                c.add("trailing-data", f"{p.name}: {size - start} bytes after the pickle that are not a pickle", "warning")
                break
            c.pickle(f"{p.name}@{start}" if i else p.name, result, 0)
        if len(results) > 1:
            c.add("trailing-data", f"{p.name}: more than one pickle in the file (loaders read only the first)", "warning")
        _validate_file(c, p, fmt)
    elif fmt == "sharded":
        _scan_sharded(c, p, max_bytes)


def _validate_file(c: _Collector, p: Path, fmt: str) -> None:
    """Read legacy / raw-pickle files inertly (nothing runs) so lying sizes and truncation become findings."""
    from pthkit.checkpoint._formats import open_legacy, read_raw_pickle

    try:
        open_legacy(p, mmap=True) if fmt == "legacy" else read_raw_pickle(p)
    except UnsupportedFormatError:
        pass
    except CheckpointError as err:
        c.add("integrity", f"{p.name}: {err}", "warning")


def _scan_zip(c: _Collector, archive: ZipArchive, where: str, max_bytes: int | None, depth: int) -> None:
    problems = archive.problems()
    for prob in problems:
        c.add(prob.kind, f"{where}: {prob.detail}", prob.severity)
    if archive.is_torchscript():
        c.add("torchscript", f"{where}: a TorchScript archive carries code that runs when loaded with torch.jit.load", "warning")
    if archive.find_main_pickle() is None:
        c.add("unparseable", f"{where}: no data.pkl in the archive", "warning")
    if not any(p.kind == "budget" for p in problems):
        bad, unchecked = archive.check_crc(max_bytes)
        for b in bad:
            c.add("integrity", f"{where}: bad CRC or damaged member {b}", "warning")
        if unchecked:
            c.add("integrity", f"{where}: CRC of {unchecked} members not verified (max_bytes budget)", "info")
    for name in archive.pickle_members():
        try:
            data = archive.read_member(name)
        except CheckpointError as err:
            # A damaged member: still list what it references, from its raw bytes when stored uncompressed.
            c.add("integrity", f"{where}/{name}: {err}", "warning")
            data = _raw_member(archive, name)
            if data is None:
                continue
        stream = io.BytesIO(data)
        result = scan_pickle(stream)
        c.pickle(f"{where}/{name}", result, depth)
        if result.error is None and result.end < len(data):
            c.add("trailing-data", f"{where}/{name}: {len(data) - result.end} bytes after the pickle's STOP", "warning")
            rest = scan_pickle(io.BytesIO(data[result.end:]))
            if rest.error is None:
                c.pickle(f"{where}/{name}+{result.end}", rest, depth)
    _validate_structure(c, archive, where)
    # Duplicate members: zipfile keeps the last; other readers the first. Scan every copy.
    seen: set[str] = set()
    for info in archive.infos:
        if info.filename.endswith(".pkl") and info.filename in seen:
            try:
                with archive.zf.open(info) as f:
                    data = f.read(1 << 30)
                c.pickle(f"{where}/{info.filename} (duplicate)", scan_pickle(io.BytesIO(data)), depth)
            except Exception as err:  # noqa: BLE001 - a damaged duplicate is reported, not raised
                c.add("integrity", f"{where}/{info.filename} (duplicate): {type(err).__name__}", "warning")
        seen.add(info.filename)


class _MetaRecords:
    """Checks every storage reference against the archive (present, large enough) and maps nothing."""

    def __init__(self, archive: ZipArchive, base: str) -> None:
        self.archive, self.base = archive, base

    def get(self, key: str, dtype, numel: int):
        import torch

        name = f"{self.base}/{key}"
        info = self.archive.members.get(name)
        if info is None or info.file_size < numel * dtype.itemsize:
            raise CorruptCheckpointError(f"storage record: received {'a missing' if info is None else 'a short'} record {name}; expected the declared size.")
        return torch.empty(numel, dtype=dtype, device="meta")


def _validate_structure(c: _Collector, archive: ZipArchive, where: str) -> None:
    """Unpickle the main pickle inertly against meta storages: lying sizes and missing records become findings."""
    from pthkit.checkpoint._inert import unpickle

    name = archive.find_main_pickle()
    if name is None or any(p.kind in ("budget", "duplicate") for p in archive.problems()):
        return
    try:
        data = archive.read_member(name)
        unpickle(io.BytesIO(data), _MetaRecords(archive, name[: -len(".pkl")]), nested=lambda b: None)
    except UnsupportedFormatError:
        pass  # sparse / quantized tensors: valid, read by torch's own safe loader
    except CheckpointError as err:
        c.add("integrity", f"{where}/{name}: {err}", "warning")


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


def _scan_sharded(c: _Collector, p: Path, max_bytes: int | None) -> None:
    from pthkit.checkpoint.reader import _find_index, _safe_shard

    from pthkit.checkpoint.reader import single_weights_file

    index = _find_index(p) if p.is_dir() else p
    if index is None:
        sub = scan_file(single_weights_file(p), max_bytes=max_bytes)
        c.globals.extend(sub.globals)
        c.findings.extend(sub.findings)
        c.raise_to(sub.verdict)
        return
    doc = json.loads(index.read_text(encoding="utf-8"))
    shards = sorted(set(doc.get("weight_map", {}).values()), key=str)
    for shard in shards:
        shard_path = _safe_shard(index.parent, shard)
        if not shard_path.is_file():
            c.add("integrity", f"{index.name}: shard {shard} is missing", "warning")
            continue
        sub = scan_file(shard_path, max_bytes=max_bytes)
        for g in sub.globals:
            if g not in c.globals:
                c.globals.append(g)
        for f in sub.findings:
            if f not in c.findings:
                c.findings.append(f)
        c.raise_to(sub.verdict)
