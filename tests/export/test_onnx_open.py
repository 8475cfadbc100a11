"""pthkit.open("model.onnx"): the same Model handle, run by ONNX Runtime, preprocessing and labels from metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.export.conftest import LABELS, MEAN, SIZE, STD

import pthkit
from pthkit.export.openers import is_exported


def test_open_onnx_reads_metadata(onnx_export: tuple) -> None:
    model, path, _ = onnx_export
    handle = pthkit.open(path)
    assert handle.module is None and handle.runner is not None and handle.runner.name == "onnxruntime"
    assert handle.source.kind == "onnx" and handle.architecture == f"onnx:{path.name}"
    assert handle.labels == LABELS and handle.task == "classify"
    pre = handle.preprocess
    assert pre is not None
    assert pre.input_size == (3, SIZE, SIZE) and pre.mean == pytest.approx(MEAN) and pre.std == pytest.approx(STD)
    assert pre.interpolation == "bicubic"
    assert pre.sources["mean"].startswith("test fixture (trained on X)") and "metadata" in pre.sources["mean"]
    assert any(model.architecture in e for e in handle.evidence)
    assert handle.input_spec.kind == "image"


def test_predict_on_onnx_equals_torch_predict(onnx_export: tuple) -> None:
    """Same rows as the torch model: same classes and scores within tolerance, with the metadata preprocessing."""
    from pthkit import samples

    model, path, _ = onnx_export
    photos = samples.calibration_photos()
    want = list(model.predict(photos, top_k=3, mode="logits"))
    got = list(pthkit.open(path).predict(photos, top_k=3, mode="logits"))
    assert len(got) == len(want) == len(photos)
    for g, w in zip(got, want):
        assert g.ok and [c.index for c in g.classes] == [c.index for c in w.classes]
        assert [c.label for c in g.classes] == [LABELS[c.index] for c in w.classes]
        a, b = torch.tensor(g.logits), torch.tensor(w.logits)
        assert torch.allclose(a, b, atol=1e-4 * float(b.abs().max()))
    # the metadata preprocessing is what ran: with ImageNet's default mean/std the logits differ
    from pthkit.preprocess.types import Preprocess
    from pthkit.tasks.predict import predict

    default = list(predict(model.module, Preprocess(input_size=(3, SIZE, SIZE)), photos, mode="logits"))
    assert not torch.allclose(torch.tensor(default[0].logits), torch.tensor(want[0].logits), atol=1e-3)


def test_overrides_on_an_onnx_say_their_source(onnx_export: tuple) -> None:
    _, path, _ = onnx_export
    handle = pthkit.open(path, overrides={"mean": "imagenet"})
    assert handle.preprocess is not None and handle.preprocess.sources["mean"] == "--mean flag"


def test_is_exported(tmp_path: Path) -> None:
    assert not is_exported(tmp_path / "missing.onnx")
    (tmp_path / "a.xml").write_text("<x/>")
    assert not is_exported(tmp_path / "a.xml")  # no .bin next to it: not OpenVINO IR
    (tmp_path / "a.bin").write_bytes(b"")
    assert is_exported(tmp_path / "a.xml")


def test_a_broken_onnx_is_a_one_line_error(tmp_path: Path) -> None:
    from pthkit.errors import ExportError

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all \x00\x01")
    with pytest.raises(ExportError) as info:
        pthkit.open(bad)
    assert "\n" not in str(info.value)


def test_a_served_export_opens_as_an_export_in_the_workers(onnx_export):
    """The serve workers re-open the main process's plan; an .onnx must not go to the weights loader."""
    from PIL import Image

    from pthkit.serve.model import ServePlan, open_in_worker, open_served

    model, path, _ = onnx_export
    main = open_served(ServePlan(source=str(path)), check=False)
    worker = open_in_worker(ServePlan(source=str(path)).resolved(main.model))
    assert worker.model.module is None and worker.model.runner is not None
    assert worker.model.labels == model.labels
    image = Image.new("RGB", (80, 70), (120, 30, 200))
    ours = next(iter(worker.model.predict([image], top_k=3)))
    theirs = next(iter(model.predict([image], top_k=3)))
    assert [c.label for c in ours.classes] == [c.label for c in theirs.classes]
    assert all(abs(a.score - b.score) < 1e-4 for a, b in zip(ours.classes, theirs.classes))
