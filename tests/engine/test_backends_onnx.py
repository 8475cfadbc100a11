"""The ONNX Runtime and OpenVINO backends plug into the engine like TorchBackend (Backend protocol)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pthkit.engine import Backend, Engine
from pthkit.engine.backends_onnx import OnnxRuntimeBackend
from pthkit.engine.backends_openvino import OpenVINOBackend


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.fc(x)
        return y, y.sum(dim=1, keepdim=True)


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    module = TwoHeads().eval()
    path = tmp_path_factory.mktemp("ort") / "two.onnx"
    torch.onnx.export(module, (torch.randn(2, 6),), str(path), dynamo=False, input_names=["input"],
                      output_names=["scores", "total"], dynamic_axes={"input": {0: "b"}, "scores": {0: "b"},
                                                                      "total": {0: "b"}})
    return module, path


@pytest.mark.parametrize("cls", [OnnxRuntimeBackend, OpenVINOBackend])
def test_backend_protocol_and_outputs(cls: type, two_heads: tuple) -> None:
    module, path = two_heads
    backend = cls(path, threads=1)
    assert isinstance(backend, Backend) and backend.device == torch.device("cpu")
    x = torch.randn(3, 6)
    out = backend(x)
    assert isinstance(out, dict) and set(out) == {"scores", "total"}
    want = module(x)
    assert torch.allclose(out["scores"], want[0], atol=1e-5) and torch.allclose(out["total"], want[1], atol=1e-5)
    info = backend.describe()
    assert info["name"] == backend.name and info["threads"] == 1 and info["outputs"] == ["scores", "total"]


def test_engine_runs_an_onnx_backend(two_heads: tuple) -> None:
    from pthkit.engine import LoaderSource  # noqa: F401 - the engine's sources are tested elsewhere
    from pthkit.engine.types import Batch

    module, path = two_heads

    class Rows:
        data = torch.randn(5, 6)

        def __len__(self) -> int:
            return 5

        def name(self, index: int) -> str:
            return f"row{index}"

        def batches(self, batch_size: int):  # type: ignore[no-untyped-def]
            for s in range(0, 5, batch_size):
                idx = list(range(s, min(5, s + batch_size)))
                yield Batch(self.data[idx], idx, torch.full((len(idx),), -1), [])

    seen = []
    for batch, out in Engine(OnnxRuntimeBackend(path), batch_size=2).run(Rows()):
        seen += batch.indices
        assert torch.allclose(out["scores"], module(batch.tensors)[0], atol=1e-5)
    assert seen == [0, 1, 2, 3, 4]


def test_bad_model_bytes_are_a_one_line_error() -> None:
    from pthkit.errors import ExportError

    with pytest.raises(ExportError) as info:
        OnnxRuntimeBackend(b"garbage")
    assert "\n" not in str(info.value)
