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
