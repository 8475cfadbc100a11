"""identify(): random-init models saved different ways, the real efficientnet-lite0 file, unknown files, user code."""

from __future__ import annotations

import textwrap

import pytest
import torch

from pthkit.architectures import build_model, identify


def _state(name, *, real=False, **kwargs):
    """A state dict of ``name``; on the meta device (shapes only, what identify reads) unless ``real``."""
    torch.manual_seed(0)
    if real:
        return build_model(name, **kwargs).state_dict()
    with torch.device("meta"):
        return build_model(name, **kwargs).state_dict()


def _renamed(sd):
    # Another naming convention: module dots become underscores, the parameter name stays.
    def rename(key):
        module, _, param = key.rpartition(".")
        return f"{module.replace('.', '_')}.{param}" if module else f"net_{param}"

    return {rename(k): v for k, v in sd.items()}


SAVES = {
    "plain": lambda sd: sd,
    "module-prefix": lambda sd: {f"module.{k}": v for k, v in sd.items()},
    "fp16": lambda sd: {k: v.half() if v.is_floating_point() else v for k, v in sd.items()},
    "no-bn-counters": lambda sd: {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")},
    "ema-copy": lambda sd: {**sd, **{f"ema.{k}": v for k, v in sd.items()}},
    "renamed": _renamed,
}


@pytest.mark.parametrize("save", list(SAVES))
@pytest.mark.parametrize("arch", ["timm:test_efficientnet", "torchvision:mobilenet_v3_small", "timm:test_vit"])
def test_identifies_saved_models(small_index, arch, save):
    result = identify(SAVES[save](_state(arch)), include=small_index.names, index=small_index)
    best = result.best
    assert result.confident, result.message
    assert arch in [best.architecture, *best.equivalent]
    assert best.confidence == "high" and best.score == 1.0
    assert best.kwargs["num_classes"] == 1000
    if save == "renamed":
        assert best.matched_by_shape > 0 and best.key_map
        assert "other names" in best.differences[0]
    if save == "ema-copy":
        assert any("second copy" in d for d in best.differences)


@pytest.mark.parametrize("arch", ["timm:test_resnet", "torchvision:squeezenet1_1", "torchvision:resnet18"])
def test_another_num_classes_is_inferred(small_index, arch):
    sd = _state(arch, real=True, num_classes=7)
    result = identify(_renamed(sd), include=small_index.names, index=small_index)
    assert result.confident and arch in [result.best.architecture, *result.best.equivalent]
    assert result.best.kwargs["num_classes"] == 7
    assert any("7 outputs" in d for d in result.best.differences)
    model = build_model(result.best.architecture, **result.best.kwargs)
    model.load_state_dict({result.best.key_map.get(k, k): v for k, v in _renamed(sd).items()})


def test_in_chans_and_img_size_are_inferred(small_index):
    result = identify(_state("timm:vit_tiny_patch16_224", img_size=96, in_chans=1), include=small_index.names, index=small_index)
    assert result.best.architecture in ("timm:vit_tiny_patch16_224", "timm:deit_tiny_patch16_224")
    assert result.best.kwargs == {"num_classes": 1000, "img_size": 96, "in_chans": 1}
    assert result.confident


def test_torchvision_and_timm_resnet18_are_exact_twins_chosen_by_a_stated_rule(small_index):
    result = identify(_state("torchvision:resnet18"), include=small_index.names, index=small_index)
    names = {result.best.architecture, *result.best.equivalent}
    assert names == {"timm:resnet18", "torchvision:resnet18"}
    assert result.confident and result.best.architecture == "torchvision:resnet18"
    assert result.twin_decision is not None and result.twin_decision.exact
    assert "exact twins" in result.message and "reference implementation" in result.message


def test_real_efficientnet_lite0_file(small_index, lite0_path):
    sd = torch.load(lite0_path, map_location="cpu", weights_only=True)
    result = identify(sd, include=small_index.names, index=small_index)
    best = result.best
    assert result.confident  # decided by the batch-norm fit (tests/architectures/test_twins.py has the numbers)
    assert best.architecture == "timm:tf_efficientnet_lite0" and best.equivalent == ["timm:efficientnet_lite0"]
    assert "by function" in result.message and "padding" in result.message
    assert len(best.key_map) == 296 == len(sd)
    assert len(set(best.key_map.values())) == 296  # one-to-one
    assert best.key_map["_conv_stem.weight"] == "conv_stem.weight"
    assert best.key_map["_blocks.0._depthwise_conv.weight"] == "blocks.0.0.conv_dw.weight"
    assert best.key_map["_fc.weight"] == "classifier.weight"
    assert best.key_map["_bn0.num_batches_tracked"] == "bn1.num_batches_tracked"
    model = build_model(best.architecture, **best.kwargs)
    model.load_state_dict({best.key_map[k]: v for k, v in sd.items()})  # strict: nothing missing


def test_unknown_tensors_are_not_confident(small_index):
    torch.manual_seed(1)
    sd = {f"enc.{i}.w": torch.randn(7 + i, 5) for i in range(40)}
    result = identify(sd, include=small_index.names, index=small_index)
    assert not result.confident and result.message.startswith("no confident match")
    assert all(c.confidence == "low" for c in result.candidates)


def test_a_truncated_model_is_not_confident(small_index):
    sd = _state("timm:resnet34")
    drop = [k for k in sd if k.startswith("layer4.")]
    result = identify({k: v for k, v in sd.items() if k not in drop}, include=small_index.names, index=small_index)
    assert not result.confident


def test_backbone_inside_a_bigger_model_is_a_partial_match(small_index):
    torch.manual_seed(2)
    sd = {f"backbone.body.{k}": v for k, v in _state("torchvision:resnet18").items() if not k.startswith("fc.")}
    sd.update({f"head.block{i}.weight": torch.randn(33 + i, 17) for i in range(60)})
    result = identify(sd, include=small_index.names, index=small_index)
    assert not result.confident
    partial = {p.architecture: p for p in result.partial}
    assert "timm:resnet18" in partial
    assert partial["timm:resnet18"].matched == 100
    assert "contains timm:resnet18 features (100 of 100 tensors under 'backbone.body.')" in result.message


USER_FILE = textwrap.dedent(
    """
    import torch.nn as nn

    class MyNet(nn.Module):
        def __init__(self, width=8, num_classes=4):
            super().__init__()
            self.stem = nn.Conv2d(3, width, 3)
            self.bn = nn.BatchNorm2d(width)
            self.fc = nn.Linear(width, num_classes)
    """
)


def test_does_this_file_fit_my_class(small_index, tmp_path):
    path = tmp_path / "mynet.py"
    path.write_text(USER_FILE)
    spec = f"{path}:MyNet"
    fits = build_model(spec, num_classes=3).state_dict()
    result = identify(fits, include=[spec], index=small_index)
    assert result.confident and result.best.architecture == spec and result.best.kwargs == {"num_classes": 3}
    wider = build_model(spec, width=16).state_dict()
    result = identify(wider, include=[spec], index=small_index)
    assert not result.confident
    assert any(d.startswith("shape of stem.weight: file [16, 3, 3, 3] vs model") for d in result.best.differences)


def test_accepts_checkpoint_like_and_result_to_dict(small_index):
    class Ckpt:
        tensors = {**_state("timm:test_resnet"), "epoch": 3, "arch": "resnet"}  # stray entries are not weights

    result = identify(Ckpt(), include=["timm:test_*"], index=small_index, top=2)
    data = result.to_dict()
    assert data["confident"] and data["candidates"][0]["architecture"] == "timm:test_resnet"
    assert len(data["candidates"]) == 2 and isinstance(data["candidates"][0]["head"], list)
    assert "timm:test_resnet" in str(result)


def test_empty_input_is_a_typed_error():
    from pthkit.errors import IdentificationError

    with pytest.raises(IdentificationError, match="received no tensors"):
        identify({})
