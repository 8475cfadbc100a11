"""The eval pipeline equals timm's and torchvision's own; the training pipeline is timm's; scale/bgr are exact."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from pthkit.preprocess import Preprocess, resolve_preprocess
from pthkit.preprocess.transforms import ReverseChannels


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    from pthkit.samples import skimage_photo

    with Image.open(skimage_photo("coffee.png")) as im:  # 400x600, not square: exercises shorter-side resize
        return im.convert("RGB")


@pytest.mark.parametrize(
    "name",
    [
        "efficientnet_lite0",  # bicubic, crop_pct 0.875
        "resnet18.a1_in1k",  # crop_pct 0.95
        "tf_efficientnet_lite0",  # 0.5/0.5
        "coat_lite_medium_384.in1k",  # squash
        "deepseek_vit_412m.deepseek_v4_1_flash",  # border (pad with the mean colour)
        "vit_5b_patch16_sapiens2.fb",  # squash, non-square input size
    ],
)
def test_eval_transform_matches_timm(photo, name):
    import timm.models
    from timm.data import create_transform, resolve_data_config

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        pytest.fail(f"timm {timm.__version__} lost the pretrained cfg {name}; pick another with the same crop mode")
    reference = create_transform(**resolve_data_config({}, pretrained_cfg=cfg.to_dict()))(photo)
    pre = resolve_preprocess(arch=f"timm:{name}")
    assert pre.sources["mean"] == f"timm pretrained_cfg of {name}"
    ours = pre.transform()(photo)
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max() < 1e-5
    assert torch.equal(Preprocess.from_timm_pretrained_cfg(cfg).transform()(photo), ours)


@pytest.mark.parametrize(
    "weights",
    [
        "ResNet18_Weights.IMAGENET1K_V1",
        "EfficientNet_B1_Weights.IMAGENET1K_V2",
        "ViT_B_16_Weights.IMAGENET1K_SWAG_E2E_V1",
    ],
)
def test_eval_transform_matches_torchvision(photo, weights):
    from torchvision import models

    w = models.get_weight(weights)
    reference = w.transforms()(photo)
    model_name = {"ResNet18": "resnet18", "EfficientNet_B1": "efficientnet_b1", "ViT_B_16": "vit_b_16"}[
        weights.split("_Weights")[0]]
    from pthkit.preprocess.sources import torchvision_layer

    layer = torchvision_layer(weights)
    pre = Preprocess(**{k: v for k, v in layer.values.items()}, sources={k: layer.source for k in layer.values})
    ours = pre.transform()(photo)
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max() < 1e-5
    if w == models.get_model_weights(model_name).DEFAULT:
        default = resolve_preprocess(arch=f"torchvision:{model_name}")
        assert torch.equal(default.transform()(photo), ours)
        assert default.sources["resize_size"] == f"torchvision weights {weights}"


def test_scale_and_bgr_are_exact(photo):
    base = Preprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    x = base.transform()(photo)  # [0,1] RGB
    caffe = Preprocess(mean=(103.94, 116.78, 123.68), std=(1.0, 1.0, 1.0), scale=255.0, channel_order="bgr")
    expected = (x.flip(0) * 255 - torch.tensor([103.94, 116.78, 123.68]).view(3, 1, 1))
    assert (caffe.transform()(photo) - expected).abs().max() < 1e-3
    bgr = Preprocess(mean=(0.406, 0.456, 0.485), std=(0.225, 0.224, 0.229), channel_order="bgr")
    rgb = Preprocess()
    assert (bgr.transform()(photo) - rgb.transform()(photo).flip(0)).abs().max() < 1e-6


def test_grayscale_model_gets_one_channel(photo):
    pre = Preprocess(input_size=(1, 64, 64), mean=(0.5,), std=(0.5,))
    assert pre.transform()(photo).shape == (1, 64, 64)


def test_train_transform_is_timm_with_our_values(photo):
    import random

    pre = Preprocess(input_size=(3, 96, 96), mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic")
    tf = pre.train_transform()
    out = tf(photo)
    assert out.shape == (3, 96, 96)
    assert out.min() >= -1.0 - 1e-6 and out.max() <= 1.0 + 1e-6  # 0.5/0.5 maps [0,1] to [-1,1]
    assert "RandomResizedCrop" in repr(tf) and "bicubic" in repr(tf)
    # bgr: the same random draws give timm's RGB-normalized output with the channels reversed
    bgr = Preprocess(input_size=(3, 96, 96), mean=(0.406, 0.456, 0.485), std=(0.225, 0.224, 0.229),
                     channel_order="bgr")
    rgb = Preprocess(input_size=(3, 96, 96))
    random.seed(3)
    torch.manual_seed(3)
    a = bgr.train_transform()(photo)
    random.seed(3)
    torch.manual_seed(3)
    b = rgb.train_transform()(photo)
    assert (a - b.flip(0)).abs().max() < 1e-6
    assert isinstance(bgr.train_transform().transforms[-1], ReverseChannels)


def test_pipeline_pickles_for_dataloader_workers():
    import pickle

    tf = Preprocess(channel_order="bgr", mean=(0.4, 0.45, 0.48), std=(0.2, 0.2, 0.2)).transform()
    assert pickle.loads(pickle.dumps(tf)) is not None
