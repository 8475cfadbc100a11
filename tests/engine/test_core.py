"""pthkit.engine: any input source, outputs handed through as they are, order and failures kept, no global changes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from pthkit.engine import (
    Backend,
    Batch,
    Engine,
    InputSource,
    LoaderSource,
    RunInterrupted,
    TorchBackend,
    collect,
    evaluate_batches,
)
from pthkit.errors import PreprocessError


class Rows:
    """A non-image source: rows of a table, names "rows.csv:N", row 3 fails to parse."""

    def __init__(self, n: int = 7, width: int = 4) -> None:
        torch.manual_seed(0)
        self.data = torch.randn(n, width)

    def __len__(self) -> int:
        return len(self.data)

    def name(self, index: int) -> str:
        return f"rows.csv:{index + 1}"

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, len(self), batch_size):
            idx = list(range(start, min(len(self), start + batch_size)))
            good = [i for i in idx if i != 3]
            yield Batch(self.data[good] if good else None, good, torch.full((len(good),), -1),
                        [(3, "row 4: not a number")] if 3 in idx else [])


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 2)
        self.b = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"score": self.a(x), "extra": self.b(x)}


def test_a_table_source_and_dict_outputs_pass_through_in_order():
    src = Rows()
    assert isinstance(src, InputSource)
    net = TwoHeads()
    seen_idx: list[int] = []
    failed: list[tuple[int, str]] = []
    for batch, out in Engine(net, batch_size=3).run(src):
        failed += batch.failed
        if out is None:
            continue
        assert isinstance(out, dict) and set(out) == {"score", "extra"}
        with torch.no_grad():
            torch.testing.assert_close(out["extra"], net.b(src.data[batch.indices]))
        seen_idx += batch.indices
    assert seen_idx == [0, 1, 2, 4, 5, 6] and failed == [(3, "row 4: not a number")]


def test_a_tuple_output_and_collect_take_the_first_tensor():
    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x * 2, x

    got = collect(Engine(Pair(), batch_size=2), Rows())
    assert got.indices == [0, 1, 2, 4, 5, 6] and got.failed == [(3, "row 4: not a number")]
    torch.testing.assert_close(got.logits, Rows().data[[0, 1, 2, 4, 5, 6]] * 2)


def test_bad_engine_arguments_raise_at_construction():
    with pytest.raises(PreprocessError, match="batch_size"):
        Engine(nn.Identity(), batch_size=0)
    with pytest.raises(PreprocessError, match="amp"):
        Engine(nn.Identity(), amp="fp8")  # type: ignore[arg-type]
    with pytest.raises(PreprocessError, match="model"):
        Engine("not a model")  # type: ignore[arg-type]
    with pytest.raises(PreprocessError, match="InputSource"):
        Engine(nn.Identity()).run([1, 2, 3])  # type: ignore[arg-type]


def test_grad_mode_is_not_left_changed_between_batches():
    run = Engine(nn.Linear(4, 2), batch_size=2).run(Rows())
    next(run)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    run.close()


def test_the_engine_never_sets_threads(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    collect(Engine(nn.Linear(4, 2), batch_size=2), Rows())
    assert calls == []


def test_ctrl_c_becomes_run_interrupted_with_counters():
    class Stop:
        name = "stop"
        device = torch.device("cpu")

        def __init__(self) -> None:
            self.n = 0

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            self.n += 1
            if self.n == 3:
                raise KeyboardInterrupt
            return x

        def describe(self) -> dict[str, Any]:
            return {"name": "stop"}

    assert isinstance(Stop(), Backend)
    run = Engine(Stop(), batch_size=2, unit="rows").run(Rows())
    with pytest.raises(RunInterrupted, match="interrupted after 4 of 7 rows"):
        list(run)


class BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def test_evaluate_batches_runs_a_training_model_in_eval_mode_and_hands_it_back():
    torch.manual_seed(0)
    net = BNNet()
    with torch.no_grad():
        net.bn.running_mean.fill_(0.3)
    net.train()
    x, y = torch.randn(5, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    loader = [(x[:3], y[:3]), None, (x[3:], y[3:])]  # a DataLoader with collate_skip_failed
    stats = net.bn.running_mean.clone()
    out = list(evaluate_batches(net, loader, batch_size=3))
    assert net.training and net.bn.training  # flags restored
    torch.testing.assert_close(net.bn.running_mean, stats)  # eval mode: BatchNorm statistics not updated
    logits = torch.cat([o[0] for o in out])
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(logits, net(x))
    assert torch.equal(torch.cat([o[1] for o in out]), y)
    assert len(LoaderSource(loader, total=5)) == 5


def test_torch_backend_copies_instead_of_moving_the_callers_module():
    net = BNNet()
    backend = TorchBackend(net, device="meta")
    assert backend.copied and next(backend.module.parameters()).device.type == "meta"
    assert next(net.parameters()).device.type == "cpu"
    owned = TorchBackend(net, device="meta", owned=True)
    assert not owned.copied and next(net.parameters()).device.type == "meta"


def test_engine_for_a_handle_prefers_its_runner_and_owns_its_module():
    from types import SimpleNamespace

    from pthkit.engine import engine_for

    class Runner:  # pthkit.model.Runner: no device attribute -> CPU batches
        name = "onnxruntime"

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

        def describe(self) -> dict[str, Any]:
            return {"name": self.name}

    net = nn.Linear(4, 2)
    handle = SimpleNamespace(runner=Runner(), module=net, architecture="x")
    engine = engine_for(handle, batch_size=3)  # type: ignore[arg-type]
    assert engine.backend.name == "onnxruntime" and engine.backend.device == torch.device("cpu")
    got = collect(engine, Rows())
    torch.testing.assert_close(got.logits, Rows().data[[0, 1, 2, 4, 5, 6]] + 1)
    handle.runner = None
    torch_engine = engine_for(handle, device="meta")  # type: ignore[arg-type]
    assert torch_engine.backend.name == "torch" and net.weight.device.type == "meta"  # the handle's module moved
