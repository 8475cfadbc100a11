"""Fixtures for the preprocessing tests: the real efficientnet-lite0 model and models with known BN statistics."""

from __future__ import annotations

import pytest
import torch

from pthkit.preprocess.infer import NormCandidate, sample_batch


class TinyNet(torch.nn.Module):
    """conv -> BN -> ReLU -> pool -> linear: the smallest model with a stem batch-norm."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(in_chans, 16, 3, stride=2, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(16)
        self.head = torch.nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.conv(x)).relu().mean((2, 3)))


class _Stop(Exception):
    pass


def fit_first_bn(model: torch.nn.Module, pipeline: NormCandidate, batch: torch.Tensor) -> torch.nn.Module:
    """Give ``model`` batch-norm statistics produced under ``pipeline``: reset, cumulative average, train mode.

    Only the first batch-norm's statistics matter to inference, so the forward pass stops right after it runs
    (keeps the tests fast); the layer itself updates its statistics exactly as in training.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None

    def stop(*_: object) -> None:
        raise _Stop

    handles = [bn.register_forward_hook(stop) for bn in bns]
    model.train()
    try:
        with torch.no_grad():
            for chunk in pipeline.apply(batch).split(8):
                try:
                    model(chunk)
                except _Stop:
                    pass
    finally:
        for h in handles:
            h.remove()
    model.eval()
    return model


@pytest.fixture(scope="session")
def fit_batch() -> torch.Tensor:
    """Training-like crops (other size, other seed than inference uses) of five of the sample photos."""
    from pthkit.samples import demo_photos

    return sample_batch(demo_photos()[:5], crops_per_image=3, size=160, seed=123)


@pytest.fixture(scope="session")
def lite0_model(lite0_path):
    """timm efficientnet_lite0 holding the real file's tensors (lukemelas names zipped in order onto timm's)."""
    import timm

    state = torch.load(lite0_path, map_location="cpu", weights_only=True)
    model = timm.create_model("efficientnet_lite0")
    own = model.state_dict()
    assert len(state) == len(own) == 296
    mapped = {}
    for (file_key, tensor), (model_key, ref) in zip(state.items(), own.items()):
        assert tensor.shape == ref.shape, (file_key, model_key)
        mapped[model_key] = tensor
    model.load_state_dict(mapped)
    return model.eval()


@pytest.fixture
def tiny_net():
    """A factory for :class:`TinyNet` (seeded)."""

    def make(num_classes: int = 10, in_chans: int = 3) -> TinyNet:
        torch.manual_seed(0)
        return TinyNet(num_classes, in_chans)

    return make


@pytest.fixture(name="fit_first_bn")
def _fit_first_bn():
    return fit_first_bn
