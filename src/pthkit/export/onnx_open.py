"""Open an exported ``.onnx`` (or OpenVINO ``.xml``) as the same :class:`~pthkit.model.Model` handle as any source.

The handle has ``module=None`` and a ``runner`` (ONNX Runtime for ``.onnx``, OpenVINO for ``.xml``); preprocessing,
labels, architecture, input spec and task come from the file's pthkit metadata, each value's provenance kept and
marked "via <file> metadata". A file exported elsewhere (no pthkit metadata) still opens: the input spec is read
from the graph's input shape and, for images, the preprocessing is ImageNet's default, said in ``warnings``.
Importing this module needs neither onnxruntime nor openvino (they are imported when a file is opened).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pthkit.errors import ExportError
from pthkit.model import Model, ModelSource, OpenOptions

__all__ = ["open_onnx", "open_openvino"]


def open_onnx(path: Path, opts: OpenOptions) -> Model:
    from pthkit.engine.backends_onnx import OnnxRuntimeBackend
    from pthkit.export.onnx_export import read_metadata

    props = read_metadata(path)
    meta = _metadata(props, path)
    precision = meta.precision if meta is not None else "fp32"
    runner = OnnxRuntimeBackend(path, precision=precision)
    return _model(path, "onnx", runner, meta, runner.input_shape, opts)


def open_openvino(path: Path, opts: OpenOptions) -> Model:
    from pthkit.engine.backends_openvino import OpenVINOBackend
    from pthkit.export.formats import read_openvino_metadata

    meta = _metadata(read_openvino_metadata(path), path)
    precision = "bf16" if meta is not None and meta.precision == "bf16" else "f32"
    runner = OpenVINOBackend(path, precision=precision)
    shape = [d.get_length() if d.is_static else None for d in runner.compiled.inputs[0].get_partial_shape()]
    return _model(path, "openvino", runner, meta, shape, opts)


def _metadata(props: dict[str, str], path: Path) -> Any:
    from pthkit.export.metadata import ExportMetadata

    return ExportMetadata.from_strings(props, where=path.name)


def _spec_from_graph(shape: list[Any], path: Path) -> Any:
    from pthkit.input_spec import spec_from_shape

    per_example = tuple(d if isinstance(d, int) and d > 0 else None for d in shape[1:])
    if not per_example:
        raise ExportError.build("exported model input", received=f"{path.name} input shape {shape}",
                                expected="a batched input (batch, ...)")
    return spec_from_shape(per_example, source=f"read from {path.name}'s input shape")


def _model(path: Path, kind: str, runner: Any, meta: Any, graph_shape: list[Any], opts: OpenOptions) -> Model:
    where = path.name
    evidence: list[str] = []
    warnings: list[str] = []
    spec = meta.read_input_spec(where) if meta is not None else None
    if opts.input_shape is not None:
        from pthkit.input_spec import spec_from_shape

        spec = spec_from_shape(opts.input_shape, source="input_shape argument")
    if spec is None:
        spec = _spec_from_graph(graph_shape, path)
    preprocess = meta.read_preprocess(where) if meta is not None else None
    if meta is not None:
        evidence.append(f"exported {meta.architecture} ({meta.format}, {meta.exporter or 'unknown exporter'}, "
                        f"{meta.precision}, pthkit {meta.pthkit_version}); preprocessing and labels from its metadata")
    else:
        evidence.append(f"{where} has no pthkit metadata (exported elsewhere): input read from the graph")
    if preprocess is None and spec.kind == "image":
        from pthkit.preprocess.types import Preprocess

        c = spec.channels or 3
        h, w = (spec.shape[1], spec.shape[2]) if len(spec.shape) == 3 else (None, None)
        size = (c, h or 224, w or 224)
        source = f"default (not recorded in {where})"
        preprocess = Preprocess(input_size=size, sources={"input_size": source})
        warnings.append(f"{where} does not record its preprocessing: ImageNet defaults used; give --mean/--std/--size "
                        "if the model was trained otherwise")
    if preprocess is not None and opts.overrides:
        preprocess = _apply_overrides(preprocess, opts.overrides, spec.channels or 3)
    labels = opts.labels or (meta.labels if meta is not None else None)
    if preprocess is not None and labels is not None:
        preprocess.label_names = list(labels)
    task: Any = meta.task if meta is not None and meta.task in ("classify", "regress", "raw") else "raw"
    evidence.append(f"runner: {runner.name} ({runner.describe().get('precision')})")
    return Model(module=None, architecture=f"{kind}:{where}", task=task, input_spec=spec, preprocess=preprocess,
                 labels=labels, source=ModelSource(kind, path), evidence=evidence, warnings=warnings,  # type: ignore[arg-type]
                 config={"exported_from": meta.architecture} if meta is not None else {}, runner=runner,
                 output_names=meta.output_names if meta is not None else None)


def _apply_overrides(preprocess: Any, overrides: dict[str, Any], channels: int) -> Any:
    """The user's preprocessing flags on top of the recorded values, each with its flag as the source."""
    from pthkit.preprocess.sources import override_layers

    for layer in override_layers(overrides, channels=channels):
        values = dict(layer.values)
        if "size" in values and "input_size" not in values:
            values["input_size"] = values.pop("size")
        preprocess = preprocess.with_values(layer.source, **values)
    return preprocess
