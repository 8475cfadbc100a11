"""Walk a pickle's opcodes with :func:`pickletools.genops` — nothing is ever executed — and list what it references.

Written by hand because no maintained library exposes this as an API (picklescan / modelscan are CLIs with their own
policy); :mod:`pickletools` does the parsing, this module only tracks the strings a ``STACK_GLOBAL`` takes from the
stack and checks ``FRAME`` declarations against where the opcodes really are.
"""

from __future__ import annotations

import io
import pickletools
from dataclasses import dataclass, field
from typing import BinaryIO

from pthkit.checkpoint._policy import classify, normalize_global

_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}
)
_PUSH_OPS_NON_STRING = frozenset(
    {
        "NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT",
        "BINFLOAT", "EMPTY_LIST", "EMPTY_DICT", "EMPTY_TUPLE", "EMPTY_SET", "BINBYTES", "SHORT_BINBYTES",
        "BINBYTES8", "BYTEARRAY8", "TUPLE1", "TUPLE2", "TUPLE3", "TUPLE", "LIST", "DICT", "REDUCE", "NEWOBJ",
        "NEWOBJ_EX", "OBJ", "INST", "BINPERSID", "PERSID", "FROZENSET", "GLOBAL", "STACK_GLOBAL", "EXT1", "EXT2",
        "EXT4", "NEXT_BUFFER",
    }
)
_CALL_OPS = frozenset({"REDUCE", "NEWOBJ", "NEWOBJ_EX", "OBJ", "INST", "BUILD"})


@dataclass
class PickleScan:
    """Globals and suspicious constructs of one pickle stream."""

    globals: list[str] = field(default_factory=list)
    called: set[str] = field(default_factory=set)  # non-data globals followed by a call opcode
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, detail, severity)
    nested_zips: list[bytes] = field(default_factory=list)
    end: int = 0  # offset just past STOP
    ops: int = 0
    error: str | None = None


class BoundedReader(io.RawIOBase):
    """A read-only view of ``[start, start+length)`` of a binary file whose ``read(n)`` never allocates past the end.

    Why: ``BufferedReader.read(n)`` allocates ``n`` bytes before reading, so a pickle declaring a 2**60-byte string
    would exhaust memory before the short read is noticed.
    """

    def __init__(self, raw: BinaryIO, start: int, length: int) -> None:
        super().__init__()
        self._raw, self._start, self._len, self._pos = raw, start, length, 0

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
        self._raw.seek(self._start + self._pos)
        data = self._raw.read(n)
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


def scan_pickle(stream: BinaryIO, *, max_ops: int = 50_000_000) -> PickleScan:
    """Walk one pickle from ``stream``'s current position up to and including its STOP opcode."""
    result = PickleScan()
    pushed: list[object] = []  # values pushed, strings kept, everything else None (enough for STACK_GLOBAL)
    memo: dict[int, object] = {}
    frame_end: int | None = None
    pending_global: str | None = None
    try:
        for opcode, arg, pos in pickletools.genops(stream):
            result.ops += 1
            if result.ops > max_ops:
                result.problems.append(("budget", f"more than {max_ops} pickle opcodes", "warning"))
                result.error = "too many opcodes"
                return result
            name = opcode.name
            if frame_end is not None and pos is not None and pos >= frame_end:
                if pos != frame_end:
                    result.problems.append(
                        ("frame", f"an opcode straddles a FRAME boundary at byte {frame_end}", "danger")
                    )
                frame_end = None
            if name == "FRAME":
                frame_end = pos + 9 + int(arg)
                continue
            if name in _STRING_OPS:
                pushed.append(arg)
                if isinstance(arg, str) and arg.startswith("PK\x03\x04"):  # protocol-2 bytes: _codecs.encode(str)
                    try:
                        result.nested_zips.append(arg.encode("latin1"))
                    except UnicodeEncodeError:
                        pass
            elif name in ("MEMOIZE",):
                memo[len(memo)] = pushed[-1] if pushed else None
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = pushed[-1] if pushed else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(int(arg)))
            elif name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                pending_global = _note_global(result, normalize_global(module, attr))
                pushed.append(None)
                if name == "INST":
                    _note_call(result, pending_global)
            elif name == "STACK_GLOBAL":
                module, attr = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
                if isinstance(module, str) and isinstance(attr, str):
                    pending_global = _note_global(result, normalize_global(module, attr))
                else:
                    result.problems.append(
                        ("stack-global", f"a STACK_GLOBAL at byte {pos} whose name is not a constant string", "danger")
                    )
                    pending_global = "<unresolved>"
                pushed.append(None)
            elif name in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"):
                if isinstance(arg, (bytes, bytearray)) and bytes(arg[:4]) == b"PK\x03\x04":
                    result.nested_zips.append(bytes(arg))
                pushed.append(None)
            elif name in _PUSH_OPS_NON_STRING:
                pushed.append(None)
            if name in _CALL_OPS and pending_global is not None:
                _note_call(result, pending_global)
            if name == "STOP":
                end = stream.tell()
                result.end = end
                if frame_end is not None and frame_end > end:
                    result.problems.append(
                        ("frame", f"a FRAME declares {frame_end - end} bytes past the pickle's STOP", "danger")
                    )
                if len(pushed) > 4096:
                    del pushed[:-64]
                return result
            if len(pushed) > 1_000_000:
                del pushed[:-64]
    except (ValueError, EOFError, KeyError, IndexError, TypeError, OverflowError, MemoryError) as err:
        result.error = _describe(err)
        result.end = stream.tell()
        if frame_end is not None and frame_end > result.end:
            result.problems.append(("frame", f"a FRAME declares bytes past the end of the data ({frame_end})", "danger"))
    return result


def _describe(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:200]


def _note_global(result: PickleScan, qualified: str) -> str:
    if qualified not in result.globals:
        result.globals.append(qualified)
    return qualified


def _note_call(result: PickleScan, qualified: str | None) -> None:
    if qualified is None:
        return
    if qualified == "<unresolved>" or classify(qualified) != "data":
        result.called.add(qualified)
