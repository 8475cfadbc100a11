"""Hugging Face transformers folders: built from config.json (no remote code), weights through the safe reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import pthkit

transformers = pytest.importorskip("transformers")


def _tiny_resnet(folder: Path, *, safe: bool = True) -> "torch.nn.Module":
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=3,
                       id2label={0: "cat", 1: "dog", 2: "fish"}, label2id={"cat": 0, "dog": 1, "fish": 2})
    model = ResNetForImageClassification(cfg).eval()
    model.save_pretrained(folder, safe_serialization=safe)
    ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=0.875, image_mean=[0.5, 0.5, 0.5],
                           image_std=[0.5, 0.5, 0.5]).save_pretrained(folder)
    return model


@pytest.mark.parametrize("safe", [True, False])
def test_open_hf_folder_matches_transformers(tmp_path: Path, safe: bool) -> None:
    folder = tmp_path / "hf"
    ref = _tiny_resnet(folder, safe=safe)
    m = pthkit.open(folder, device="cpu")
    assert m.source.kind == "hf"
    assert m.architecture == "transformers:ResNetForImageClassification"
    assert m.labels == ["cat", "dog", "fish"] and m.task == "classify"
    assert m.preprocess is not None
    assert m.preprocess.mean == (0.5, 0.5, 0.5) and m.preprocess.sources["mean"] == "preprocessor_config.json"
    assert m.preprocess.input_size == (3, 64, 64)
    x = torch.randn(2, 3, 64, 64)
    assert m.module is not None
    with torch.no_grad():
        assert torch.allclose(m.module(x), ref(x).logits, atol=1e-6)


def test_hf_remote_code_is_never_used(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    _tiny_resnet(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForImageClassification": "evil.EvilModel"}
    (folder / "evil.py").write_text(f"open({str(tmp_path / 'pwned')!r}, 'w').write('x')\n")
    (folder / "config.json").write_text(json.dumps(cfg))
    m = pthkit.open(folder, device="cpu")
    assert not (tmp_path / "pwned").exists()
    assert any("auto_map" in e for e in m.evidence)


def test_hf_unknown_model_type_is_typed(tmp_path: Path) -> None:
    from pthkit.errors import ArchitectureError

    folder = tmp_path / "hf"
    _tiny_resnet(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "no_such_model_type"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArchitectureError):
        pthkit.open(folder, device="cpu")
