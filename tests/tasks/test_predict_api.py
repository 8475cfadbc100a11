"""predict() as an API: arguments checked at call time, the caller's model untouched, any backend, tuple/dict
outputs, Ctrl-C reports how far the run got."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pthkit.engine import RunInterrupted, current_progress
from pthkit.errors import InputNotFoundError, PreprocessError
from pthkit.preprocess.types import Preprocess
from pthkit.tasks.predict import PredictionStream, predict

PRE = Preprocess(input_size=(3, 32, 32), crop_pct=1.0)


class Net(nn.Module):
    """Conv + BatchNorm + Dropout: eval vs train mode give different outputs."""

    def __init__(self, out: str = "tensor") -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8, 4)
        self.out = out

    def forward(self, x: torch.Tensor) -> Any:
        logits = self.fc(self.drop(self.bn(self.conv(x)).mean((2, 3))))
        if self.out == "tuple":
            return logits, logits * 0
        if self.out == "dict":
            return {"aux": logits * 0, "logits": logits}
        return logits


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (40 + 4 * i, 36, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def _net(out: str = "tensor") -> Net:
    torch.manual_seed(0)
    net = Net(out)
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.2, 0.2)
        net.bn.running_var.uniform_(0.5, 2.0)
    return net


def _expected(net: Net, paths: list[Path]) -> torch.Tensor:
    tf = PRE.transform()
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths])
    clone = _net()
    clone.load_state_dict(net.state_dict())
    with torch.no_grad():
        return clone.eval()(x)


def test_bad_arguments_raise_at_the_call_not_at_the_first_next(images, tmp_path: Path):
    net = _net()
    with pytest.raises(PreprocessError, match="output mode"):
        predict(net, PRE, images, mode="probabilities")  # type: ignore[arg-type]
    with pytest.raises(PreprocessError, match="batch_size"):
        predict(net, PRE, images, batch_size=0)
    with pytest.raises(PreprocessError, match="workers"):
        predict(net, PRE, images, workers=-1)
    with pytest.raises(PreprocessError, match="amp"):
        predict(net, PRE, images, amp="int8")  # type: ignore[arg-type]
    with pytest.raises(InputNotFoundError):
        predict(net, PRE, [])
    bad = tmp_path / "labels.json"
    bad.write_text('["a", "b",')
    with pytest.raises(PreprocessError, match="invalid JSON") as err:
        predict(net, PRE, images, labels=bad)
    assert "\n" not in str(err.value)
    with pytest.raises(PreprocessError, match="model"):
        predict(object(), PRE, images)  # type: ignore[arg-type]
    assert isinstance(predict(net, PRE, images), PredictionStream)


def test_the_callers_model_is_left_as_it_was(images):
    net = _net().train()
    flags = [m.training for m in net.modules()]
    ptrs = {name: p.data_ptr() for name, p in net.named_parameters()}
    assert net.conv.weight.is_contiguous()
    rows = list(predict(net, PRE, images, batch_size=2, mode="logits", channels_last=True))
    assert [m.training for m in net.modules()] == flags  # still in training mode
    assert {name: p.data_ptr() for name, p in net.named_parameters()} == ptrs
    assert net.conv.weight.is_contiguous() and not net.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(p.device.type == "cpu" for p in net.parameters())
    assert not net._forward_hooks and not net.fc._forward_hooks
    expected = _expected(net, images)  # eval-mode outputs (BatchNorm running stats, no dropout)
    got = torch.tensor([r.logits for r in rows])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_features_leave_no_hook_on_the_callers_model(images):
    net = _net().eval()
    rows = list(predict(net, PRE, images[:2], features=True))
    assert rows[0].features is not None and rows[0].features.shape == (8,)
    assert not net.fc._forward_hooks


@pytest.mark.parametrize("out", ["tuple", "dict"])
def test_tuple_and_dict_outputs_use_the_main_output(images, out: str):
    net = _net(out).eval()
    rows = list(predict(net, PRE, images, batch_size=2, mode="logits"))
    torch.testing.assert_close(torch.tensor([r.logits for r in rows]), _expected(net, images), atol=1e-4, rtol=1e-4)


def test_a_backend_object_runs_like_a_module(images):
    net = _net().eval()

    class Runner:
        name = "fake-runtime"

        def __init__(self) -> None:
            self.calls = 0

        def __call__(self, batch: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            assert batch.dtype == torch.float32 and batch.device.type == "cpu"
            return net(batch)

        def describe(self) -> dict[str, Any]:
            return {"name": self.name}

    runner = Runner()
    rows = list(predict(runner, PRE, images, batch_size=2, mode="logits"))
    assert runner.calls == 3
    torch.testing.assert_close(torch.tensor([r.logits for r in rows]), _expected(net, images), atol=1e-4, rtol=1e-4)
    with pytest.raises(PreprocessError, match="features"):
        predict(runner, PRE, images, features=True)


def test_ctrl_c_says_how_many_inputs_were_done(images):
    net = _net().eval()

    class Interrupting:
        name = "interrupting"
        device = torch.device("cpu")

        def __init__(self) -> None:
            self.calls = 0

        def __call__(self, batch: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt
            return net(batch)

        def describe(self) -> dict[str, Any]:
            return {"name": self.name}

    stream = predict(Interrupting(), PRE, images, batch_size=2, workers=0)
    seen = []
    with pytest.raises(KeyboardInterrupt) as err:
        for row in stream:
            seen.append(row)
    assert isinstance(err.value, RunInterrupted)
    assert str(err.value) == "interrupted after 2 of 5 images"
    assert len(seen) == 2 and stream.counters.done == 2
    assert current_progress() == (2, 5, "images")
