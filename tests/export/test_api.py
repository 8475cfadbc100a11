"""export_model: every format writes a self-describing file that runs with a dynamic batch and agrees with torch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.export.conftest import LABELS, MEAN

from pthkit.errors import ExportError, ParityError
from pthkit.export import export_model
from pthkit.export.metadata import ExportMetadata
from pthkit.export.onnx_export import read_metadata


def test_onnx_export_is_self_describing_and_matches_torch(onnx_export: tuple) -> None:
    model, path, result = onnx_export
    assert result.passed and result.format == "onnx" and result.exporter.startswith("torch.onnx")
    assert result.opset is not None and result.opset >= 17
    meta = ExportMetadata.from_strings(read_metadata(path), where=path.name)
    assert meta is not None
    assert meta.architecture == model.architecture and meta.labels == LABELS and meta.task == "classify"
    assert tuple(meta.preprocess["mean"]) == pytest.approx(MEAN)
    assert meta.preprocess["sources"]["mean"] == "test fixture (trained on X)"
    assert meta.input_spec["kind"] == "image" and meta.pthkit_version
    # parity numbers: every output at batch 1, 2 and 7, and agreement on the 44 calibration images
    assert sorted({d.batch_size for d in result.parity.diffs}) == [1, 2, 7]
    assert all(d.ratio <= 1e-4 for d in result.parity.diffs)
    agreement = result.parity.agreements[0]
    assert agreement.count >= 40 and agreement.top1 == 1.0 and agreement.top5_overlap == 1.0


def test_onnx_export_has_a_dynamic_batch(onnx_export: tuple) -> None:
    from pthkit.engine.backends_onnx import OnnxRuntimeBackend

    model, path, _ = onnx_export
    runner = OnnxRuntimeBackend(path)
    x = torch.randn(5, 3, 64, 64)
    with torch.inference_mode():
        expected = model.module(x)
    got = runner(x)
    assert isinstance(got, torch.Tensor) and got.shape == (5, 10)
    assert torch.allclose(got, expected, atol=1e-4 * float(expected.abs().max()))


def test_report_file_is_written(model: object, tmp_path: Path, onnx_export: tuple) -> None:
    from pthkit.engine import TorchBackend
    from pthkit.engine.backends_onnx import OnnxRuntimeBackend
    from pthkit.export.parity import check_parity, parity_inputs

    _, path, _ = onnx_export
    report = check_parity(TorchBackend(model.module), OnnxRuntimeBackend(path), parity_inputs(model), format="onnx")
    target = report.write(tmp_path / "r.json")
    data = json.loads(target.read_text())
    assert data["passed"] is True and data["tolerance"]["max_abs"] == 1e-4
    assert {d["batch_size"] for d in data["diffs"]} == {1, 2, 7}


@pytest.mark.parametrize("fmt,name", [pytest.param("torchscript", "m.pt", marks=pytest.mark.slow), ("pt2", "m.pt2"),
                                      ("openvino", "m.xml")])
def test_other_formats_export_and_pass_parity(model: object, tmp_path: Path, fmt: str, name: str) -> None:
    result = export_model(model, fmt, tmp_path / name)
    assert result.passed, result.parity.describe()
    assert result.path.is_file()
    assert sorted({d.batch_size for d in result.parity.diffs}) == [1, 2, 7]
    if fmt == "openvino":
        assert result.path.with_suffix(".bin").is_file()
        from pthkit.export.formats import read_openvino_metadata

        meta = ExportMetadata.from_strings(read_openvino_metadata(result.path), where=name)
        assert meta is not None and meta.labels == LABELS
    if fmt == "torchscript":
        from pthkit.export.formats import load_torchscript

        _, extra = load_torchscript(result.path)
        assert json.loads(extra["pthkit.labels"]) == LABELS
    if fmt == "pt2":
        from pthkit.export.formats import load_pt2

        _, extra = load_pt2(result.path)
        assert json.loads(extra["pthkit.architecture"]) == model.architecture


def test_perturbed_export_fails_parity(model: object, tmp_path: Path, onnx_export: tuple) -> None:
    """A deliberately perturbed ONNX file (one weight nudged) must fail the check."""
    import onnx
    from onnx import numpy_helper

    from pthkit.engine import TorchBackend
    from pthkit.engine.backends_onnx import OnnxRuntimeBackend
    from pthkit.export.parity import check_parity, parity_inputs

    _, path, _ = onnx_export
    proto = onnx.load(str(path))
    head = [t for t in proto.graph.initializer if t.dims and t.dims[0] == len(LABELS) and len(t.dims) == 2]
    assert head, [t.name for t in proto.graph.initializer]
    arr = numpy_helper.to_array(head[0]).copy()
    arr[3] += 0.05 * float(abs(arr).max())  # class 3's weights nudged by 5% of the largest weight
    head[0].CopyFrom(numpy_helper.from_array(arr, head[0].name))
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    report = check_parity(TorchBackend(model.module), OnnxRuntimeBackend(bad), parity_inputs(model), format="onnx")
    assert not report.passed
    assert any("max abs difference" in f for f in report.failures)
    assert report.worst_ratio > 1e-4


def test_parity_failure_raises_unless_allowed(model: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """export_model refuses an export whose runner disagrees (file and report kept), unless allow_mismatch."""
    import pthkit.export.api as api

    real = api.runner_for

    def perturbed(path: Path, format: str, precision: str = "fp32") -> object:
        inner = real(path, format, precision)
        return lambda x: inner(x) * 1.01 + 0.01

    monkeypatch.setattr(api, "runner_for", perturbed)
    with pytest.raises(ParityError) as info:
        export_model(model, "pt2", tmp_path / "m.pt2", report=tmp_path / "r.json")
    assert "parity" in str(info.value) and "\n" not in str(info.value)
    assert (tmp_path / "m.pt2").is_file()
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is False
    result = export_model(model, "pt2", tmp_path / "m2.pt2", allow_mismatch=True)
    assert not result.passed and result.parity.failures


def test_bad_arguments_are_one_line_errors(model: object, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="--format"):
        export_model(model, "tflite", tmp_path / "x")
    with pytest.raises(ExportError, match="bf16 is available for: openvino"):
        export_model(model, "onnx", tmp_path / "x.onnx", precision="bf16")
    with pytest.raises(ExportError, match="--opset"):
        export_model(model, "pt2", tmp_path / "x.pt2", opset=17)


def test_missing_extra_names_the_extra(model: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    from pthkit.engine.backends_onnx import OnnxRuntimeBackend

    with pytest.raises(ExportError) as info:
        OnnxRuntimeBackend(b"")
    assert "pip install 'pthkit[onnx]'" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setitem(sys.modules, "openvino", None)
    from pthkit.engine.backends_openvino import OpenVINOBackend

    with pytest.raises(ExportError, match=r"pthkit\[openvino\]"):
        OpenVINOBackend("x.xml")


def test_metadata_from_a_file_is_validated() -> None:
    assert ExportMetadata.from_strings({"other": "x"}, where="f.onnx") is None
    with pytest.raises(ExportError, match="invalid JSON"):
        ExportMetadata.from_strings({"pthkit.architecture": '"a"', "pthkit.labels": "[oops"}, where="f.onnx")
    with pytest.raises(ExportError, match="labels"):
        ExportMetadata.from_strings({"pthkit.architecture": '"a"', "pthkit.labels": '{"a": 1}'}, where="f.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("fmt,precision,name", [("onnx", "fp16", "h.onnx"), ("onnx", "int8", "q.onnx"),
                                                ("openvino", "bf16", "b.xml")])
def test_lower_precisions_report_their_agreement(model: object, tmp_path: Path, fmt: str, precision: str,
                                                  name: str) -> None:
    result = export_model(model, fmt, tmp_path / name, precision=precision, allow_mismatch=True)
    assert result.precision == precision and result.parity.agreements
    assert result.parity.tolerance.top1 < 1.0  # the lower-precision tolerance, not fp32's
    meta = ExportMetadata.from_strings(read_metadata(result.path), where=name) if fmt == "onnx" else None
    assert meta is None or meta.precision == precision
