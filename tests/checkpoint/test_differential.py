"""Differential: a file ``torch.load(weights_only=True)`` refuses is never "safe" in pthkit, unless the reason is one
of the documented ones below (pthkit reads more formats than torch's safe loader, never more code).

Documented reasons pthkit may still call a file "safe" that torch's safe loader refuses:

- ``numpy``: NumPy array / scalar / dtype rebuilders (``numpy.core.multiarray._reconstruct`` …) — pthkit rebuilds
  them from raw bytes (object arrays refused); torch's allowlist does not include them.
- ``nested``: ``torch.storage._load_from_bytes`` — pthkit follows the payload with the same machine (and rates what is
  inside); torch's safe loader refuses the global itself.
- ``format``: the file is not a ``torch.save`` stream at all (a bare ``pickle.dump`` of data: "Invalid magic number";
  a safetensors file, which holds no pickle).
- ``protocol``: torch's safe unpickler does not implement opcodes of pickle protocols 3-5 ("Unsupported operand",
  e.g. FRAME/MEMOIZE of a protocol-4 ``pickle.dump``); pthkit's machine does, and rates the globals.

The converse (torch's safe loader accepts, pthkit does not call it safe) is allowed: pthkit is stricter on damaged
archives (duplicate members, bad CRCs) and on TorchScript.
"""

from __future__ import annotations

import argparse
import pickle
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pthkit.checkpoint import scan_file

from .hostile import ALL_HOSTILE, legacy_bytes, torch_zip_bytes


def _reason(torch_error: str, fmt: str) -> str | None:
    if fmt == "safetensors" or "Invalid magic number" in torch_error or "invalid load key" in torch_error:
        return "format"
    if "Unsupported operand" in torch_error:
        return "protocol"
    if "numpy" in torch_error:
        return "numpy"
    if "_load_from_bytes" in torch_error:
        return "nested"
    return None


def _benign(tmp_path):
    g = torch.Generator().manual_seed(0)
    sd = {"fc.weight": torch.randn(3, 4, generator=g), "fc.bias": torch.randn(3, generator=g)}
    files = {}

    def put(name, data: bytes):
        files[name] = tmp_path / name
        files[name].write_bytes(data)

    put("zip.pth", torch_zip_bytes(sd))
    put("legacy.pth", legacy_bytes(sd))
    put("numpy.pth", torch_zip_bytes({"sd": sd, "mean": np.arange(3.0), "n": np.int64(3)}))
    put("namespace.pth", torch_zip_bytes({"sd": sd, "args": argparse.Namespace(lr=0.1)}))
    put("raw_tensors.pkl", pickle.dumps({"w": sd["fc.weight"]}, protocol=2))
    put("raw_data.pkl", pickle.dumps({"a": [1, 2.5, "x"]}, protocol=4))
    put("meta.pth", torch_zip_bytes({"w": torch.empty(2, 3, device="meta")}))
    put("sparse.pth", torch_zip_bytes({"s": torch.eye(3).to_sparse()}))
    put("nested_ok.pkl", pickle.dumps({"w": torch.ones(2)}, protocol=4))
    save_file(sd, str(tmp_path / "model.safetensors"))
    files["model.safetensors"] = tmp_path / "model.safetensors"
    return files


def test_torch_refusal_implies_not_safe(tmp_path):
    paths = dict(_benign(tmp_path))
    for make in ALL_HOSTILE:
        sub = tmp_path / make.__name__
        sub.mkdir()
        path, _ = make(sub)
        paths[make.__name__] = path
    counts = {"both-safe": 0, "both-refuse": 0, "documented": 0, "pthkit-stricter": 0}
    for name, path in paths.items():
        report = scan_file(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                torch.load(path, weights_only=True, map_location="cpu")
                torch_error = None
            except Exception as err:  # noqa: BLE001 - every refusal counts
                torch_error = f"{type(err).__name__}: {err}"
        if torch_error is None:
            counts["both-safe" if report.verdict == "safe" else "pthkit-stricter"] += 1
            continue
        if report.verdict != "safe":
            counts["both-refuse"] += 1
            continue
        reason = _reason(torch_error, report.format)
        assert reason is not None, f"{name}: torch.load(weights_only=True) refuses ({torch_error[:200]}) but scan says safe"
        counts["documented"] += 1
    assert counts["both-refuse"] >= len(ALL_HOSTILE) - 2 and counts["documented"] >= 2 and counts["both-safe"] >= 3, counts


@pytest.mark.parametrize("make", [m for m in ALL_HOSTILE if m.__name__ != "make_duplicate_members"], ids=lambda f: f.__name__)
def test_hostile_files_are_refused_by_both(make, tmp_path):
    path, marker = make(tmp_path)
    assert scan_file(path).verdict == "malicious-looking"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception):  # noqa: B017 - torch raises many types
            torch.load(path, weights_only=True, map_location="cpu")
    assert not marker.exists()
