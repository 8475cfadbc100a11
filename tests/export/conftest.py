"""Fixtures for the export tests: a small random timm model (``test_resnet``) as a pthkit Model with a recognisable
(non-default) preprocessing and labels, and its ONNX export, built once per module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pthkit.model import Model

LABELS = [f"class_{i}" for i in range(10)]
MEAN = (0.5, 0.4, 0.3)
STD = (0.2, 0.25, 0.3)
SIZE = 64


def small_model() -> Model:
    """timm ``test_resnet`` (random init, 10 classes) as a Model with a 64 px pipeline and custom mean/std."""
    import timm

    from pthkit.api import open_module
    from pthkit.preprocess.types import Preprocess

    torch.manual_seed(0)
    module = timm.create_model("test_resnet", pretrained=False, num_classes=len(LABELS)).eval()
    model = open_module(module)
    model.preprocess = Preprocess(input_size=(3, SIZE, SIZE), mean=MEAN, std=STD, interpolation="bicubic",
                                  label_names=list(LABELS),
                                  sources={"input_size": "test fixture", "mean": "test fixture (trained on X)",
                                           "std": "test fixture (trained on X)"})
    model.labels = list(LABELS)
    model.task = "classify"
    return model


@pytest.fixture(scope="session")
def model() -> Model:
    return small_model()


@pytest.fixture(scope="session")
def onnx_export(model: Model, tmp_path_factory: pytest.TempPathFactory) -> tuple[Model, Path, object]:
    from pthkit.export import export_model

    out = tmp_path_factory.mktemp("onnx") / "small.onnx"
    result = export_model(model, "onnx", out)
    return model, out, result
