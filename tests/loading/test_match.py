"""The matching core, on plain modules and state dicts: every key explained, partial loads that survive a new head."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from pthkit.errors import LoadError
from pthkit.loading import load_state_into


class Tiny(nn.Module):
    """conv + BN + linear head: enough keys to exercise every cause, built in microseconds."""

    def __init__(self, num_classes: int = 5, aux: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, num_classes)
        if aux:
            self.AuxLogits = nn.Linear(4, num_classes)


def _causes(issues):
    return {i.key: i.cause for i in issues}


@pytest.fixture(scope="module")
def resnet_1000():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=1000).state_dict()


def test_partial_load_into_new_head_keeps_backbone_and_reinitializes_head(resnet_1000):
    model = torchvision.models.resnet18(num_classes=10)
    fresh_head = model.fc.weight.detach().clone()
    report = load_state_into(model, resnet_1000, partial=True)
    assert report.ok and not report.complete
    assert set(report.reinitialized) == {"fc.weight", "fc.bias"}
    assert len(report.loaded) == len(resnet_1000) - 2
    assert {i.cause for i in report.mismatched} == {"classifier-head"}
    assert "[1000, 512]" in report.mismatched[0].detail and "[10, 512]" in report.mismatched[0].detail
    state = model.state_dict()
    for key, value in resnet_1000.items():
        if not key.startswith("fc."):
            assert torch.equal(state[key], value), key
    assert torch.equal(model.fc.weight, fresh_head)  # the fresh init of the built model, untouched
    assert "re-initialized" in str(report)


def test_the_classic_dict_filter_crashes_where_partial_does_not(resnet_1000):
    # The common recipe keeps keys by name only, so the 1000-class head is kept and load_state_dict raises.
    model = torchvision.models.resnet18(num_classes=10)
    model_dict = model.state_dict()
    naive = {k: v for k, v in resnet_1000.items() if k in model_dict}
    with pytest.raises(RuntimeError, match="size mismatch"):
        model.load_state_dict(naive, strict=False)
    assert load_state_into(model, resnet_1000, partial=True).ok


def test_strict_refuses_with_counts_first_keys_and_what_to_do(resnet_1000):
    model = torchvision.models.resnet18(num_classes=10)
    before = model.conv1.weight.detach().clone()
    with pytest.raises(LoadError) as info:
        load_state_into(model, resnet_1000, architecture="torchvision:resnet18")
    message = str(info.value)
    assert "\n" not in message
    assert "weights do not fit torchvision:resnet18" in message
    assert "2 shape-mismatched [classifier-head]" in message and "fc.weight" in message
    assert "Use partial=True / --partial to load what fits" in message
    assert "--arch" in message and "--num-classes" in message
    assert torch.equal(model.conv1.weight, before)  # refused: nothing was copied
    assert info.value.report.blocking  # the report travels with the error


def test_head_change_expected_is_not_blocking(resnet_1000):
    model = torchvision.models.resnet18(num_classes=10)
    report = load_state_into(model, resnet_1000, head_change_expected=True)
    assert report.ok
    assert all(i.harmless for i in report.mismatched)
    assert report.reinitialized == ["fc.weight", "fc.bias"]


@pytest.mark.parametrize("prefix", ["module.", "model.", "_orig_mod."])
def test_leftover_wrapper_prefix_is_removed_and_reported(prefix):
    src = Tiny()
    tensors = {prefix + k: v for k, v in src.state_dict().items()}
    model = Tiny()
    report = load_state_into(model, tensors)
    assert report.ok and report.complete
    assert report.remapped[prefix + "conv.weight"] == "conv.weight"
    assert set(report.remap_causes.values()) == {"prefix"}
    assert any(n.cause == "prefix" and repr(prefix) in n.detail for n in report.notes)
    assert torch.equal(model.conv.weight, src.conv.weight)


def test_model_that_wraps_the_backbone_gets_the_prefix_added():
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = Tiny()

    src = Tiny()
    model = Wrapper()
    report = load_state_into(model, src.state_dict())
    assert report.ok and report.remapped["fc.weight"] == "net.fc.weight"
    assert torch.equal(model.net.fc.bias, src.fc.bias)


def test_ema_copy_in_the_same_dict_is_explained_and_harmless():
    src = Tiny()
    tensors = dict(src.state_dict())
    tensors.update({"model_ema." + k: v.clone() for k, v in src.state_dict().items()})
    report = load_state_into(Tiny(), tensors)
    assert report.ok
    assert {i.cause for i in report.unexpected} == {"ema-copy"}
    assert all(i.harmless for i in report.unexpected)


def test_fp16_file_is_cast_and_copied_into_fp32_parameters():
    src = Tiny()
    tensors = {k: (v.half() if v.is_floating_point() else v) for k, v in src.state_dict().items()}
    model = Tiny()
    report = load_state_into(model, tensors)
    assert report.ok
    assert model.conv.weight.dtype == torch.float32
    assert torch.equal(model.conv.weight, tensors["conv.weight"].float())
    # copied, not aliased: the file's (possibly memory-mapped) tensors are not kept by the model
    assert model.conv.weight.data_ptr() != tensors["conv.weight"].data_ptr()


def test_missing_num_batches_tracked_is_harmless_info():
    src = Tiny()
    tensors = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    report = load_state_into(Tiny(), tensors)
    assert report.ok and report.complete
    assert _causes(report.missing) == {"bn.num_batches_tracked": "num_batches_tracked"}
    assert report.missing[0].harmless and "num_batches_tracked" not in report.reinitialized


def test_unexpected_num_batches_tracked_is_harmless():
    # torchvision's FrozenBatchNorm2d (detection backbones) keeps no step counter.
    from torchvision.ops import FrozenBatchNorm2d

    src = Tiny()
    model = Tiny()
    model.bn = FrozenBatchNorm2d(4)
    report = load_state_into(model, src.state_dict())
    assert report.ok and report.complete
    assert _causes(report.unexpected) == {"bn.num_batches_tracked": "num_batches_tracked"}
    assert torch.equal(model.bn.running_var, src.bn.running_var)


def test_auxiliary_head_in_file_is_explained_and_harmless():
    src = Tiny(aux=True)
    report = load_state_into(Tiny(aux=False), src.state_dict())
    assert report.ok
    assert set(_causes(report.unexpected).values()) == {"auxiliary-head"}
    assert "AuxLogits.weight" in _causes(report.unexpected)


def test_tied_weights_missing_from_file_are_harmless():
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Linear(4, 4, bias=False)
            self.out = nn.Linear(4, 4, bias=False)
            self.out.weight = self.emb.weight

    src = Tied()
    tensors = {"emb.weight": src.emb.weight.detach().clone()}  # safetensors-style: one copy of a tied tensor
    model = Tied()
    report = load_state_into(model, tensors)
    assert report.ok
    assert _causes(report.missing) == {"out.weight": "tied-weights"}
    assert torch.equal(model.out.weight, tensors["emb.weight"])


def test_non_head_shape_mismatch_is_blocking_with_cause_shape():
    src = Tiny()
    model = Tiny()
    model.conv = nn.Conv2d(3, 4, 5)
    with pytest.raises(LoadError, match=r"1 shape-mismatched \[shape\] \(conv.weight file \[4, 3, 3, 3\]"):
        load_state_into(model, src.state_dict())
    report = load_state_into(model, src.state_dict(), partial=True)
    assert report.reinitialized == ["conv.weight"]


def test_nothing_fits_always_refuses_even_partial():
    tensors = {"a.weight": torch.zeros(3), "b.bias": torch.zeros(2)}
    with pytest.raises(LoadError, match="none matches the model"):
        load_state_into(Tiny(), tensors, partial=True)


def test_user_key_map_renames_and_dry_run_copies_nothing():
    src = Tiny()
    renamed = {k.replace("conv.", "stem.").replace("fc.", "head."): v for k, v in src.state_dict().items()}
    key_map = {k: k.replace("stem.", "conv.").replace("head.", "fc.") for k in renamed}
    model = Tiny()
    before = model.fc.weight.detach().clone()
    dry = load_state_into(model, renamed, key_map=key_map, dry_run=True)
    assert dry.ok and torch.equal(model.fc.weight, before)
    assert "strict load would succeed" in str(dry)
    report = load_state_into(model, renamed, key_map=key_map)
    assert report.remap_causes["head.weight"] == "user-key-map"
    assert torch.equal(model.fc.weight, src.fc.weight)


def test_googlenet_aux_heads_are_explained_when_the_model_has_none():
    src = torchvision.models.googlenet(aux_logits=True, init_weights=False, num_classes=10)
    model = torchvision.models.googlenet(aux_logits=False, init_weights=False, num_classes=10)
    report = load_state_into(model, src.state_dict())
    assert report.ok and report.complete
    assert {i.cause for i in report.unexpected} == {"auxiliary-head"}
    assert len(report.unexpected) == 20 and "aux1.conv.bn.num_batches_tracked" in _causes(report.unexpected)
    assert "unexpected: 20 auxiliary-head [harmless]: aux1.conv.conv.weight" in str(report)
