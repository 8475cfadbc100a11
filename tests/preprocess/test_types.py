"""The Preprocess record: validation wording, serialization, timm pretrained_cfg round trip, describe()."""

from __future__ import annotations

import json
import math

import pytest

from pthkit.errors import PreprocessError
from pthkit.preprocess import Preprocess


def test_defaults_and_sources():
    pre = Preprocess()
    assert pre.input_size == (3, 224, 224) and pre.effective_resize_size == 256
    assert pre.mean == (0.485, 0.456, 0.406) and pre.scale == 1.0 and pre.channel_order == "rgb"
    assert pre.sources["mean"] == "default" and pre.sources["crop_pct"] == "default"


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"crop_pct": 0}, "preprocessing value crop_pct: received 0; expected a number in (0, 2]"),
        ({"interpolation": "cubic"}, "preprocessing value interpolation: received 'cubic'; expected bilinear"),
        ({"channel_order": "rbg"}, "expected rgb | bgr"),
        ({"mean": (0.5, 0.5)}, "expected 3 finite numbers (one per input channel)"),
        ({"std": (0.5, 0.0, 0.5)}, "preprocessing value std: received (0.5, 0.0, 0.5); expected positive numbers"),
        ({"scale": -1}, "expected a positive number: 1 ([0,1] inputs) or 255 (raw 0-255)"),
        ({"crop_mode": "middle"}, "expected center | squash | border"),
        ({"input_size": (3, 0, 224)}, "expected (channels, height, width) of positive integers"),
    ],
)
def test_invalid_values_are_refused_with_one_line(kwargs, phrase):
    with pytest.raises(PreprocessError) as info:
        Preprocess(**kwargs)
    assert phrase in str(info.value)
    assert "\n" not in str(info.value)


def test_single_mean_broadcasts():
    assert Preprocess(mean=(0.5,), std=(0.25,)).std == (0.25, 0.25, 0.25)


def test_to_dict_is_json_and_round_trips():
    pre = Preprocess(input_size=(3, 192, 192), resize_size=220, mean=(0.5,) * 3, std=(0.5,) * 3, scale=1.0,
                     label_names=["a", "b"], sources={"mean": "--mean flag"})
    data = json.loads(json.dumps(pre.to_dict()))
    assert data["effective_resize_size"] == 220 and data["sources"]["mean"] == "--mean flag"
    back = Preprocess.from_dict(data)
    assert back == pre
    assert Preprocess.from_dict(data, source="bundle config").sources["mean"] == "bundle config"


def test_timm_cfg_folds_scale_and_keeps_resize():
    pre = Preprocess(mean=(103.94, 116.78, 123.68), std=(1.0, 1.0, 1.0), scale=255.0)
    cfg = pre.to_timm_pretrained_cfg(num_classes=10)
    assert cfg["mean"] == pytest.approx([103.94 / 255, 116.78 / 255, 123.68 / 255])
    assert cfg["std"] == pytest.approx([1 / 255] * 3)
    assert cfg["num_classes"] == 10 and cfg["input_size"] == [3, 224, 224] and cfg["crop_mode"] == "center"
    # torchvision's efficientnet_b1: crop 240 from 255 - crop_pct must make timm's floor() land on 255
    tv = Preprocess(input_size=(3, 240, 240), resize_size=255, crop_pct=240 / 255)
    cfg = tv.to_timm_pretrained_cfg()
    assert math.floor(240 / cfg["crop_pct"]) == 255
    assert Preprocess.from_timm_pretrained_cfg(cfg).effective_resize_size == 255


def test_timm_cfg_round_trip_through_timm():
    import timm.models
    from timm.data import resolve_data_config

    cfg = timm.models.get_pretrained_cfg("tf_efficientnet_lite0")
    pre = Preprocess.from_timm_pretrained_cfg(cfg, source="timm pretrained_cfg of tf_efficientnet_lite0")
    assert pre.mean == (0.5, 0.5, 0.5) and pre.interpolation == "bicubic"
    assert pre.sources["mean"] == "timm pretrained_cfg of tf_efficientnet_lite0"
    resolved = resolve_data_config({}, pretrained_cfg=pre.to_timm_pretrained_cfg(num_classes=1000))
    assert tuple(resolved["mean"]) == (0.5, 0.5, 0.5) and resolved["crop_pct"] == 0.875
    assert tuple(resolved["input_size"]) == (3, 224, 224)


def test_describe_lists_steps_and_sources():
    pre = Preprocess(
        input_size=(3, 224, 224), crop_pct=0.875, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3,
        channel_order="bgr", scale=255.0, label_names=["tench", "goldfish", "shark", "x"],
        sources={"mean": "--mean flag", "std": "--mean flag", "interpolation": "timm pretrained_cfg of x",
                 "crop_pct": "timm pretrained_cfg of x", "label_names": "bundle config"},
        notes=["a note"],
    )
    text = pre.describe()
    lines = text.splitlines()
    assert lines[0] == "Preprocessing: PIL RGB image -> float tensor 3x224x224"
    assert "1. Resize the shorter side to 256 px (= floor(224 / crop_pct 0.875)), bicubic, antialiased " \
           "[timm pretrained_cfg of x]" in text
    assert "2. Center-crop 224x224 (crop_mode center) [default]" in text
    assert "multiply by 255 (raw 0-255 range); reorder channels RGB -> BGR [default]" in text
    assert "Normalize: subtract mean (0.5, 0.5, 0.5), divide by std (0.5, 0.5, 0.5) [--mean flag]" in text
    assert "Labels: 4 names (tench, goldfish, shark, ...) [bundle config]" in text
    assert "Notes:\n  - a note" in text
    assert str(pre) == text


def test_bad_input_size_hint_names_the_cli_flag() -> None:
    """The CLI flag for input_size is --size; the hint must not point at a flag that does not exist."""
    with pytest.raises(PreprocessError) as info:
        Preprocess(input_size=(3, 0, 0))
    assert "--size" in str(info.value) and "--input-size" not in str(info.value)
