"""load_model end to end: checkpoint → architecture (named or identified) → model in eval mode + LoadReport."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision

import pthkit.architectures as architectures
from pthkit.architectures.types import Candidate, IdentifyResult
from pthkit.checkpoint.types import Checkpoint
from pthkit.errors import IdentificationError, LoadError
from pthkit.loading import LoadReport, check_fit, load_model

USER_MODEL = '''
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes: int = 3, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3), nn.BatchNorm2d(width), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))
'''


def _ckpt(tensors, **kw) -> Checkpoint:
    return Checkpoint(path=Path("weights.pth"), format="zip", file_size=0, tensors=dict(tensors), **kw)


@pytest.fixture(scope="module")
def resnet_1000():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=1000).state_dict()


@pytest.fixture
def user_arch(tmp_path):
    path = tmp_path / "my_model.py"
    path.write_text(USER_MODEL)
    return f"{path}:Net"


def test_num_classes_builds_a_new_head_and_reports_it(resnet_1000):
    model, report = load_model(_ckpt(resnet_1000), "torchvision:resnet18", num_classes=10, device="cpu")
    assert report.ok and isinstance(report, LoadReport)
    assert report.reinitialized == ["fc.weight", "fc.bias"]
    assert model.fc.out_features == 10 and report.kwargs["num_classes"] == 10
    assert not model.training
    assert torch.equal(model.layer4[1].conv2.weight, resnet_1000["layer4.1.conv2.weight"])
    assert any(n.cause == "classifier-head" and "10 classes (file: 1000)" in n.detail for n in report.notes)


def test_partial_into_a_10_class_model_via_arch_kwargs(resnet_1000):
    model, report = load_model(_ckpt(resnet_1000), "torchvision:resnet18", arch_kwargs={"num_classes": 10},
                               partial=True, device="cpu")
    assert report.ok and set(report.reinitialized) == {"fc.weight", "fc.bias"}
    assert len(report.loaded) == 120


def test_wrong_architecture_is_refused_with_the_report_attached(resnet_1000):
    with pytest.raises(LoadError, match=r"weights do not fit torchvision:resnet34.*--partial") as info:
        load_model(_ckpt(resnet_1000), "torchvision:resnet34", device="cpu")
    assert info.value.report.architecture == "torchvision:resnet34"
    assert {i.cause for i in info.value.report.blocking} == {"not-in-file"}


def test_reader_prefixes_and_ema_choice_are_reported(resnet_1000):
    ckpt = _ckpt(resnet_1000, prefixes_removed=["module."], source=["model_ema"],
                 alternatives={"state_dict": {}})
    _, report = load_model(ckpt, "torchvision:resnet18", device="cpu")
    causes = {n.cause: n.detail for n in report.notes}
    assert "'module.'" in causes["prefix"]
    assert "EMA copy 'model_ema'" in causes["ema-copy"]
    text = str(report)
    assert "loaded 122/122 tensors into torchvision:resnet18 (num_classes=1000)" in text
    assert report.to_dict()["checkpoint"]["prefixes_removed"] == ["module."]


def test_raw_weights_chosen_over_ema_is_reported(resnet_1000):
    ckpt = _ckpt(resnet_1000, source=["state_dict"], alternatives={"state_dict_ema": {}})
    _, report = load_model(ckpt, "torchvision:resnet18", device="cpu")
    assert any(n.cause == "ema-copy" and "state_dict_ema" in n.detail for n in report.notes)


def test_fp16_file_into_fp32_model_and_dtype_option(resnet_1000):
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in resnet_1000.items()}
    model, report = load_model(_ckpt(half), "torchvision:resnet18", device="cpu")
    assert model.conv1.weight.dtype == torch.float32 and report.dtype == "float32"
    assert any(n.cause == "dtype" and "float16" in n.detail for n in report.notes)
    model, report = load_model(_ckpt(resnet_1000), "torchvision:resnet18", device="cpu", dtype="bf16")
    assert model.conv1.weight.dtype == torch.bfloat16 and report.dtype == "bfloat16"
    assert model.bn1.num_batches_tracked.dtype == torch.int64


def test_bad_dtype_and_num_classes_are_refused(resnet_1000):
    with pytest.raises(LoadError, match="dtype: received 'int8'"):
        load_model(_ckpt(resnet_1000), "torchvision:resnet18", dtype="int8")
    with pytest.raises(LoadError, match="num_classes: received -1"):
        load_model(_ckpt(resnet_1000), "torchvision:resnet18", num_classes=-1)


def test_user_architecture_from_a_py_file(tmp_path, user_arch):
    from pthkit.architectures import build_model

    src = build_model(user_arch, num_classes=3)
    torch.save({"state_dict": {"model." + k: v for k, v in src.state_dict().items()}}, tmp_path / "mine.ckpt")
    ckpt = _ckpt({"model." + k: v for k, v in src.state_dict().items()})  # prefix left for the loader to fix
    model, report = load_model(ckpt, user_arch, device="cpu")
    assert report.ok and report.architecture == user_arch
    assert torch.equal(model.classifier.weight, src.classifier.weight)
    # another width does not fit: check_fit says where, without copying
    fit = check_fit(ckpt, user_arch, arch_kwargs={"width": 16})
    assert not fit.ok and fit.dry_run
    assert {i.cause for i in fit.mismatched} >= {"shape"}
    assert "strict load would be refused" in str(fit)


def test_key_map_save_and_reuse(tmp_path):
    src = torchvision.models.resnet18(num_classes=7)
    renamed = {k.replace("layer", "stage").replace("fc.", "head."): v for k, v in src.state_dict().items()}
    key_map = {k: k.replace("stage", "layer").replace("head.", "fc.") for k in renamed if "stage" in k or "head." in k}
    ckpt = _ckpt(renamed)
    _, report = load_model(ckpt, "torchvision:resnet18", arch_kwargs={"num_classes": 7}, key_map=key_map,
                           device="cpu")
    assert report.ok and len(report.remapped) == len(key_map)
    saved = report.save_key_map(tmp_path / "map.json")
    doc = json.loads(saved.read_text())
    assert doc["architecture"] == "torchvision:resnet18" and doc["kwargs"]["num_classes"] == 7
    assert doc["key_map"]["head.weight"] == "fc.weight"
    # reuse: the file names the architecture and kwargs, so no arch and no identification are needed
    model, again = load_model(ckpt, key_map=saved, device="cpu")
    assert again.ok and again.architecture == "torchvision:resnet18" and model.fc.out_features == 7
    assert torch.equal(model.layer3[0].conv1.weight, src.layer3[0].conv1.weight)
    assert set(again.remap_causes.values()) == {"user-key-map"}


def test_bad_key_map_file_is_a_one_line_error(tmp_path, resnet_1000):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(LoadError, match="key map .*expected a JSON object"):
        load_model(_ckpt(resnet_1000), "torchvision:resnet18", key_map=bad)


def _fake_identify(result: IdentifyResult):
    def identify(tensors, *, top=5, include=None, **_):
        return result

    return identify


def test_unconfident_identification_refuses_naming_the_guesses(monkeypatch, resnet_1000):
    result = IdentifyResult(candidates=[
        Candidate("timm:resnet18", 0.61, "low", 70, 0, 122, 122),
        Candidate("torchvision:resnet18", 0.60, "low", 70, 0, 122, 122),
    ], confident=False, message="no confident match")
    monkeypatch.setattr(architectures, "identify", _fake_identify(result), raising=False)
    with pytest.raises(IdentificationError) as info:
        load_model(_ckpt(resnet_1000))
    message = str(info.value)
    assert "no confident match" in message and "timm:resnet18 (0.61, low)" in message
    assert "pass --arch name" in message.lower()


def test_confident_identification_uses_the_candidate_kwargs_key_map_and_head(monkeypatch):
    src = torchvision.models.resnet18(num_classes=10)
    renamed = {("backbone_" + k if not k.startswith("fc.") else k): v for k, v in src.state_dict().items()}
    cand = Candidate("torchvision:resnet18", 0.99, "high", 0, 122, 122, 122, kwargs={"num_classes": 10},
                     key_map={k: k.removeprefix("backbone_") for k in renamed if k.startswith("backbone_")},
                     head=("fc.weight", "fc.bias"), equivalent=["timm:resnet18"])
    monkeypatch.setattr(architectures, "identify",
                        _fake_identify(IdentifyResult([cand], True, "resnet18 family")), raising=False)
    model, report = load_model(_ckpt(renamed), device="cpu")
    assert report.ok and report.candidate is cand and model.fc.out_features == 10
    assert set(report.remap_causes.values()) == {"renamed-by-alignment"}
    assert any(n.cause == "equivalent" and "timm:resnet18" in n.detail for n in report.notes)
    assert "remapped 120 keys by alignment" in str(report)
    data = report.to_dict()
    json.dumps(data)
    assert data["candidate"]["architecture"] == "torchvision:resnet18" and data["ok"] is True


def test_load_from_a_file_path(tmp_path, resnet_1000):
    # integration with the reader: a Lightning-style checkpoint on disk
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in resnet_1000.items()}, "epoch": 3}, path)
    model, report = load_model(path, "torchvision:resnet18", num_classes=10, partial=True, device="cpu")
    assert report.ok and report.reinitialized == ["fc.weight", "fc.bias"]
    assert torch.equal(model.conv1.weight, resnet_1000["conv1.weight"])
    assert any(n.cause == "prefix" for n in report.notes)


def test_inferred_kwargs_a_user_class_does_not_take_are_dropped(tmp_path):
    path = tmp_path / "plain.py"
    path.write_text("from torch import nn\n\n\nclass Plain(nn.Module):\n    def __init__(self):\n"
                    "        super().__init__()\n        self.fc = nn.Linear(4, 2)\n")
    spec = f"{path}:Plain"
    from pthkit.architectures import build_model

    src = build_model(spec)
    model, report = load_model(_ckpt(src.state_dict()), spec, device="cpu")
    assert report.ok and torch.equal(model.fc.weight, src.fc.weight)


def test_timm_style_train_checkpoint_with_module_prefix_and_ema(tmp_path, resnet_1000):
    ema = {k: (v + 1 if v.is_floating_point() else v) for k, v in resnet_1000.items()}
    path = tmp_path / "train.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in resnet_1000.items()},
                "state_dict_ema": {"module." + k: v for k, v in ema.items()}, "epoch": 3}, path)
    model, report = load_model(path, "torchvision:resnet18", device="cpu")
    notes = {n.cause: n.detail for n in report.notes}
    assert "'module.'" in notes["prefix"] and "EMA copy state_dict_ema ignored" in notes["ema-copy"]
    assert torch.equal(model.conv1.weight, resnet_1000["conv1.weight"])
    model, report = load_model(path, "torchvision:resnet18", device="cpu", select="ema")
    assert "weights taken from the EMA copy 'state_dict_ema'" in {n.cause: n.detail for n in report.notes}["ema-copy"]
    assert torch.equal(model.conv1.weight, ema["conv1.weight"])


def test_values_are_copied_out_of_the_memory_mapped_file(tmp_path, resnet_1000):
    from pthkit.checkpoint import read_checkpoint

    path = tmp_path / "plain.pth"
    torch.save(resnet_1000, path)
    ckpt = read_checkpoint(path)  # zip format: tensors may be memory-mapped
    model, report = load_model(ckpt, "torchvision:resnet18", device="cpu")
    assert report.ok
    file_ptrs = {t.untyped_storage().data_ptr() for t in ckpt.tensors.values()}
    assert not any(p.untyped_storage().data_ptr() in file_ptrs for p in model.state_dict().values())
