"""Tiny image datasets and weights files for the fine-tuning / evaluation / bundle tests (built on the fly)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TINY_ARCH = "timm:test_efficientnet"  # ~100k parameters, builds in milliseconds
CLASSES = ("a_red", "b_green", "c_blue")  # sorted order = channel order


def make_image_folder(root: Path, *, per_class: int = 8, size: int = 32, seed: int = 0,
                      classes: tuple[str, ...] = CLASSES) -> Path:
    """``root/<class>/<i>.png``: class i is noise with channel i bright — learnable in a few steps."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
            arr[..., c % 3] = rng.integers(160, 256, size=(size, size), dtype=np.uint8)
            Image.fromarray(arr).save(d / f"{i:03d}.png")
    return root


def make_tiny_weights(path: Path, *, num_classes: int = 10) -> Path:
    """A random-init timm test_efficientnet with a ``num_classes`` head, saved as a plain state_dict .pth."""
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=num_classes)
    torch.save(model.state_dict(), path)
    return path


class ChannelModel:
    """Factory for a fixed fake classifier: logits = per-channel mean of the input (so class i ↔ channel i)."""

    @staticmethod
    def build(permutation: tuple[int, ...] = (0, 1, 2)):
        import torch
        from torch import nn

        class _Channel(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.num_classes = 3
                self.register_buffer("perm", torch.tensor(permutation))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                means = x.mean(dim=(2, 3)) * 10
                return means[:, self.perm]

        return _Channel().eval()
