"""Lower-precision ONNX: fp16 (``onnxruntime.transformers.float16``, inputs/outputs kept fp32) and int8 static
quantization (``onnxruntime.quantization.quantize_static``, QDQ format, per-channel weights) calibrated on the
calibration images. Never the default; the parity report always gives the agreement with the fp32 torch model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pthkit.engine.backends_onnx import require
from pthkit.errors import ExportError

__all__ = ["to_fp16", "to_int8"]


def to_fp16(src: Path, out: Path) -> None:
    onnx = require("onnx")
    require("onnxruntime")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        onnx.save_model(model, str(out))
    except Exception as err:  # noqa: BLE001
        raise ExportError.build("fp16 conversion", received=" ".join(str(err).split())[:160],
                                expected="an fp32 ONNX graph") from err


class _Reader:
    """``CalibrationDataReader``: the calibration batches, one at a time."""

    def __init__(self, input_name: str, batches: list[np.ndarray]) -> None:
        self.input_name = input_name
        self._it = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:  # pragma: no cover - some onnxruntime versions call it
        pass


def to_int8(src: Path, out: Path, calibration: torch.Tensor, *, input_name: str = "input") -> dict[str, Any]:
    """Static int8 quantization of ``src`` to ``out``; returns what was done (for the report)."""
    require("onnxruntime")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    batches = [np.ascontiguousarray(calibration[i:i + 8].float().numpy()) for i in range(0, len(calibration), 8)]
    try:
        quantize_static(str(src), str(out), _Reader(input_name, batches), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    except Exception as err:  # noqa: BLE001
        raise ExportError.build("int8 quantization", received=" ".join(str(err).split())[:160],
                                expected="an fp32 ONNX graph onnxruntime can quantize") from err
    return {"method": "static QDQ, per-channel int8 weights, uint8 activations, MinMax",
            "calibration_images": int(len(calibration))}
