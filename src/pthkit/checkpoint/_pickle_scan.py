"""One pickle, walked by the inert reader's own machine (:func:`pthkit.checkpoint._inert.run_machine`) — never executed.

There is no second parser: the globals, calls and structural tricks reported here are exactly what the inert
unpickler saw, with a real stack (POP, POP_MARK, DUP, MEMO, MARK, STACK_GLOBAL). The scan mode allocates no tensor
data (storages are meta tensors) and hands every ``torch.storage._load_from_bytes`` payload to ``nested``.
An opcode or construct the machine does not model stops it, which makes the file not "safe".
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from pthkit.checkpoint._inert import ByteSource, StorageProvider, run_machine
from pthkit.errors import BudgetExceededError, CheckpointError


@dataclass
class PickleScan:
    """Globals and suspicious constructs of one pickle stream."""

    globals: list[str] = field(default_factory=list)
    called: set[str] = field(default_factory=set)  # globals the stream calls (REDUCE, NEWOBJ, INST, OBJ, BUILD)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, detail, severity)
    end: int = 0  # offset just past STOP
    error: str | None = None
    error_kind: str = "unparseable"  # "integrity" when the machine refused lying sizes or records
    value: Any = None  # the inert value (scan mode: meta tensors, placeholders)


class BoundedReader(io.RawIOBase):
    """A read-only view of ``[start, start+length)`` of a binary file whose ``read(n)`` never allocates past the end.

    Why: ``BufferedReader.read(n)`` allocates ``n`` bytes before reading, so a pickle declaring a 2**60-byte string
    would exhaust memory before the short read is noticed.
    """

    _CHUNK = 1 << 16

    def __init__(self, raw: BinaryIO | ByteSource, start: int, length: int) -> None:
        super().__init__()
        self._raw, self._start, self._len, self._pos = raw, start, length, 0
        self._buf, self._buf_pos = b"", 0  # read-ahead: the machine reads one opcode byte at a time

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._len}[whence]
        self._pos = max(0, min(self._len, base + pos))
        return self._pos

    def read(self, n: int = -1) -> bytes:
        left = self._len - self._pos
        n = left if n is None or n < 0 else min(n, left)
        if n <= 0:
            return b""
        off = self._pos - self._buf_pos
        if 0 <= off and off + n <= len(self._buf):
            self._pos += n
            return self._buf[off : off + n]
        self._raw.seek(self._start + self._pos)
        if n >= self._CHUNK:
            data = self._raw.read(n)
        else:
            self._buf, self._buf_pos = self._raw.read(min(self._CHUNK, left)), self._pos
            data = self._buf[:n]
        self._pos += len(data)
        return data

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        out = bytearray()
        limit = self._len - self._pos if size is None or size < 0 else size
        while len(out) < limit:
            chunk = self.read(min(8192, limit - len(out)))
            if not chunk:
                break
            i = chunk.find(b"\n")
            if i >= 0:
                out += chunk[: i + 1]
                self._pos -= len(chunk) - i - 1
                break
            out += chunk
        return bytes(out)


def scan_pickle(
    stream: ByteSource, storages: StorageProvider | None = None, *, nested: Callable[[bytes], Any] | None = None
) -> PickleScan:
    """Run the machine over one pickle from ``stream``'s current position up to and including its STOP opcode."""
    start = stream.tell()
    value, up, err = run_machine(stream, storages, nested=nested)
    result = PickleScan(globals=list(up.globals_seen), called=set(up.calls), problems=list(up.problems), value=value)
    result.end = stream.tell()
    if err is None:
        leftover = up.frame_leftover()
        if leftover > 0:
            result.problems.append(("frame", f"a FRAME holds {leftover:,} bytes past the pickle's STOP", "danger"))
        elif leftover < 0:
            result.problems.append(("frame", f"the pickle runs {-leftover:,} bytes past the end of its last FRAME", "danger"))
    else:
        result.error = _describe(err)
        if isinstance(err, BudgetExceededError):
            result.error_kind = "budget"
        elif isinstance(err, CheckpointError):
            result.error_kind = "integrity"
        if result.end <= start:
            result.end = start
    return result


def _describe(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text[:200]}" if not text.startswith(type(err).__name__) else text[:200]


def scan_bytes(data: bytes, storages: StorageProvider | None = None, *, nested: Callable[[bytes], Any] | None = None) -> PickleScan:
    """:func:`scan_pickle` over in-memory bytes."""
    return scan_pickle(io.BytesIO(data), storages, nested=nested)
