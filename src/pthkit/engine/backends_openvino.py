"""The OpenVINO backend: an ``.onnx`` file or OpenVINO IR (``.xml`` + ``.bin``) compiled for the CPU.

Same :class:`~pthkit.engine.types.Backend` protocol as :class:`~pthkit.engine.TorchBackend`. ``precision="bf16"``
asks the CPU plugin to compute in bf16 (``INFERENCE_PRECISION_HINT``; fast only on CPUs with AVX512-BF16/AMX);
``"f32"`` keeps fp32 (the plugin would otherwise pick bf16 on such CPUs by itself). Threads: the compiled model's own
``INFERENCE_NUM_THREADS`` (default torch's current count); nothing process-wide changes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pthkit.engine.backends_onnx import require
from pthkit.engine.types import Outputs
from pthkit.errors import ExportError, PthkitError

__all__ = ["OPENVINO_PRECISIONS", "OpenVINOBackend"]

OPENVINO_PRECISIONS = ("f32", "bf16", "f16")


class OpenVINOBackend:
    """Run a model with OpenVINO on the CPU.

    Args:
        model: an ``.onnx`` file, an OpenVINO ``.xml`` (its ``.bin`` next to it), or an ``openvino.Model``.
        precision: ``"f32"`` (default), ``"bf16"`` or ``"f16"``: the CPU plugin's inference precision.
        threads: ``INFERENCE_NUM_THREADS``; ``None``: ``torch.get_num_threads()``.
        parity: the parity numbers checked for this model (reported by :meth:`describe`).
    """

    name = "openvino"

    def __init__(self, model: str | os.PathLike[str] | Any, *, precision: str = "f32", threads: int | None = None,
                 parity: dict[str, Any] | None = None) -> None:
        ov = require("openvino")
        if precision not in OPENVINO_PRECISIONS:
            raise ExportError.build("OpenVINO precision", received=repr(precision),
                                    expected=" | ".join(OPENVINO_PRECISIONS))
        self.threads = int(threads) if threads else max(1, torch.get_num_threads())
        self.precision = precision
        core = ov.Core()
        self.path = Path(model) if isinstance(model, (str, os.PathLike)) else None
        try:
            graph = core.read_model(str(model)) if self.path is not None else model
            config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": self.threads,
                      "PERFORMANCE_HINT": "LATENCY"}
            self.compiled = core.compile_model(graph, "CPU", config)
        except Exception as err:
            raise ExportError.build("OpenVINO model", received=f"{model} ({' '.join(str(err).split())[:160]})",
                                    expected="a model OpenVINO can read and compile for the CPU") from err
        self.output_names: list[str] = [next(iter(o.get_names()), f"output{i}") if o.get_names() else f"output{i}"
                                        for i, o in enumerate(self.compiled.outputs)]
        self._request = self.compiled.create_infer_request()
        self.device = torch.device("cpu")
        self.parity = parity

    def __call__(self, batch: torch.Tensor) -> Outputs:
        x = batch.detach()
        if x.device.type != "cpu":
            x = x.cpu()
        array = np.ascontiguousarray(x.float().numpy())
        try:
            result = self._request.infer({0: array})
        except Exception as err:
            raise PthkitError(f"OpenVINO run failed on a batch of shape {tuple(array.shape)}: "
                              f"{' '.join(str(err).split())[:200]}") from err
        tensors = [torch.from_numpy(np.array(result[o])) for o in self.compiled.outputs]
        tensors = [t.float() if t.is_floating_point() and t.dtype != torch.float32 else t for t in tensors]
        if len(tensors) == 1:
            return tensors[0]
        return dict(zip(self.output_names, tensors))

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "device": "cpu", "precision": self.precision,
                               "threads": self.threads, "file": str(self.path) if self.path is not None else None,
                               "outputs": list(self.output_names)}
        if self.parity is not None:
            out["parity"] = self.parity
        return out
