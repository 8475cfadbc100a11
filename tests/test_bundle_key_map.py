"""Issue 5, the bundle's own section: a file loaded through the alignment key map (the real efficientnet-lite0 `.pth`,
lukemelas naming) is bundled with that key map, the source hash, the timm hub fields and the full pretrained_cfg."""

from __future__ import annotations

import hashlib
import json
import math

import torch

from pthkit.bundle import bundle_weights, load_bundle


def test_bundle_of_an_aligned_file_records_key_map_hash_and_pretrained_cfg(tmp_path, lite0_path):
    out, cfg = bundle_weights(lite0_path, tmp_path / "b", arch="timm:efficientnet_lite0")
    assert json.loads((out / "config.json").read_text()) == cfg
    assert (out / "model.safetensors").is_file()
    assert cfg["architecture"] == "efficientnet_lite0" and cfg["num_classes"] == 1000
    section = cfg["pthkit"]
    assert section["source_sha256"] == hashlib.sha256(lite0_path.read_bytes()).hexdigest()
    pairs = {(a, b) for a, b in section["key_map"].items()} | {(b, a) for a, b in section["key_map"].items()}
    assert ("_conv_stem.weight", "conv_stem.weight") in pairs, list(section["key_map"].items())[:3]
    assert len(section["key_map"]) >= 200
    pc = cfg["pretrained_cfg"]
    assert [round(x, 3) for x in pc["mean"]] == [0.5, 0.5, 0.5] and [round(x, 3) for x in pc["std"]] == [0.5] * 3
    assert pc["input_size"] == [3, 224, 224] and pc["interpolation"] and 0 < pc["crop_pct"] <= 1
    model, pre, _ = load_bundle(out, device="cpu")  # the bundle needs no flags and no key map to load again
    with torch.no_grad():
        assert not math.isnan(float(model(torch.zeros(1, 3, 224, 224)).sum()))
    assert tuple(round(x, 3) for x in pre.mean) == (0.5, 0.5, 0.5)
