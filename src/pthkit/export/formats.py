"""TorchScript, ``torch.export`` (.pt2) and OpenVINO writers, and a runner for each written file (for the parity
check).

- TorchScript: ``torch.jit.trace`` (the batch axis stays free: traced graphs take any batch size), metadata in
  ``_extra_files``. Opening a TorchScript file runs code from it, so only files pthkit just wrote are loaded here.
- pt2: ``torch.export.export`` with a dynamic batch dimension, metadata in ``extra_files``.
- OpenVINO: converted from the ONNX export (one tracing path, the same fallback), saved as IR ``.xml`` + ``.bin``
  with fp32 weights (``--precision fp16`` compresses them), metadata in ``rt_info``.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pthkit.engine.backends_onnx import require
from pthkit.errors import ExportError

__all__ = ["export_openvino", "export_pt2", "export_torchscript", "load_pt2", "load_torchscript"]

META_PREFIX = "pthkit."


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"


def export_torchscript(module: nn.Module, example: torch.Tensor, out: Path, metadata: dict[str, str]) -> str:
    """Trace ``module`` and save it; returns the exporter name."""
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, (example,), check_trace=False, strict=False)
            torch.jit.save(traced, str(out), _extra_files=dict(metadata))
    except Exception as err:  # noqa: BLE001
        raise ExportError.build("TorchScript export", received=_one_line(err), expected="a traceable model",
                                hint="Try --format onnx or pt2.") from err
    return "torch.jit.trace"


def load_torchscript(path: Path) -> tuple[Callable[[torch.Tensor], Any], dict[str, str]]:
    """A runner for a TorchScript file pthkit wrote, and its metadata."""
    extra = {k: "" for k in _metadata_keys()}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    module.eval()
    return module, {k: v.decode() if isinstance(v, bytes) else v for k, v in extra.items() if v}


def export_pt2(module: nn.Module, example: torch.Tensor, out: Path, metadata: dict[str, str]) -> str:
    """``torch.export`` with a dynamic batch axis (static if the model forces it, said in the error)."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},), strict=False)
            torch.export.save(program, str(out), extra_files=dict(metadata))
    except Exception as err:  # noqa: BLE001
        raise ExportError.build("torch.export (pt2)", received=_one_line(err), expected="a model torch.export can trace",
                                hint="Try --format onnx (it falls back to the TorchScript exporter).") from err
    return "torch.export"


def load_pt2(path: Path) -> tuple[Callable[[torch.Tensor], Any], dict[str, str]]:
    extra = {k: "" for k in _metadata_keys()}
    program = torch.export.load(str(path), extra_files=extra)
    return program.module(), {k: v for k, v in extra.items() if v}


def export_openvino(onnx_path: Path, out: Path, metadata: dict[str, str], *, compress_fp16: bool) -> None:
    """Convert an ONNX export to OpenVINO IR at ``out`` (``.xml``; the ``.bin`` next to it)."""
    ov = require("openvino")
    try:
        model = ov.convert_model(str(onnx_path))
        for key, value in metadata.items():
            model.set_rt_info(value, ["pthkit_metadata", key])
        ov.save_model(model, str(out), compress_to_fp16=compress_fp16)
    except Exception as err:  # noqa: BLE001
        raise ExportError.build("OpenVINO conversion", received=_one_line(err), expected="an ONNX model OpenVINO reads") \
            from err


def read_openvino_metadata(path: Path) -> dict[str, str]:
    ov = require("openvino")
    model = ov.Core().read_model(str(path))
    out: dict[str, str] = {}
    for key in _metadata_keys():
        if model.has_rt_info(["pthkit_metadata", key]):
            out[key] = str(model.get_rt_info(["pthkit_metadata", key]).astype(str))
    return out


def _metadata_keys() -> list[str]:
    from pthkit.export.metadata import ExportMetadata

    sample = ExportMetadata(architecture="x", task="raw", input_spec={}, preprocess={}, labels=[], output_names=[],
                            exporter="x")
    return list(sample.to_strings())
