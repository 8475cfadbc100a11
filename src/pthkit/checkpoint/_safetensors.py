"""Safetensors: validate the header ourselves, then let the ``safetensors`` library memory-map the tensors.

The library already refuses most malformed headers, but with messages that do not say what to do and with
different wording per version; pthkit checks each rule first so every bad file gets a typed, one-line error.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import torch

from pthkit.errors import BudgetExceededError, CheckpointError, CorruptCheckpointError

# The safetensors library accepts headers up to 100 MB, which take it (and every tool after it) minutes to walk when
# they list a million tensors. Real files stay far below both limits (a 70B-parameter shard: < 100 KB, < 2,000 tensors).
MAX_HEADER = 16 * 1024 * 1024
MAX_TENSORS = 100_000

DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16,
    "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64, "F4": 4, "F6_E2M3": 6,
    "F6_E3M2": 6,
}

_HINT = "The file is damaged or was not written by a safetensors writer; download or export it again."


def _bad(received: str, expected: str, error: type[CheckpointError] = CorruptCheckpointError) -> Exception:
    return error.build("safetensors header", received=received, expected=expected, hint=_HINT)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _bad(f"the key {k!r} twice", "unique tensor names")
        out[k] = v
    return out


def read_header(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str], int]:
    """Validated ``(tensors, metadata, data_start)``; raises a typed error naming the broken rule."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _bad(f"a {size}-byte file", "an 8-byte header length followed by a JSON header")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER:
            raise _bad(f"a header length of {n:,} bytes", f"at most {MAX_HEADER:,} bytes", BudgetExceededError)
        if 8 + n > size:
            raise _bad(f"a header length of {n:,} bytes past the end of the {size:,}-byte file", "a header inside the file")
        raw = f.read(n)
    declared = raw.count(b'"data_offsets"')  # a byte count before parsing: refuse a million-tensor header in ms
    if declared > MAX_TENSORS:
        raise _bad(f"a header listing about {declared:,} tensors", f"at most {MAX_TENSORS:,}", BudgetExceededError)
    if not raw.startswith(b"{"):
        what = "a header starting with whitespace" if raw[:1].isspace() else f"a header starting with {raw[:8]!r}"
        raise _bad(what, "a JSON object starting with '{' (only trailing spaces are allowed)")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except CorruptCheckpointError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise _bad(f"invalid JSON ({' '.join(str(err).split())[:80]})", "a JSON object") from err
    if not isinstance(header, dict):
        raise _bad(f"a JSON {type(header).__name__}", "a JSON object")
    if len(header) > MAX_TENSORS:
        raise _bad(f"a header listing {len(header):,} tensors", f"at most {MAX_TENSORS:,}", BudgetExceededError)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise _bad("__metadata__ that is not a string-to-string map", "string values only")
    data_size = size - 8 - n
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) - {"dtype", "shape", "data_offsets"}:
            raise _bad(f"entry {name!r} = {str(info)[:60]}", "{dtype, shape, data_offsets}")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in DTYPE_BITS:
            raise _bad(f"unknown dtype {dtype!r} for {name!r}", f"one of {', '.join(sorted(DTYPE_BITS))}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise _bad(f"shape {shape!r} for {name!r}", "a list of non-negative integers")
        if (
            not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise _bad(f"data_offsets {offsets!r} for {name!r}", "[begin, end] integers")
        begin, end = offsets
        if begin < 0 or end < begin or end >= 1 << 63:
            raise _bad(f"data_offsets {offsets} for {name!r} (overflow or reversed)", "0 <= begin <= end < 2**63")
        if end > data_size:
            raise _bad(f"data_offsets {offsets} for {name!r} past the {data_size:,} data bytes", "offsets inside the file")
        bits = math.prod(shape) * DTYPE_BITS[dtype]
        if bits % 8 or bits // 8 != end - begin:
            raise _bad(
                f"{end - begin:,} bytes for {name!r} of shape {shape} {dtype}",
                f"{bits // 8:,} bytes (shape × dtype size)",
            )
        spans.append((begin, end, name))
    spans.sort()
    cursor = 0
    for begin, end, name in spans:
        if begin < cursor:
            raise _bad(f"tensor {name!r} overlapping the previous tensor", "non-overlapping data_offsets")
        if begin > cursor:
            raise _bad(f"a gap of {begin - cursor} bytes before {name!r}", "contiguous data_offsets")
        cursor = end
    if cursor != data_size:
        raise _bad(f"{data_size - cursor:,} trailing bytes after the last tensor", "the data to end at the last tensor")
    return header, dict(metadata), 8 + n


def read_tensors(path: Path, *, mmap: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors (memory-mapped by the safetensors library) and ``__metadata__`` of a validated file."""
    from safetensors import SafetensorError, safe_open

    header, metadata, _ = read_header(path)
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for name in header:
                t = f.get_tensor(name)
                tensors[name] = t if mmap else t.clone()
    except (SafetensorError, RuntimeError, ValueError, TypeError, OSError) as err:
        raise CorruptCheckpointError.build(
            "safetensors file", received=f"an error from the safetensors library ({' '.join(str(err).split())[:120]})",
            expected="a readable file", hint=_HINT,
        ) from err
    return tensors, metadata
