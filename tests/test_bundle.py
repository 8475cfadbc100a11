"""Bundles: round trip through pthkit and through timm's ``local-dir:``, layout, torchvision-only models, errors."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from pthkit.bundle import is_bundle, load_bundle, read_labels, save_bundle
from pthkit.errors import BundleError, InputNotFoundError


def _preprocess(size: int = 48):
    from pthkit.preprocess import Preprocess

    return Preprocess(input_size=(3, size, size), crop_pct=0.9, interpolation="bicubic", mean=(0.5, 0.5, 0.5),
                      std=(0.5, 0.5, 0.5))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return timm.create_model("test_efficientnet", pretrained=False, num_classes=4).eval()


def test_round_trip_through_pthkit_and_timm_local_dir(tmp_path, tiny):
    out = save_bundle(tiny, tmp_path / "b", architecture="timm:test_efficientnet", preprocess=_preprocess(),
                      label_names=["w", "x", "y", "z"], extra={"metrics": {"val_acc": 0.5}, "source_sha256": "ab"})
    assert is_bundle(out) and sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "test_efficientnet" and cfg["num_classes"] == 4
    assert cfg["num_features"] == tiny.num_features and cfg["label_names"] == ["w", "x", "y", "z"]
    pc = cfg["pretrained_cfg"]
    assert pc["input_size"] == [3, 48, 48] and pc["mean"] == [0.5] * 3 and pc["interpolation"] == "bicubic"
    assert pc["crop_pct"] == pytest.approx(0.9) and pc["crop_mode"] == "center" and pc["num_classes"] == 4
    section = cfg["pthkit"]
    assert section["arch"] == "timm:test_efficientnet" and section["timm_loadable"] is True
    assert section["metrics"] == {"val_acc": 0.5} and section["source_sha256"] == "ab" and "version" in section

    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        ref = tiny(x)
        model, pre, config = load_bundle(out, device="cpu")
        assert torch.equal(model(x), ref) and not model.training
        assert list(pre.label_names) == ["w", "x", "y", "z"] and tuple(pre.input_size) == (3, 48, 48)
        assert config == cfg
        via_timm = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
        assert torch.equal(via_timm(x), ref)
    assert via_timm.pretrained_cfg["label_names"] == ["w", "x", "y", "z"]
    assert tuple(via_timm.pretrained_cfg["mean"]) == (0.5, 0.5, 0.5)


def test_torchvision_only_architecture_is_saved_and_says_timm_cannot_load_it(tmp_path):
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.get_model("squeezenet1_1", weights=None, num_classes=3).eval()
    out = save_bundle(tv, tmp_path / "tv", architecture="torchvision:squeezenet1_1", preprocess=_preprocess(64))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["pthkit"]["timm_loadable"] is False and "timm cannot load" in cfg["pthkit"]["note"]
    model, _, _ = load_bundle(out, device="cpu")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), tv(x))


def test_saving_into_a_run_folder_keeps_other_files_and_leaves_no_temp_dirs(tmp_path, tiny):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"keep me")
    save_bundle(tiny, run, architecture="timm:test_efficientnet", preprocess=_preprocess())
    save_bundle(tiny, run, architecture="timm:test_efficientnet", preprocess=_preprocess())  # replaces in place
    assert (run / "checkpoints" / "last.pt").read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no .run.bundle-* left behind
    assert is_bundle(run)


def test_bad_bundles_and_arguments_raise_bundle_errors(tmp_path, tiny):
    with pytest.raises(InputNotFoundError):
        load_bundle(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text('{"architecture": "test_efficientnet"}')
    assert not is_bundle(tmp_path / "half")
    with pytest.raises(BundleError, match="without model.safetensors"):
        load_bundle(tmp_path / "half")
    with pytest.raises(BundleError, match="expected 4 .the model's classes."):
        save_bundle(tiny, tmp_path / "x", architecture="timm:test_efficientnet", preprocess=_preprocess(),
                    label_names=["only", "two"])
    # weights that do not fit the config are refused, never partially loaded
    out = save_bundle(tiny, tmp_path / "b", architecture="timm:test_efficientnet", preprocess=_preprocess())
    cfg = json.loads((out / "config.json").read_text())
    cfg["num_classes"] = 7
    cfg["pthkit"]["arch_kwargs"] = {"num_classes": 7}
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match="bundle weights"):
        load_bundle(out, device="cpu")


def test_read_labels_from_text_and_json(tmp_path):
    (tmp_path / "l.txt").write_text("cat\ndog\n\n")
    (tmp_path / "l.json").write_text('{"1": "dog", "0": "cat"}')
    assert read_labels(tmp_path / "l.txt") == read_labels(tmp_path / "l.json") == ["cat", "dog"]


def test_bundling_a_bundle_keeps_its_preprocessing_and_labels(tmp_path, tiny):
    """Re-bundling used to reset input size, mean/std and labels to the architecture's defaults."""
    from pthkit.bundle import bundle_weights

    src = save_bundle(tiny, tmp_path / "src", architecture="timm:test_efficientnet", preprocess=_preprocess(),
                      label_names=["w", "x", "y", "z"])
    _, cfg = bundle_weights(src, tmp_path / "again")
    assert cfg["label_names"] == ["w", "x", "y", "z"]
    assert cfg["pretrained_cfg"]["input_size"] == [3, 48, 48] and cfg["pretrained_cfg"]["mean"] == [0.5] * 3
    _, cfg = bundle_weights(src, tmp_path / "new_head", num_classes=2)  # the old labels no longer fit
    assert "label_names" not in cfg and cfg["pretrained_cfg"]["input_size"] == [3, 48, 48]
