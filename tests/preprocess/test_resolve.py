"""resolve_preprocess: each source in its place, provenance recorded, the bare-file rule, flags win."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from pthkit.errors import AmbiguousArchitectureError, PreprocessError
from pthkit.preprocess import DEFAULT_CANDIDATES, NormalizationGuess, resolve_preprocess
from pthkit.preprocess.types import IMAGENET_MEAN

BY_NAME = {c.name: c for c in DEFAULT_CANDIDATES}
NORM = ("mean", "std", "scale", "channel_order")


def test_defaults_only():
    pre = resolve_preprocess()
    assert pre.mean == IMAGENET_MEAN and pre.input_size == (3, 224, 224) and pre.crop_pct == 0.875
    assert all(pre.sources[f] == "default" for f in ("mean", "std", "input_size", "crop_pct", "interpolation"))
    assert pre.label_names is None and pre.sources["label_names"] == "none known"
    assert pre.inference is None


def test_timm_pretrained_cfg():
    pre = resolve_preprocess(arch="timm:tf_efficientnet_lite0")
    assert pre.mean == (0.5, 0.5, 0.5) and pre.interpolation == "bicubic" and pre.crop_pct == 0.875
    assert pre.sources["mean"] == "timm pretrained_cfg of tf_efficientnet_lite0"
    assert pre.sources["interpolation"] == "timm pretrained_cfg of tf_efficientnet_lite0"
    assert pre.label_names[967] == "espresso"
    assert pre.sources["label_names"] == "ImageNet-1k class names (the library config has 1000 classes)"


def test_timm_cfg_from_the_model_itself():
    import timm

    model = timm.create_model("resnet18", num_classes=10)  # random init: BN statistics at their initial values
    pre = resolve_preprocess(model)
    assert pre.sources["crop_pct"] == "timm pretrained_cfg of resnet18"
    assert pre.mean == IMAGENET_MEAN
    assert "initial values" in " ".join(pre.notes)  # inference tried (bare) and said why it could not
    assert pre.label_names is None  # 10 outputs: ImageNet names do not apply


def test_torchvision_weights_meta():
    pre = resolve_preprocess(arch="torchvision:efficientnet_b1")
    assert pre.input_size == (3, 240, 240) and pre.resize_size == 255 and pre.interpolation == "bilinear"
    assert pre.sources["resize_size"] == "torchvision weights EfficientNet_B1_Weights.IMAGENET1K_V2"
    assert pre.label_names[967] == "espresso"
    assert pre.sources["label_names"] == "torchvision weights EfficientNet_B1_Weights.IMAGENET1K_V2"


def test_bare_name_through_the_registry():
    pre = resolve_preprocess(arch="tf_efficientnet_lite0")
    assert pre.sources["mean"] == "timm pretrained_cfg of tf_efficientnet_lite0"
    with pytest.raises(AmbiguousArchitectureError, match="Qualify it"):
        resolve_preprocess(arch="resnet18")


def test_user_code_has_no_library_config_and_is_not_imported(tmp_path):
    pre = resolve_preprocess(arch=str(tmp_path / "never_imported.py") + ":Net")
    assert pre.sources["mean"] == "default"
    assert any("user code: no library preprocessing config" in n for n in pre.notes)


def test_bundle_config_wins_and_skips_inference(tiny_net, fit_first_bn, fit_batch):
    model = fit_first_bn(tiny_net(num_classes=3), BY_NAME["half"], fit_batch)
    config = {
        "architecture": "resnet18",
        "num_classes": 3,
        "label_names": ["cat", "dog", "fox"],
        "pretrained_cfg": {"input_size": [3, 160, 160], "interpolation": "bilinear", "crop_pct": 1.0,
                           "crop_mode": "center", "mean": [0.4076, 0.458, 0.485], "std": [1 / 255] * 3},
        "pthkit": {"preprocess": {"mean": [103.94, 116.78, 123.68], "std": [1.0, 1.0, 1.0], "scale": 255.0,
                                  "channel_order": "bgr"}},
    }
    pre = resolve_preprocess(model, arch="timm:resnet18", bundle_config=config)
    assert pre.inference is None
    assert pre.input_size == (3, 160, 160) and pre.crop_pct == 1.0 and pre.effective_resize_size == 160
    assert pre.mean == (103.94, 116.78, 123.68) and pre.scale == 255.0 and pre.channel_order == "bgr"
    assert pre.label_names == ["cat", "dog", "fox"]
    assert all(pre.sources[f] == "bundle config" for f in (*NORM, "input_size", "label_names"))


def test_checkpoint_entries_state_the_normalization(tiny_net, fit_first_bn, fit_batch):
    model = fit_first_bn(tiny_net(), BY_NAME["imagenet"], fit_batch)
    ckpt = SimpleNamespace(entries={"epoch": 3, "args": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                                                         "input_size": [3, 192, 192], "crop_pct": 0.9}})
    pre = resolve_preprocess(model, checkpoint=ckpt)
    assert pre.mean == (0.5, 0.5, 0.5) and pre.input_size == (3, 192, 192) and pre.crop_pct == 0.9
    assert pre.sources["mean"] == "checkpoint entries (args.mean, args.std, args.input_size, args.crop_pct)"
    assert pre.inference is None  # the file says it: nothing to infer
    detectron = SimpleNamespace(entries={"cfg": {"input": {"format": "BGR", "pixel_mean": [103.53, 116.28, 123.675],
                                                           "pixel_std": [57.375, 57.12, 58.395]}}})
    pre = resolve_preprocess(checkpoint=detectron)
    assert pre.scale == 255.0 and pre.channel_order == "bgr" and pre.std == (57.375, 57.12, 58.395)


@pytest.mark.parametrize("truth", ["half", "raw255"])
def test_inferred_when_nothing_else_says(tiny_net, fit_first_bn, fit_batch, truth):
    model = fit_first_bn(tiny_net(), BY_NAME[truth], fit_batch)
    pre = resolve_preprocess(model)
    cand = BY_NAME[truth]
    assert (pre.mean, pre.std, pre.scale, pre.channel_order) == (cand.mean, cand.std, cand.scale, "rgb")
    assert all(pre.sources[f] == "inferred from batch-norm statistics (confidence high)" for f in NORM)
    assert pre.sources["input_size"] == "default"
    assert isinstance(pre.inference, NormalizationGuess) and pre.inference.confidence == "high"
    assert pre.to_dict()["inference"]["candidate"]["name"] == truth


def test_bare_file_inference_beats_the_architecture_default(fit_first_bn, fit_batch):
    import timm

    torch.manual_seed(0)
    model = fit_first_bn(timm.create_model("resnet18", num_classes=10), BY_NAME["half"], fit_batch)
    bare = resolve_preprocess(model, arch="timm:resnet18")
    assert bare.mean == (0.5, 0.5, 0.5)
    assert bare.sources["mean"] == "inferred from batch-norm statistics (confidence high)"
    assert bare.sources["crop_pct"] == "timm pretrained_cfg of resnet18"  # sizes still from the library
    assert any("timm pretrained_cfg of resnet18 gives ImageNet mean/std" in n and "not evidence about this file" in n
               for n in bare.notes)
    # the same model declared to hold the library's own weights: the library config is authoritative
    library = resolve_preprocess(model, arch="timm:resnet18", bare=False)
    assert library.mean == IMAGENET_MEAN and library.inference is None
    assert library.sources["mean"] == "timm pretrained_cfg of resnet18"


def test_inconclusive_inference_falls_back_to_the_architecture_default(monkeypatch, tiny_net):
    from pthkit.preprocess import resolve as resolve_module

    low = NormalizationGuess(candidate=BY_NAME["half"], confidence="low", message="inferred normalization: x - "
                             "confidence low", distances={"half": 0.5, "imagenet": 0.52})
    monkeypatch.setattr(resolve_module, "infer_normalization", lambda model, images=None: low)
    pre = resolve_preprocess(tiny_net(), arch="timm:efficientnet_lite0")
    assert pre.mean == IMAGENET_MEAN
    assert pre.sources["mean"] == ("timm pretrained_cfg of efficientnet_lite0 (architecture default; this file's "
                                   "own normalization is unknown)")
    assert any("normalization inference inconclusive" in n for n in pre.notes)
    assert pre.inference is low
    no_lib = resolve_preprocess(tiny_net())
    assert no_lib.sources["mean"] == "default"


def test_flags_win_over_everything(tiny_net, fit_first_bn, fit_batch):
    model = fit_first_bn(tiny_net(), BY_NAME["raw255"], fit_batch)
    overrides = {"size": 192, "crop_pct": "0.9", "mean": "imagenet", "std": "0.2,0.2,0.2", "interpolation": "bicubic",
                 "channel_order": "bgr", "scale": 1, "crop_mode": "squash", "resize_size": None}
    pre = resolve_preprocess(model, arch="torchvision:resnet18", overrides=overrides)
    assert pre.inference is None  # the flags define the normalization
    assert pre.input_size == (3, 192, 192) and pre.crop_pct == 0.9 and pre.effective_resize_size == 213
    assert pre.mean == IMAGENET_MEAN and pre.std == (0.2, 0.2, 0.2) and pre.channel_order == "bgr"
    assert pre.crop_mode == "squash" and pre.interpolation == "bicubic"
    assert pre.sources["input_size"] == "--size flag" and pre.sources["crop_pct"] == "--crop-pct flag"
    assert pre.sources["mean"] == "--mean flag" and pre.sources["channel_order"] == "--channel-order flag"
    assert "resize_size" not in pre.sources or pre.sources["resize_size"] == "default"
    assert pre.label_names is None  # 10 outputs: torchvision's 1000 ImageNet names do not fit
    assert "[input_size: --size flag; crop_mode: --crop-mode flag]" in pre.describe()


def test_resize_flag_and_size_pair():
    pre = resolve_preprocess(arch="torchvision:resnet18", overrides={"size": "224x256", "resize_size": 300})
    assert pre.input_size == (3, 224, 256) and pre.effective_resize_size == 300
    assert pre.sources["resize_size"] == "--resize-size flag"


@pytest.mark.parametrize(
    ("overrides", "phrase"),
    [
        ({"colour": 1}, "preprocessing override: received 'colour'; expected one of size,"),
        ({"mean": "0.5,0.5"}, "--mean: received '0.5,0.5'; expected 3 numbers like 0.485,0.456,0.406 or a name"),
        ({"size": "big"}, "--size: received 'big'; expected a size like 224 or 224x256"),
        ({"crop_pct": 3}, "preprocessing value crop_pct: received 3.0; expected a number in (0, 2]"),
        ({"interpolation": "fancy"}, "preprocessing value interpolation: received 'fancy'"),
        ({"scale": "1,2"}, "--scale: received '1,2'; expected one number: 1 ([0,1] inputs) or 255"),
    ],
)
def test_bad_flags_are_typed_errors(overrides, phrase):
    with pytest.raises(PreprocessError) as info:
        resolve_preprocess(overrides=overrides)
    assert phrase in str(info.value)


def test_label_names_that_do_not_fit_the_head_are_dropped():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 10))
    pre = resolve_preprocess(model, arch="torchvision:resnet18", infer=False)
    assert pre.label_names is None
    assert any("lists 1000 class names but the model has 10 outputs" in n for n in pre.notes)


def test_lite0_file_end_to_end(lite0_model):
    """The `make demo` path: the real file in timm's efficientnet_lite0, no flags -> 0.5/0.5 -> espresso."""
    from pthkit.samples import photo

    pre = resolve_preprocess(lite0_model, arch="timm:efficientnet_lite0")
    assert pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.5, 0.5, 0.5)
    assert pre.sources["mean"] == "inferred from batch-norm statistics (confidence high)"
    assert pre.interpolation == "bicubic"
    assert pre.sources["interpolation"] == "timm pretrained_cfg of efficientnet_lite0"
    assert any("timm pretrained_cfg of efficientnet_lite0 gives ImageNet mean/std" in n for n in pre.notes)
    tf = pre.transform()
    batch = torch.stack([tf(Image.open(photo(n)).convert("RGB")) for n in ("coffee.png", "china.jpg", "rocket.jpg")])
    with torch.no_grad():
        top = lite0_model(batch).argmax(1).tolist()
    assert [pre.label_names[i] for i in top] == ["espresso", "palace", "missile"]
    text = pre.describe()
    assert "Normalize: subtract mean (0.5, 0.5, 0.5), divide by std (0.5, 0.5, 0.5) [inferred from batch-norm " \
           "statistics (confidence high)]" in text


def test_with_load_model_and_its_checkpoint(lite0_path):
    """Integration with pthkit.loading (contract: load_model -> (model, LoadReport with .checkpoint))."""
    from pthkit.loading import load_model
    from pthkit.samples import photo

    model, report = load_model(lite0_path, "timm:efficientnet_lite0", device="cpu")
    pre = resolve_preprocess(model, arch=report.architecture, checkpoint=report.checkpoint)
    assert pre.mean == (0.5, 0.5, 0.5) and pre.inference is not None and pre.inference.confidence == "high"
    x = pre.transform()(Image.open(photo("coffee.png")).convert("RGB"))
    with torch.no_grad():
        assert pre.label_names[int(model(x[None]).argmax())] == "espresso"


def test_labels_flag():
    pre = resolve_preprocess(overrides={"label_names": ["a", "b"]})
    assert pre.label_names == ["a", "b"] and pre.sources["label_names"] == "--labels flag"


def test_identified_without_arch_make_demo_path(lite0_path):
    """`pthkit predict lite0.pth coffee.png` with no flags: identify -> load -> infer 0.5/0.5 -> espresso."""
    from pthkit.loading import load_model
    from pthkit.samples import photo

    model, report = load_model(lite0_path, device="cpu")
    pre = resolve_preprocess(model, arch=report.architecture, checkpoint=report.checkpoint)
    assert pre.mean == (0.5, 0.5, 0.5) and pre.inference.confidence == "high"
    x = pre.transform()(Image.open(photo("coffee.png")).convert("RGB"))
    with torch.no_grad():
        assert pre.label_names[int(model(x[None]).argmax())] == "espresso"


def test_bundle_round_trip_through_config_json_and_timm_local_dir(tmp_path):
    """What a bundle stores (timm pretrained_cfg + pthkit.preprocess) resolves back to the same pipeline, and timm
    itself reads the pretrained_cfg (local-dir:)."""
    import json

    import timm
    from safetensors.torch import save_file

    pre = resolve_preprocess(
        arch="timm:test_resnet",
        overrides={"size": 96, "crop_pct": 0.9, "mean": "imagenet", "std": "imagenet", "label_names": ["a", "b", "c"]},
    )
    model = timm.create_model("test_resnet", num_classes=3)
    config = {
        "architecture": "test_resnet",
        "num_classes": 3,
        "label_names": pre.label_names,
        "pretrained_cfg": pre.to_timm_pretrained_cfg(num_classes=3),
        "pthkit": {"preprocess": pre.to_dict()},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    back = resolve_preprocess(model, bundle_config=json.loads((tmp_path / "config.json").read_text()))
    for field in ("input_size", "crop_pct", "crop_mode", "interpolation", "mean", "std", "scale", "channel_order",
                  "label_names"):
        assert getattr(back, field) == getattr(pre, field), field
        assert back.sources[field] == "bundle config"
    assert back.inference is None
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    assert tuple(loaded.pretrained_cfg["mean"]) == pytest.approx((0.485, 0.456, 0.406))
    assert tuple(loaded.pretrained_cfg["input_size"]) == (3, 96, 96) and loaded.pretrained_cfg["crop_pct"] == 0.9
