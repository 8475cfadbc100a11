"""Signatures built on the meta device equal the real state_dict, and know their head, stem and position embedding."""

from __future__ import annotations

import pytest

from pthkit.architectures import build_model, compute_signature, get_architecture
from pthkit.architectures.signatures import Signature, infer_img_size


@pytest.mark.filterwarnings("ignore::FutureWarning")  # googlenet's init notice
@pytest.mark.parametrize("name", ["timm:test_resnet", "timm:test_vit", "torchvision:squeezenet1_1",
                                  "torchvision:mobilenet_v3_small", "torchvision:googlenet"])
def test_meta_signature_equals_real_state_dict(name):
    sig = compute_signature(get_architecture(name))
    real = build_model(name).state_dict()
    assert sig.keys == list(real)
    assert sig.shapes == [tuple(t.shape) for t in real.values()]
    assert sig.in_chans == 3 and sig.stem is not None


def test_head_stem_and_pos_embed():
    vit = compute_signature(get_architecture("timm:vit_tiny_patch16_224"))
    assert vit.head == ("head.weight", "head.bias") and vit.num_classes == 1000
    assert vit.stem == "patch_embed.proj.weight"
    assert (vit.pos_embed, vit.patch_size, vit.num_prefix_tokens, vit.img_size) == ("pos_embed", 16, 1, 224)
    assert infer_img_size(vit, 1 + 24 * 24) == 384 and infer_img_size(vit, 1 + 23) is None
    assert vit.cfg["interpolation"] == "bicubic"
    squeeze = compute_signature(get_architecture("torchvision:squeezenet1_1"))
    assert squeeze.head == ("classifier.1.weight", "classifier.1.bias")
    google = compute_signature(get_architecture("torchvision:googlenet"))
    assert set(google.head) >= {"fc.weight", "aux1.fc2.weight", "aux2.fc2.weight"}


def test_detector_has_no_classifier_head_and_json_round_trip():
    sig = compute_signature(get_architecture("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn"))
    assert sig.head == () and sig.num_classes is None
    again = Signature.from_json(sig.name, sig.to_json())
    assert again == sig


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_boolean_head_options_are_found_and_round_trip():
    seg = compute_signature(get_architecture("torchvision:deeplabv3_mobilenet_v3_large"))
    (opt,) = seg.options
    assert opt.kwarg == "aux_loss" and opt.default is False and opt.keys[0].startswith("aux_classifier.")
    assert not set(opt.keys) & set(seg.keys)  # off by default: not part of the default model
    with_aux = build_model("torchvision:deeplabv3_mobilenet_v3_large", aux_loss=True).state_dict()
    assert set(with_aux) == set(seg.keys) | set(opt.keys)
    google = compute_signature(get_architecture("torchvision:googlenet"))
    (aux,) = google.options
    assert aux.kwarg == "aux_logits" and aux.default is True and set(aux.keys) <= set(google.keys)
    assert Signature.from_json(google.name, google.to_json()) == google
    assert compute_signature(get_architecture("timm:test_resnet")).options == ()
