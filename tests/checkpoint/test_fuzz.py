"""Randomly damaged files (fixed seed): the reader and scanner only ever raise pthkit errors, in one line."""

from __future__ import annotations

import argparse
import pickle
import random

import numpy as np
import torch
from safetensors.torch import save_file

from pthkit.checkpoint import read_checkpoint, scan_file
from pthkit.errors import PthkitError


def _seeds(tmp_path) -> dict[str, bytes]:
    torch.manual_seed(0)
    sd = {"a.weight": torch.randn(4, 3), "a.bias": torch.randn(4), "n": torch.tensor(3)}
    out = {}
    torch.save({"state_dict": sd, "args": argparse.Namespace(lr=np.float64(0.1)), "arr": np.zeros(3)}, tmp_path / "z")
    torch.save({"state_dict": sd, "e": 1}, tmp_path / "l", _use_new_zipfile_serialization=False)
    save_file(sd, str(tmp_path / "s"))
    for name in "zls":
        out[name] = (tmp_path / name).read_bytes()
    out["p"] = pickle.dumps({"w": sd["a.weight"], "x": np.ones(2), "y": [1, 2.5, "s"]}, protocol=2)
    return out


def test_damaged_files_only_raise_typed_errors(tmp_path):
    rng = random.Random(1234)
    seeds = _seeds(tmp_path)
    for i in range(80):
        name, data = rng.choice(sorted(seeds.items()))
        b = bytearray(data)
        op = rng.random()
        if op < 0.5:
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif op < 0.8:
            b = b[: rng.randrange(1, len(b))]
        else:
            j = rng.randrange(len(b))
            b[j:j] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        path = tmp_path / f"damaged{i}.pth"
        path.write_bytes(bytes(b))
        try:
            read_checkpoint(path)
        except PthkitError as err:
            assert "\n" not in str(err)
        report = scan_file(path)
        assert report.verdict in ("safe", "needs-trust", "malicious-looking")
