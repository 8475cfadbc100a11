"""ONNX export: the dynamo (``torch.export``-based) exporter first, the TorchScript exporter as the fallback.

- **Dynamic batch**: the first axis of the input and of every output is symbolic (``batch``).
- **Opset**: the exporter's default (``torch.onnx``'s current opset) unless ``opset`` is given.
- **External data**: weights go to ``<name>.onnx.data`` next to the file when they approach the 2 GB protobuf limit
  (:data:`EXTERNAL_DATA_BYTES`).
- **Metadata**: :class:`~pthkit.export.metadata.ExportMetadata` in ``metadata_props``.

Why dynamo first: it is torch's default exporter since 2.9 and the TorchScript one is deprecated; the fallback keeps
models the dynamo path cannot trace (data-dependent control flow …) exportable, and the reason is reported.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pthkit.engine.backends_onnx import require
from pthkit.errors import ExportError

__all__ = ["EXTERNAL_DATA_BYTES", "OnnxExportInfo", "export_onnx", "write_metadata"]

# Protobuf refuses messages over 2 GiB; leave headroom for the graph itself.
EXTERNAL_DATA_BYTES = 1_800_000_000
TORCHSCRIPT_DEFAULT_OPSET = 17


@dataclass
class OnnxExportInfo:
    exporter: str
    opset: int | None
    external_data: bool
    notes: list[str] = field(default_factory=list)


def _one_line(err: BaseException) -> str:
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(err)).split())  # exporters colour their messages
    return f"{type(err).__name__}: {text[:200]}"


def _weights_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def export_onnx(module: nn.Module, example: torch.Tensor, out: Path, *, output_names: list[str],
                opset: int | None = None, metadata: dict[str, str] | None = None,
                exporter: str = "auto") -> OnnxExportInfo:
    """Write ``module`` to ``out`` as ONNX (see the module docstring). ``exporter``: ``auto`` | ``dynamo`` |
    ``torchscript``.

    Raises:
        ExportError: both exporters failed (the message names both reasons), or a runtime extra is missing.
    """
    require("onnx")
    external = _weights_bytes(module) >= EXTERNAL_DATA_BYTES
    notes: list[str] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    dynamo_error: str | None = None
    if exporter in ("auto", "dynamo"):
        require("onnxscript")
        try:
            _export_dynamo(module, example, out, output_names=output_names, opset=opset, external=external)
            info = OnnxExportInfo("dynamo", None, external, notes)
        except Exception as err:  # noqa: BLE001 - any exporter failure: fall back, saying why
            dynamo_error = _one_line(err)
            if exporter == "dynamo":
                raise ExportError.build("ONNX export (dynamo)", received=dynamo_error,
                                        expected="a model torch.export can trace") from err
            notes.append(f"dynamo exporter failed ({dynamo_error}); used the TorchScript exporter")
    if exporter == "torchscript" or dynamo_error is not None:
        try:
            _export_torchscript(module, example, out, output_names=output_names,
                                opset=opset or TORCHSCRIPT_DEFAULT_OPSET, external=external)
            info = OnnxExportInfo("torchscript", None, external, notes)
        except Exception as err:  # noqa: BLE001
            first = f"dynamo: {dynamo_error}; " if dynamo_error else ""
            raise ExportError.build("ONNX export", received=f"{first}torchscript: {_one_line(err)}",
                                    expected="a model one of torch's ONNX exporters can trace",
                                    hint="Try --format pt2 or torchscript, or a simpler forward.") from err
    info.opset = write_metadata(out, metadata or {})
    if external:
        notes.append(f"weights over {EXTERNAL_DATA_BYTES / 1e9:.1f} GB: stored as external data next to {out.name}")
    return info


def _dynamic_batch() -> object:
    return torch.export.Dim("batch", min=1, max=65536)


def _export_dynamo(module: nn.Module, example: torch.Tensor, out: Path, *, output_names: list[str],
                   opset: int | None, external: bool) -> None:
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, (example,), None, dynamo=True, input_names=["input"],
            output_names=output_names, opset_version=opset, dynamic_shapes=({0: _dynamic_batch()},),
            optimize=True, verify=False, verbose=False,
        )
        if program is None:
            raise ExportError("the dynamo exporter returned no program")
        program.save(str(out), external_data=external)


def _export_torchscript(module: nn.Module, example: torch.Tensor, out: Path, *, output_names: list[str],
                        opset: int, external: bool) -> None:
    axes = {"input": {0: "batch"}, **{name: {0: "batch"} for name in output_names}}
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(out), dynamo=False, input_names=["input"],
                          output_names=output_names, dynamic_axes=axes, opset_version=opset, do_constant_folding=True)
    if external:  # the TorchScript exporter only externalizes over 2 GB itself; do it at our threshold
        onnx = require("onnx")
        proto = onnx.load(str(out))
        onnx.save_model(proto, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=out.name + ".data", size_threshold=1024)


def write_metadata(path: Path, values: dict[str, str]) -> int | None:
    """Add ``values`` to the file's ``metadata_props`` (external data left in place); returns the ai.onnx opset."""
    onnx = require("onnx")
    proto = onnx.load(str(path), load_external_data=False)
    keep = [p for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(proto, str(path))
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def read_metadata(path: Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file as a dict (the weights are not read)."""
    onnx = require("onnx")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - a DecodeError or OSError from a bad file
        raise ExportError.build("ONNX file", received=f"{path} ({_one_line(err)})", expected="a valid ONNX file") from err
    return {p.key: p.value for p in proto.metadata_props}
