"""Issue 3 names every torchvision family: classification, detection, segmentation, video and optical flow.
Each is listed by the registry and gets a signature on the meta device (no memory, no download)."""

from __future__ import annotations

import pytest

from pthkit.architectures import compute_signature, get_architecture, list_architectures

FAMILIES = {
    "classification": "torchvision:mobilenet_v3_small",
    "detection": "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn",
    "segmentation": "torchvision:lraspp_mobilenet_v3_large",
    "video": "torchvision:r3d_18",
    "optical flow": "torchvision:raft_small",
}


def test_every_torchvision_family_is_listed():
    names = set(list_architectures(source="torchvision"))
    for family, name in FAMILIES.items():
        assert name in names, family
    assert {"torchvision:deeplabv3_resnet50", "torchvision:fcn_resnet50", "torchvision:mvit_v2_s"} <= names


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_torchvision_family_has_a_meta_signature(family):
    sig = compute_signature(get_architecture(FAMILIES[family]))
    assert len(sig) > 10
    assert all(isinstance(k, str) and isinstance(shape, tuple) for k, shape in sig.items)
    assert all(len(shape) > 0 or k.endswith("num_batches_tracked") for k, shape in sig.items)
