"""Acceptance on real weights: the efficientnet-lite0 package's .pth (lukemelas naming) loads into timm through the
alignment key map with nothing missing and classifies scikit-image's coffee.png as espresso (ImageNet 967)."""

from __future__ import annotations

import pytest
import torch

from pthkit.loading import load_model
from pthkit.samples import skimage_photo

ESPRESSO = 967


def _coffee_batch() -> torch.Tensor:
    # Explicit preprocessing (inferring it is the preprocess module's job): this model was trained on inputs scaled
    # to [-1, 1] (mean = std = 0.5), bicubic resize of the short side to 256, 224 center crop.
    from PIL import Image
    from torchvision.transforms import v2

    transform = v2.Compose([
        v2.PILToTensor(),
        v2.Resize(256, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.CenterCrop(224),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ])
    with Image.open(skimage_photo("coffee.png")) as img:
        return transform(img.convert("RGB")).unsqueeze(0)


def _check(model, report) -> None:
    assert report.ok and report.complete
    assert not report.missing and not report.mismatched and not report.unexpected
    assert len(report.loaded) == 296 and len(report.remapped) == 296
    assert set(report.remap_causes.values()) == {"renamed-by-alignment"}
    assert report.remapped["_conv_stem.weight"] == "conv_stem.weight"
    assert "remapped 296 keys by alignment (lukemelas → timm)" in str(report)
    with torch.inference_mode():
        logits = model(_coffee_batch())
    assert int(logits.argmax()) == ESPRESSO


def test_lite0_with_named_arch_loads_by_alignment_and_sees_espresso(lite0_path):
    model, report = load_model(lite0_path, "timm:efficientnet_lite0", device="cpu")
    assert report.architecture == "timm:efficientnet_lite0" and report.kwargs["num_classes"] == 1000
    _check(model, report)


def test_lite0_tf_variant_fits_the_same_file(lite0_path):
    model, report = load_model(lite0_path, "timm:tf_efficientnet_lite0", device="cpu")
    _check(model, report)


def test_lite0_identified_without_arch_is_the_tf_twin_by_batchnorm_fit(lite0_path):
    # Identification against the full index (built on first use: slow when the cache is cold). The file's tensors fit
    # efficientnet_lite0 and tf_efficientnet_lite0 alike; its batch-norm statistics fit the tf twin (TensorFlow
    # "same" padding, eps 1e-3) several times better, so that one is loaded, with the evidence on the candidate.
    model, report = load_model(lite0_path, device="cpu")
    assert report.architecture == "timm:tf_efficientnet_lite0"
    assert report.candidate is not None and "timm:efficientnet_lite0" in report.candidate.equivalent
    decision = report.candidate.twin_decision
    assert decision is not None and decision.confident and decision.ratio is not None and decision.ratio > 5
    assert decision.normalization == "half"
    assert any(n.cause == "equivalent" and "timm:efficientnet_lite0" in n.detail for n in report.notes)
    _check(model, report)


def test_lite0_tf_twin_gets_the_four_demo_photos_right(lite0_path):
    # `make demo`'s four photos, with the tf twin and the normalization inferred from the packaged crops.
    from PIL import Image

    from pthkit.preprocess import resolve_preprocess
    from pthkit.samples import skimage_photo, sklearn_photo

    model, report = load_model(lite0_path, "timm:tf_efficientnet_lite0", device="cpu")
    pre = resolve_preprocess(model, arch=report.architecture, checkpoint=report.checkpoint)
    assert tuple(pre.mean) == (0.5, 0.5, 0.5) and "inferred" in pre.sources["mean"]
    tf = pre.transform()
    photos = [skimage_photo("coffee.png"), skimage_photo("chelsea.png"), skimage_photo("rocket.jpg"),
              sklearn_photo("china.jpg")]
    batch = []
    for p in photos:
        with Image.open(p) as im:
            batch.append(tf(im.convert("RGB")))
    with torch.inference_mode():
        top = model(torch.stack(batch)).argmax(1).tolist()
    names = [pre.label_names[i] for i in top]
    assert names[0] == "espresso" and names[1] in ("tiger cat", "tabby") and names[2] == "missile"
    assert names[3] == "palace"
