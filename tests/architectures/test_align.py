"""Alignment of one file against one signature: prefixes, renames, module structure, resized heads."""

from __future__ import annotations

from pthkit.architectures.align import match_signature, strip_prefix
from pthkit.architectures.signatures import Signature

SIG = Signature(
    name="toy",
    keys=["stem.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked",
          "block.conv.weight", "fc.weight", "fc.bias"],
    shapes=[(8, 3, 3, 3), (8,), (8,), (8,), (8,), (), (8, 8, 1, 1), (5, 8), (5,)],
    head=("fc.weight", "fc.bias"), num_classes=5, stem="stem.weight", in_chans=3,
)


def items(mapping):
    return list(mapping.items())


def test_strip_prefix_picks_the_prefix_that_explains_most_keys():
    keys = ["backbone.body.stem.weight", "backbone.body.bn.weight", "rpn.x.weight"]
    assert strip_prefix(keys, set(SIG.keys)) == "backbone.body."
    assert strip_prefix(["stem.weight", "bn.weight"], set(SIG.keys)) == ""


def test_renamed_keys_align_one_to_one_with_counters_and_resized_head():
    file = {"_conv.weight": (8, 1, 3, 3), "_bn0.weight": (8,), "_bn0.bias": (8,), "_bn0.running_mean": (8,),
            "_bn0.running_var": (8,), "_bn0.num_batches_tracked": (), "_blk._c.weight": (8, 8, 1, 1),
            "_fc.weight": (3, 8), "_fc.bias": (3,)}
    m = match_signature(items(file), SIG)
    assert m.complete and m.score == 1.0 and m.by_shape == 8 and m.by_name == 0
    assert m.kwargs == {"num_classes": 3, "in_chans": 1}
    assert m.pairs["_bn0.num_batches_tracked"] == "bn.num_batches_tracked"
    assert m.pairs["_fc.bias"] == "fc.bias" and len(set(m.pairs.values())) == len(m.pairs)


def test_pairs_that_break_module_structure_are_rejected():
    # Same shapes in order, but one file module's tensors would land in two model modules: not an alignment.
    file = {"a.weight": (8, 3, 3, 3), "a.w2": (8,), "a.w3": (8,), "c.running_mean": (8,), "c.running_var": (8,)}
    m = match_signature(items(file), SIG)
    assert not m.complete and m.score < 0.5


def test_missing_head_means_num_classes_zero():
    file = {k: s for k, s in zip(SIG.keys, SIG.shapes) if not k.startswith("fc.")}
    m = match_signature(items(file), SIG)
    assert m.complete and m.kwargs == {"num_classes": 0}
    assert "no classifier head in the file (num_classes=0)" in m.differences


def test_head_in_file_for_a_model_built_without_one():
    # timm's siglip_gap ViTs default to num_classes=0; their classifier module is still named in timm's cfg: 'head'.
    sig = Signature(name="timm:vit_base_patch16_siglip_gap_224", keys=["norm.weight", "norm.bias"],
                    shapes=[(8,), (8,)])
    m = match_signature([("norm.weight", (8,)), ("norm.bias", (8,)), ("head.weight", (10, 8)), ("head.bias", (10,))],
                        sig)
    assert m.complete and m.kwargs == {"num_classes": 10} and m.head == ("head.weight", "head.bias")


# --- key order never matters: alignment by module-tree structure ------------------------------------------------------

import random  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from pthkit.architectures import build_model, compute_signature, get_architecture, identify  # noqa: E402
from pthkit.architectures.align import _tree_path, natural_key  # noqa: E402

ORDERS = {
    "original": lambda items: list(items),
    "sorted": sorted,  # how HF model.safetensors stores keys
    "reversed": lambda items: list(reversed(items)),
    "shuffled": lambda items: random.Random(7).sample(list(items), len(items)),
}


def flattened(key: str) -> str:
    """Another convention with the tree flattened: 'net.' prefix, module dots become underscores."""
    module, _, param = key.rpartition(".")
    return f"net.{module.replace('.', '_')}.{param}" if module else f"net.{param}"


def test_natural_order_and_flattened_levels():
    keys = ["_blocks.10._bn0", "_blocks.2._bn0", "_blocks.1._bn1", "_blocks.1._bn0"]
    assert sorted(keys, key=natural_key) == ["_blocks.1._bn0", "_blocks.1._bn1", "_blocks.2._bn0", "_blocks.10._bn0"]
    assert _tree_path("net.layer1_0_downsample_0") == "net.layer1.0.downsample.0"
    assert _tree_path("features_6_conv_3") == "features.6.conv.3"
    assert _tree_path("_conv_stem") == "_conv_stem" and _tree_path("blocks.0.0.conv_dw") == "blocks.0.0.conv_dw"


@pytest.fixture(scope="module")
def lite0(lite0_path):
    sd = torch.load(lite0_path, map_location="cpu", weights_only=True)
    return sd, compute_signature(get_architecture("timm:efficientnet_lite0"))


@pytest.mark.parametrize("order", list(ORDERS))
def test_real_lite0_aligns_the_same_in_any_key_order(lite0, order):
    sd, sig = lite0
    items = [(k, tuple(v.shape)) for k, v in sd.items()]
    m = match_signature(ORDERS[order](items), sig)
    reference = match_signature(items, sig)
    assert m.complete and m.score == 1.0 and m.pairs == reference.pairs and m.differences == reference.differences
    assert m.pairs["_blocks.10._bn1.weight"] == "blocks.4.2.bn2.weight"  # _blocks.10 sorts before _blocks.2
    assert m.pairs["_blocks.2._bn0.weight"] == "blocks.1.1.bn1.weight"
    model = build_model("timm:efficientnet_lite0", **m.kwargs)
    model.load_state_dict({m.pairs[k]: v for k, v in sd.items()})  # strict: one-to-one, nothing missing


@pytest.mark.parametrize("arch", ["torchvision:mobilenet_v2", "timm:efficientnet_lite0", "torchvision:resnet18"])
def test_identify_gives_the_same_answer_in_any_key_order(small_index, arch):
    with torch.device("meta"):
        sd = {flattened(k): v for k, v in build_model(arch).state_dict().items()}
    base = identify(sd, include=small_index.names, index=small_index)
    assert base.best is not None and arch in [base.best.architecture, *base.best.equivalent]
    for order in ("sorted", "reversed", "shuffled"):
        other = identify(dict(ORDERS[order](sd.items())), include=small_index.names, index=small_index)
        assert other.confident == base.confident and other.best.architecture == base.best.architecture
        assert other.best.key_map == base.best.key_map and other.best.confidence == base.best.confidence
        assert other.best.score == base.best.score and other.best.equivalent == base.best.equivalent


@pytest.mark.slow  # identify runs the twin test (forward passes) on the real file: minutes on a busy 2-core machine
def test_identify_on_the_real_lite0_file_is_the_same_sorted(small_index, lite0):
    sd, _ = lite0
    base = identify(sd, include=small_index.names, index=small_index)
    other = identify(dict(sorted(sd.items())), include=small_index.names, index=small_index)
    assert other.confident == base.confident and other.best.architecture == base.best.architecture
    assert other.best.key_map == base.best.key_map and other.best.confidence == base.best.confidence


def _distinct_weights(model: torch.nn.Module) -> None:
    """Every tensor its own random values (BN statistics included) so that any swapped pair changes the output."""
    torch.manual_seed(0)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) * 0.5 + 0.5 if t.dim() == 1 else torch.randn_like(t) * 0.1)


@pytest.mark.parametrize("source,target", [
    ("torchvision:resnet18", "timm:resnet18"),
    ("torchvision:mobilenet_v2", "timm:mobilenetv2_100"),
    ("timm:mobilenetv2_100", "torchvision:mobilenet_v2"),
    ("torchvision:mobilenet_v3_small", "torchvision:mobilenet_v3_small"),
])
@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_renamed_and_reordered_files_load_with_the_same_function(source, target, order):
    original = build_model(source).eval()
    _distinct_weights(original)
    sd = dict(ORDERS[order]([(flattened(k), v) for k, v in original.state_dict().items()]))
    m = match_signature([(k, tuple(v.shape)) for k, v in sd.items()], compute_signature(get_architecture(target)))
    assert m.complete and m.score == 1.0 and m.by_shape > 0
    rebuilt = build_model(target, **m.kwargs).eval()
    rebuilt.load_state_dict({m.pairs[k]: v for k, v in sd.items()})
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(original(x), rebuilt(x), atol=1e-5)


@pytest.mark.parametrize("order", ["original", "sorted"])
def test_hf_transformers_resnet_aligns_with_torchvision_in_any_order(order):
    transformers = pytest.importorskip("transformers")
    config = transformers.ResNetConfig(embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2],
                                       layer_type="basic", num_labels=10, downsample_in_first_stage=False)
    hf = transformers.ResNetForImageClassification(config).eval()
    _distinct_weights(hf)
    sd = dict(ORDERS[order](hf.state_dict().items()))
    m = match_signature([(k, tuple(v.shape)) for k, v in sd.items()],
                        compute_signature(get_architecture("torchvision:resnet18")))
    assert m.complete and m.kwargs == {"num_classes": 10}
    rebuilt = build_model("torchvision:resnet18", **m.kwargs).eval()
    rebuilt.load_state_dict({m.pairs[k]: v for k, v in sd.items() if k in m.pairs})
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(hf(x).logits, rebuilt(x), atol=1e-5)


# --- boolean head options: aux_loss / aux_logits inferred from the file ----------------------------------------------


def _meta_state(name, **kwargs):
    with torch.device("meta"):
        return build_model(name, **kwargs).state_dict()


@pytest.mark.parametrize("order", ["original", "sorted"])
def test_segmentation_aux_head_means_aux_loss_true(order):
    sig = compute_signature(get_architecture("torchvision:deeplabv3_mobilenet_v3_large"))
    with_aux = _meta_state("torchvision:deeplabv3_mobilenet_v3_large", aux_loss=True)
    m = match_signature(ORDERS[order]([(k, tuple(v.shape)) for k, v in with_aux.items()]), sig)
    assert m.complete and m.score == 1.0 and m.kwargs == {"aux_loss": True}
    assert any(d.startswith("aux_loss=True") for d in m.differences)
    plain = _meta_state("torchvision:deeplabv3_mobilenet_v3_large")
    m = match_signature([(k, tuple(v.shape)) for k, v in plain.items()], sig)
    assert m.complete and m.kwargs == {} and m.model_n == m.file_n


def test_googlenet_without_aux_heads_means_aux_logits_false():
    sig = compute_signature(get_architecture("torchvision:googlenet"))
    no_aux = _meta_state("torchvision:googlenet", aux_logits=False)
    m = match_signature(sorted((flattened(k), tuple(v.shape)) for k, v in no_aux.items()), sig)
    assert m.complete and m.kwargs == {"aux_logits": False, "num_classes": 1000}
    assert not any(b.startswith("aux") for b in m.pairs.values())
    m = match_signature([(k, tuple(v.shape)) for k, v in _meta_state("torchvision:googlenet").items()], sig)
    assert m.complete and "aux_logits" not in m.kwargs


def test_identify_proposes_aux_loss_and_the_model_loads_with_it():
    name = "torchvision:deeplabv3_mobilenet_v3_large"
    sd = _meta_state(name, aux_loss=True)
    result = identify(sd, include=[name, "torchvision:lraspp_mobilenet_v3_large", "torchvision:fcn_resnet50"])
    assert result.confident and result.best.architecture == name and result.best.kwargs == {"aux_loss": True}
    with torch.device("meta"):
        model = build_model(result.best.architecture, **result.best.kwargs)
    model.load_state_dict(sd, assign=True)  # strict: the proposed kwargs build exactly the file's tensors
