"""The ONNX Runtime backend: an ``.onnx`` file (or bytes) run by an ``onnxruntime.InferenceSession`` on the CPU.

It plugs into :class:`pthkit.engine.Engine` like :class:`~pthkit.engine.TorchBackend` (the
:class:`~pthkit.engine.types.Backend` protocol): a float batch in, torch tensors out (one tensor, or a dict keyed by
the graph's output names when it has several). The session's own thread count is set (``intra_op_num_threads``,
default: torch's current count, which the CLI's thread policy decided); torch's and the process's settings are never
changed. onnxruntime is imported when a backend is built, with a one-line error naming the extra when missing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pthkit.engine.types import Outputs
from pthkit.errors import ExportError, PthkitError

__all__ = ["OnnxRuntimeBackend", "require"]

_EXTRAS = {"onnxruntime": "onnx", "onnx": "onnx", "onnxscript": "onnx", "openvino": "openvino"}


def require(module: str) -> Any:
    """Import an optional runtime, or raise a one-line :class:`ExportError` naming the pthkit extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        extra = _EXTRAS.get(module.split(".")[0], module)
        raise ExportError.build(
            module.split(".")[0], received="not installed", expected=f"the {extra} extra",
            hint=f"pip install 'pthkit[{extra}]'",
        ) from err


_NP_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32}


class OnnxRuntimeBackend:
    """Run an ONNX model with ONNX Runtime (CPU execution provider).

    Args:
        model: path to an ``.onnx`` file (external data next to it is found by ONNX Runtime) or the model bytes.
        threads: intra-op threads of this session; ``None``: ``torch.get_num_threads()``.
        precision: what the graph computes in (``"fp32"``, ``"fp16"``, ``"int8"``): reported by :meth:`describe`.
        parity: the parity numbers checked for this export, reported by :meth:`describe` (``--explain``).
    """

    name = "onnxruntime"

    def __init__(self, model: str | os.PathLike[str] | bytes, *, threads: int | None = None, precision: str = "fp32",
                 parity: dict[str, Any] | None = None) -> None:
        ort = require("onnxruntime")
        opts = ort.SessionOptions()
        self.threads = int(threads) if threads else max(1, torch.get_num_threads())
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        where = model if isinstance(model, bytes) else str(Path(model))
        try:
            self.session = ort.InferenceSession(where, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph/… types
            shown = "model bytes" if isinstance(model, bytes) else str(model)
            raise ExportError.build("ONNX model", received=f"{shown} ({' '.join(str(err).split())[:160]})",
                                    expected="a valid ONNX file ONNX Runtime can run") from err
        self.path = None if isinstance(model, bytes) else Path(model)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ExportError.build("ONNX model inputs", received=f"{len(inputs)} inputs",
                                    expected="one input (a batch)")
        self.input_name: str = inputs[0].name
        self.input_shape: list[Any] = list(inputs[0].shape)
        self._input_dtype = _NP_DTYPES.get(inputs[0].type, np.float32)
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]
        self.device = torch.device("cpu")
        self.precision = precision
        self.parity = parity

    def __call__(self, batch: torch.Tensor) -> Outputs:
        x = batch.detach()
        if x.device.type != "cpu":
            x = x.cpu()
        array = np.ascontiguousarray(x.numpy(), dtype=self._input_dtype)
        try:
            results = self.session.run(None, {self.input_name: array})
        except Exception as err:
            raise PthkitError(f"ONNX Runtime run failed on a batch of shape {tuple(array.shape)}: "
                              f"{' '.join(str(err).split())[:200]}") from err
        tensors = [torch.from_numpy(np.asarray(r)) for r in results]
        tensors = [t.float() if t.is_floating_point() and t.dtype != torch.float32 else t for t in tensors]
        if len(tensors) == 1:
            return tensors[0]
        return dict(zip(self.output_names, tensors))

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "device": "cpu", "precision": self.precision,
                               "threads": self.threads, "provider": "CPUExecutionProvider",
                               "file": str(self.path) if self.path is not None else None,
                               "outputs": list(self.output_names)}
        if self.parity is not None:
            out["parity"] = self.parity
        return out
