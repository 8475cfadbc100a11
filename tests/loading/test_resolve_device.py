"""Device and dtype resolution: auto picks cuda > mps > cpu; names that do not exist here are refused, not replaced."""

from __future__ import annotations

import pytest
import torch

from pthkit.errors import LoadError
from pthkit.loading import resolve_device, resolve_dtype


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("pthkit.loading.device._mps_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr("pthkit.loading.device._mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_explicit_devices(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(LoadError, match=r"device: received 'cuda:3' \(0 CUDA device\(s\) available\)"):
        resolve_device("cuda:3")
    with pytest.raises(LoadError, match="device: received 'tpu'"):
        resolve_device("tpu")


def test_dtypes():
    assert resolve_dtype(None) is None
    assert resolve_dtype("fp16") is torch.float16
    assert resolve_dtype("torch.bfloat16") is torch.bfloat16
    assert resolve_dtype(torch.float32) is torch.float32
    with pytest.raises(LoadError, match="expected a floating dtype"):
        resolve_dtype(torch.int8)
    with pytest.raises(LoadError, match="dtype: received 'float8'; expected one of"):
        resolve_dtype("float8")
