"""``export_model``: write a :class:`~pthkit.model.Model` as ONNX, TorchScript, ``.pt2`` or OpenVINO IR, self-describing,
and check the written file against the torch model (:mod:`pthkit.export.parity`) before calling it done.

A parity failure raises :class:`~pthkit.errors.ParityError` (the file and the report are kept, so they can be
inspected) unless ``allow_mismatch=True``; the report is always returned or raised with the error.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pthkit.errors import ExportError, ParityError

if TYPE_CHECKING:
    from pthkit.export.parity import ParityReport
    from pthkit.model import Model

__all__ = ["FORMATS", "PRECISIONS", "ExportResult", "cpu_eval_module", "example_input", "export_model", "output_names_for",
           "runner_for"]

FORMATS: tuple[str, ...] = ("onnx", "torchscript", "pt2", "openvino")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")
# Which precisions each format can write (others are refused with a hint, never silently ignored).
_SUPPORTED: dict[str, tuple[str, ...]] = {
    "onnx": ("fp32", "fp16", "int8"),
    "openvino": ("fp32", "fp16", "bf16"),
    "torchscript": ("fp32",),
    "pt2": ("fp32",),
}
_SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2", "openvino": ".xml"}
# Batch size of the example the exporters trace (2, not 1: a traced 1 would be specialized by torch.export).
EXAMPLE_BATCH = 2


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and how well it agrees with the torch model."""

    path: Path
    format: str
    precision: str
    exporter: str
    parity: ParityReport
    opset: int | None = None
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.parity.passed

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "precision": self.precision, "exporter": self.exporter,
                "opset": self.opset, "files": [str(f) for f in self.files], "notes": list(self.notes),
                "parity": self.parity.to_dict()}


def example_input(model: Model, batch: int = EXAMPLE_BATCH) -> torch.Tensor:
    """A batch the exporters trace: the preprocessed size for image models, the input spec otherwise."""
    if model.is_image_model and model.preprocess is not None:
        c, h, w = model.preprocess.input_size
        return torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(0))
    from pthkit.export.parity import random_inputs

    return random_inputs(model, batch)


def output_names_for(model: Model, module: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the graph's outputs: the model's ``output_names``, else ``logits`` (classifiers) / ``output``, dict
    keys, or ``output0``… for tuples."""
    from pthkit.export.parity import flatten_outputs

    with torch.inference_mode():
        outputs = module(example)
    flat = flatten_outputs(outputs)
    if model.output_names and len(model.output_names) == len(flat):
        return list(model.output_names)
    if len(flat) == 1:
        return ["logits" if model.task == "classify" else "output"]
    return [name.replace(".", "_") for name, _ in flat]


def cpu_eval_module(model: Model) -> nn.Module:
    if model.module is None:
        raise ExportError.build("export", received=f"{model.source} (no torch module: already an export)",
                                expected="a weights file, bundle, Hugging Face folder or module",
                                hint="Export from the original weights.")
    module = model.module
    on_cpu = all(t.device.type == "cpu" for t in (*module.parameters(), *module.buffers()))
    if not on_cpu or module.training:
        module = copy.deepcopy(module).cpu().eval()
    return module


def runner_for(path: Path, format: str, precision: str = "fp32") -> Callable[[torch.Tensor], Any]:
    """Something that runs the written file (for the parity check)."""
    if format == "onnx":
        from pthkit.engine.backends_onnx import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, precision=precision)
    if format == "openvino":
        from pthkit.engine.backends_openvino import OpenVINOBackend

        return OpenVINOBackend(path, precision="bf16" if precision == "bf16" else "f32")
    if format == "torchscript":
        from pthkit.export.formats import load_torchscript

        return load_torchscript(path)[0]
    from pthkit.export.formats import load_pt2

    return load_pt2(path)[0]


def _target(out: str | os.PathLike[str], format: str) -> Path:
    path = Path(out).expanduser()
    if path.is_dir():
        raise ExportError.build("--out", received=f"{path} (a folder)", expected=f"a file path such as model{_SUFFIX[format]}")
    if path.suffix == "":
        path = path.with_suffix(_SUFFIX[format])
    if format == "openvino" and path.suffix != ".xml":
        raise ExportError.build("--out", received=str(path), expected="an OpenVINO .xml path (the .bin goes next to it)")
    return path


def export_model(
    model: Model,
    format: str,
    out: str | os.PathLike[str],
    *,
    opset: int | None = None,
    precision: str | None = None,
    images: Sequence[str | os.PathLike[str]] | None = None,
    allow_mismatch: bool = False,
    report: str | os.PathLike[str] | None = None,
    exporter: str = "auto",
) -> ExportResult:
    """Export ``model`` to ``out`` in ``format`` and check parity against torch.

    - ``opset``: ONNX opset (default: the exporter's); ``precision``: ``fp32`` (default), ``fp16``, ``bf16``,
      ``int8`` where the format supports it (:data:`_SUPPORTED`); ``images``: more images for the agreement check;
      ``report``: write the parity report as JSON there; ``exporter`` (ONNX): ``auto`` | ``dynamo`` | ``torchscript``.

    Raises:
        ExportError: bad arguments, a missing extra (one line naming it), or every exporter failed.
        ParityError: the export differs beyond tolerance (file and report kept) and ``allow_mismatch`` is false.
    """
    from pthkit.export.metadata import metadata_for
    from pthkit.export.parity import check_parity, parity_inputs

    if format not in FORMATS:
        raise ExportError.build("--format", received=repr(format), expected=" | ".join(FORMATS))
    precision = precision or "fp32"
    if precision not in PRECISIONS:
        raise ExportError.build("--precision", received=repr(precision), expected=" | ".join(PRECISIONS))
    if precision not in _SUPPORTED[format]:
        able = [f for f, ps in _SUPPORTED.items() if precision in ps]
        raise ExportError.build(f"--precision {precision} for {format}", received="not supported",
                                expected=f"{' | '.join(_SUPPORTED[format])} for {format}",
                                hint=f"{precision} is available for: {', '.join(able)}.")
    if opset is not None and (format not in ("onnx", "openvino") or not 7 <= opset <= 30):
        raise ExportError.build("--opset", received=str(opset), expected="7..30, with --format onnx or openvino")
    path = _target(out, format)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = cpu_eval_module(model)
    example = example_input(model)
    names = output_names_for(model, module, example)
    inputs = parity_inputs(model, images)  # read (and fail on bad --images) before the slow export
    notes: list[str] = []
    opset_used: int | None = None
    files = [path]

    def meta(exporter_name: str) -> dict[str, str]:
        return metadata_for(model, format=format, precision=precision, exporter=exporter_name,
                            output_names=names).to_strings()

    if format in ("onnx", "openvino"):
        from pthkit.export.onnx_export import export_onnx, write_metadata

        work = Path(tempfile.mkdtemp(prefix="pthkit-export-", dir=path.parent))
        try:
            fp32 = path if format == "onnx" and precision == "fp32" else work / "model.onnx"
            info = export_onnx(module, example, fp32, output_names=names, opset=opset, metadata=meta("pending"),
                               exporter=exporter)
            used = f"torch.onnx ({info.exporter})"
            notes += info.notes
            opset_used = write_metadata(fp32, meta(used))
            if format == "onnx" and precision == "fp16":
                from pthkit.export.quantize import to_fp16

                to_fp16(fp32, path)
                write_metadata(path, meta(used + " + fp16"))
            elif format == "onnx" and precision == "int8":
                from pthkit.export.quantize import to_int8

                done = to_int8(fp32, path, inputs[0][1])
                notes.append(f"int8: {done['method']}, calibrated on {done['calibration_images']} calibration inputs")
                write_metadata(path, meta(used + " + int8 static"))
            elif format == "openvino":
                from pthkit.export.formats import export_openvino

                export_openvino(fp32, path, meta(used + " + openvino"), compress_fp16=precision == "fp16")
                files.append(path.with_suffix(".bin"))
            if info.external_data and format == "onnx":
                files.append(path.with_name(path.name + ".data"))
            exporter_name = used
        finally:
            shutil.rmtree(work, ignore_errors=True)
    elif format == "torchscript":
        from pthkit.export.formats import export_torchscript

        exporter_name = export_torchscript(module, example, path, meta("torch.jit.trace"))
    else:
        from pthkit.export.formats import export_pt2

        exporter_name = export_pt2(module, example, path, meta("torch.export"))

    from pthkit.engine import TorchBackend

    reference = TorchBackend(module)
    candidate = runner_for(path, format, precision)
    parity = check_parity(reference, candidate, inputs, format=format, precision=precision, output_names=names)
    parity.notes += notes
    result = ExportResult(path=path, format=format, precision=precision, exporter=exporter_name, parity=parity,
                          opset=opset_used, files=files, notes=notes)
    if report is not None:
        parity.write(report)
    if not parity.passed and not allow_mismatch:
        err = ParityError.build(f"{format} export parity", received="; ".join(parity.failures),
                                expected="outputs equal to torch within tolerance",
                                hint=f"The file is kept at {path} for inspection; --allow-mismatch accepts it.")
        err.result = result  # type: ignore[attr-defined]
        raise err
    return result
