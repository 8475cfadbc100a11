"""``pthkit export MODEL --format onnx|torchscript|pt2|openvino --out PATH``: export with a parity report.

Thin over :func:`pthkit.export.export_model`; torch and the export package are imported inside the command so
``pthkit --help`` stays instant. The parity report goes to stderr (``--json`` prints the result as JSON on stdout);
a parity failure exits non-zero (the export error code) unless ``--allow-mismatch``. Everything goes through the CLI's
consoles with ``markup=False``: names from the model show as written, control characters as escapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pthkit.cli._options import ArchKwargsOpt, ArchOpt, SizeOpt, TrustOpt, parse_size

__all__ = ["register"]


def export_command(
    model: Annotated[str, typer.Argument(help="Weights file, pthkit bundle folder, Hugging Face folder: anything pthkit.open takes.")],
    format: Annotated[str, typer.Option("--format", "-f", help="onnx, torchscript, pt2 (torch.export) or openvino.")] = "onnx",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output file (.onnx, .pt, .pt2, or .xml for OpenVINO).")] = None,
    opset: Annotated[Optional[int], typer.Option("--opset", help="ONNX opset (default: the exporter's current one).")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="fp16 or int8 (onnx), fp16 or bf16 (openvino); default fp32.")] = None,
    images: Annotated[Optional[list[str]], typer.Option("--images", help="More images (files, folders, globs) for the top-1/top-5 agreement check.")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write the parity report as JSON to FILE.json.")] = None,
    allow_mismatch: Annotated[bool, typer.Option("--allow-mismatch", help="Keep the export and exit 0 even when parity is beyond tolerance.")] = False,
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Class names to record in the export: one per line, or a JSON list.")] = None,
    size: SizeOpt = None,
    trust: TrustOpt = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result (paths, exporter, parity) as JSON.")] = False,
) -> None:
    """Export a model to ONNX, TorchScript, torch.export (.pt2) or OpenVINO, and check it against torch.

    The file records its preprocessing (with provenance), labels, architecture and input spec. Parity: max abs/rel
    difference per output at batch 1, 2 and 7, and top-1/top-5 agreement on the packaged calibration images (and
    --images). Beyond tolerance (fp32: max abs ≤ 1e-4 × the logits' scale, top-1 100%) it exits non-zero."""
    from pthkit.architectures.user_code import parse_arch_kwargs
    from pthkit.cli._output import err_console, print_json
    from pthkit.cli._safe_text import safe_text
    from pthkit.errors import ExportError

    suffix = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2", "openvino": ".xml"}
    if format not in suffix:
        raise ExportError.build("--format", received=repr(format), expected=" | ".join(suffix))
    from pthkit.api import open as open_model
    from pthkit.export import export_model

    overrides = {"size": parse_size(size)} if size is not None else None
    handle = open_model(model, arch=arch, arch_kwargs=parse_arch_kwargs(arch_kwargs) or None, trust=trust, device="cpu",
                        overrides=overrides, labels=str(labels) if labels is not None else None)
    target = out if out is not None else Path(Path(model).name).with_suffix(suffix[format])
    err_console.print(f"{safe_text(handle.summary_line(), newlines=False)}; exporting to {format} …", markup=False)
    try:
        result = export_model(handle, format, target, opset=opset, precision=precision, images=images,
                              allow_mismatch=allow_mismatch, report=report)
    except ExportError as err:
        partial = getattr(err, "result", None)
        if partial is not None:
            err_console.print(partial.parity.describe(), markup=False)
        raise
    err_console.print(result.parity.describe(), markup=False)
    for note in result.notes:
        err_console.print(f"note: {note}", markup=False)
    files = ", ".join(str(f) for f in result.files)
    err_console.print(f"wrote {files} ({result.exporter}"
                      + (f", opset {result.opset}" if result.opset else "") + f", {result.precision})", markup=False)
    if not result.passed:
        err_console.print("parity beyond tolerance, kept because of --allow-mismatch", markup=False)
    if json_out:
        print_json(result.to_dict())


def register(app: typer.Typer) -> None:
    """Add ``pthkit export`` to the app."""
    app.command("export", no_args_is_help=True)(export_command)
