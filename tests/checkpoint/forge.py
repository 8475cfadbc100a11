"""Hand-made malformed files for the budget and integrity tests (torch-style zips with lying records, safetensors)."""

from __future__ import annotations

import collections
import json
import pickle
import struct
from pathlib import Path

import torch

from .hostile import zip_with_members


class FakeStorage:
    def __init__(self, key: str, numel: int, kind=torch.FloatStorage, location: str = "cpu") -> None:
        self.key, self.numel, self.kind, self.location = key, numel, kind, location


class FakeTensor:
    """Pickles exactly like a tensor saved by torch.save, but with any storage/size/stride we like."""

    def __init__(self, storage: FakeStorage, size, stride, offset: int = 0) -> None:
        self.storage, self.size, self.stride, self.offset = storage, tuple(size), tuple(stride), offset

    def __reduce__(self):
        return (
            torch._utils._rebuild_tensor_v2,
            (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict()),
        )


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, FakeStorage):
            return ("storage", obj.kind, obj.key, obj.location, obj.numel)
        return None


def forged_pickle(obj) -> bytes:
    import io

    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def forged_zip(path: Path, obj, records: dict[str, bytes], extra: list[tuple[str, bytes]] = ()) -> Path:
    """A torch.save-style zip: ``archive/data.pkl`` = ``obj`` pickled, ``archive/data/<key>`` = record bytes."""
    members = [("archive/data.pkl", forged_pickle(obj))]
    members += [(f"archive/data/{k}", v) for k, v in records.items()]
    members += [("archive/version", b"3\n"), *extra]
    return zip_with_members(path, members)


def float_bytes(n: int) -> bytes:
    return struct.pack(f"<{n}f", *range(n))


def safetensors_file(path: Path, header: dict | str | bytes, data: bytes, *, length: int | None = None) -> Path:
    """Write ``<u64 length><header><data>``; ``header`` may be raw text/bytes to forge broken JSON."""
    if isinstance(header, dict):
        raw = json.dumps(header).encode()
    elif isinstance(header, str):
        raw = header.encode()
    else:
        raw = header
    n = len(raw) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + raw + data)
    return path
