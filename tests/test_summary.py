"""pthkit.summary: counts, bytes, collapsed module tree and likely head, from Checkpoint objects built by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pthkit.checkpoint.types import Checkpoint
from pthkit.summary import build_tree, find_head, format_bytes, summarize, tensor_role


def _ckpt(tensors: dict[str, torch.Tensor], **kwargs) -> Checkpoint:
    return Checkpoint(path=Path("model.pth"), format="zip", file_size=0, tensors=dict(tensors), **kwargs)


def _find(node, name):
    for _depth, child in node.iter_lines():
        if child.name == name:
            return child
    raise AssertionError(f"no tree line named {name!r}; lines: {[c.name for _, c in node.iter_lines()]}")


@pytest.fixture(scope="module")
def lite0_tensors(lite0_path):
    return torch.load(lite0_path, weights_only=True, map_location="cpu")  # legacy format: no mmap


@pytest.fixture(scope="module")
def resnet18_sd():
    import torchvision

    return torchvision.models.resnet18(num_classes=50).state_dict()


def test_real_efficientnet_lite0_counts(lite0_tensors):
    s = summarize(_ckpt(lite0_tensors))
    assert s.tensors == 296
    assert s.parameters == 4_652_008
    # running_mean + running_var are counted as values; num_batches_tracked (49 step counters) are not.
    assert s.values == 4_694_024
    assert s.counters == 49
    assert s.bytes_by_dtype == {"float32": (4_694_024) * 4, "int64": 49 * 8}
    assert s.tensors_by_dtype == {"float32": 247, "int64": 49}
    assert str(s.head) == "_fc: 1280 → 1000"
    assert s.head.bias == "_fc.bias" and s.head.confidence == "high"
    # identical consecutive MBConv blocks collapse; the stage-opening blocks (different shapes) do not
    labels = [c.label() for c in s.tree.children]
    assert "_blocks" in labels
    blocks = [c.label() for c in _find(s.tree, "_blocks").children]
    assert "12..14 × 3" in blocks and "15" in blocks and "0" in blocks
    assert sum(c.total_parameters for c in _find(s.tree, "_blocks").children) + sum(
        c.parameters for c in s.tree.children if c.name != "_blocks"
    ) == s.parameters


def test_resnet_tree_collapses_repeated_blocks_and_finds_head(resnet18_sd):
    s = summarize(_ckpt(resnet18_sd))
    assert s.parameters == sum(p.numel() for p in __import__("torchvision").models.resnet18(num_classes=50).parameters())
    layer1 = _find(s.tree, "layer1.0..1")  # single-child chain merged, two identical BasicBlocks collapsed
    assert layer1.label() == "layer1.0..1 × 2"
    assert layer1.count == 2 and layer1.total_parameters == 2 * layer1.parameters == 147_968
    layer2 = _find(s.tree, "layer2")  # 0 has a downsample, 1 does not: not collapsed
    assert [c.label() for c in layer2.children] == ["0", "1"]
    assert _find(s.tree, "conv1").kind == "Conv 3 → 64 7×7"
    assert _find(s.tree, "fc").kind == "Linear 512 → 50"
    head = s.head
    assert str(head) == "fc: 512 → 50"
    assert (head.weight, head.bias, head.in_features, head.out_features) == ("fc.weight", "fc.bias", 512, 50)
    assert any("reads like a classifier" in e for e in head.evidence)
    assert "layer1.0..1 × 2" in s.describe()


def test_torchvision_efficientnet_head_in_sequential():
    import torchvision

    sd = torchvision.models.efficientnet_b0(num_classes=37).state_dict()
    head = find_head(sd)
    assert str(head) == "classifier.1: 1280 → 37"
    assert head.confidence == "high"


def test_timm_vit_blocks_collapse_and_top_level_tensors():
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=10)
    s = summarize(_ckpt(model.state_dict()))
    assert s.parameters == sum(p.numel() for p in model.parameters())
    blocks = _find(s.tree, "blocks.0..2")
    assert blocks.count == 3
    assert {t.name for t in s.tree.tensors} >= {"cls_token", "pos_embed"}
    assert str(s.head) == "head: 32 → 10"


def test_backbone_without_head_reports_none(resnet18_sd):
    backbone = {k: v for k, v in resnet18_sd.items() if not k.startswith("fc.")}
    assert find_head(backbone) is None
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0)
    assert find_head(vit.state_dict()) is None  # last 2-D weight is mlp.fc2: not a classifier


def test_one_by_one_conv_head():
    tensors = {
        "features.0.weight": torch.zeros(64, 3, 3, 3),
        "features.0.bias": torch.zeros(64),
        "classifier.1.weight": torch.zeros(1000, 64, 1, 1),
        "classifier.1.bias": torch.zeros(1000),
    }
    head = find_head(tensors)
    assert head is not None and head.kind == "conv1x1"
    assert str(head) == "classifier.1: 64 → 1000 (1×1 conv)"


def test_tensor_roles():
    f = torch.zeros(3)
    assert tensor_role("bn.running_mean", f) == "buffer"
    assert tensor_role("bn.running_var", f) == "buffer"
    assert tensor_role("bn.num_batches_tracked", torch.tensor(5)) == "counter"
    assert tensor_role("attn.relative_position_index", torch.zeros(4, 4, dtype=torch.int64)) == "buffer"
    assert tensor_role("bn.weight", f) == "parameter"
    assert tensor_role("conv.weight", torch.zeros(2, 2, dtype=torch.float16)) == "parameter"


def test_tied_tensors_counted_once_alternatives_entries_metadata():
    emb = torch.zeros(100, 16)
    tensors = {"embed.weight": emb, "body.weight": torch.zeros(16, 16), "head.weight": emb}
    ckpt = _ckpt(
        tensors,
        shared=[["embed.weight", "head.weight"]],
        alternatives={"state_dict_ema": dict(tensors), "teacher": {"x.weight": torch.zeros(2, 2)}},
        entries={
            "epoch": 90,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
            "arch": "resnet18",
            "lr": 0.1,
            "opt_summary": {"type": "optimizer state", "param_groups": 1, "lr": 0.1},
        },
        metadata={"format": "pt"},
    )
    s = summarize(ckpt)
    assert s.parameters == 100 * 16 + 16 * 16
    assert s.tied == 1
    assert s.bytes_total == (100 * 16 + 16 * 16) * 4
    assert s.alternatives["state_dict_ema"].same_structure is True
    assert s.alternatives["teacher"].same_structure is False and s.alternatives["teacher"].tensors == 1
    assert s.entries["epoch"] == "90"
    assert s.entries["optimizer"] == "dict, 2 keys: state, param_groups"
    assert s.entries["arch"] == "'resnet18'"
    assert s.entries["lr"] == "0.1"
    assert s.entries["opt_summary"] == "type: optimizer state, param_groups: 1, lr: 0.1"
    assert s.metadata == {"format": "pt"}
    data = json.loads(json.dumps(s.to_dict()))
    assert data["parameters"] == s.parameters and data["values"] == s.values
    assert data["alternatives"]["state_dict_ema"]["tensors"] == 3


def test_summary_reads_no_tensor_data():
    # Meta tensors have shapes and dtypes but no data: summarize must work from metadata alone (mmapped files).
    tensors = {
        "stem.weight": torch.empty(32, 3, 3, 3, device="meta"),
        "stem.bn.running_mean": torch.empty(32, device="meta"),
        "head.weight": torch.empty(1000, 32, device="meta", dtype=torch.bfloat16),
    }
    s = summarize(_ckpt(tensors))
    assert s.parameters == 32 * 27 + 32_000 and s.buffer_values == 32
    assert s.bytes_by_dtype == {"bfloat16": 64_000, "float32": (32 * 27 + 32) * 4}
    assert str(s.head) == "head: 32 → 1000"


def test_non_consecutive_identical_siblings_label_their_indices():
    conv = lambda: torch.zeros(8, 8, 3, 3)  # noqa: E731
    tree = build_tree({"features.0.weight": conv(), "features.2.weight": conv(), "features.4.weight": conv()})
    features = _find(tree, "features.0..4 step 2")
    assert features.count == 3 and features.parameters == 8 * 8 * 9


def test_format_bytes():
    assert format_bytes(392) == "392 B"
    assert format_bytes(18_826_032) == "18.8 MB"
    assert format_bytes(1_073_741_824) == "1.1 GB"


def test_head_prefers_the_classifier_over_earlier_linear_layers():
    import torchvision

    sd = torchvision.models.mobilenet_v3_small(num_classes=10).state_dict()  # classifier.0 is Linear 576 → 1024
    assert str(find_head(sd)) == "classifier.3: 1024 → 10"
    inception_like = {
        "Mixed_6e.conv.weight": torch.zeros(768, 768, 1, 1),
        "AuxLogits.fc.weight": torch.zeros(1000, 768),  # auxiliary head comes first in the file
        "AuxLogits.fc.bias": torch.zeros(1000),
        "Mixed_7c.conv.weight": torch.zeros(2048, 768, 1, 1),
        "fc.weight": torch.zeros(1000, 2048),
        "fc.bias": torch.zeros(1000),
    }
    assert str(find_head(inception_like)) == "fc: 2048 → 1000"


def test_layer_kind_labels():
    tree = build_tree(
        {
            "tok_embed.weight": torch.zeros(5000, 64),
            "stem.weight": torch.zeros(32, 1, 3, 3),
            "proj.weight": torch.zeros(10, 64),
            "proj.bias": torch.zeros(10),
        }
    )
    kinds = {node.name: node.kind for _, node in tree.iter_lines()}
    assert kinds == {
        "tok_embed": "Embedding 5000 × 64",
        "stem": "Conv 32 ch 3×3 depthwise (or 1 → 32)",
        "proj": "Linear 64 → 10",
    }
