"""One local Ray cluster per test session (starting one costs seconds); a small image folder with broken files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """120 images: sample photos at several sizes and formats, plus broken files mixed in."""
    from PIL import Image

    from pthkit.samples import demo_photos

    folder = tmp_path_factory.mktemp("images")
    photos = [Image.open(p).convert("RGB") for p in demo_photos()]
    n = 0
    while n < 114:
        img = photos[n % len(photos)]
        w, h = img.size
        scale = 0.3 + 0.1 * (n % 8)
        small = img.resize((max(8, int(w * scale)), max(8, int(h * scale))))
        ext = ("jpg", "png", "webp")[n % 3]
        small.save(folder / f"img_{n:03d}.{ext}")
        n += 1
    (folder / "broken_000.jpg").write_bytes(b"not an image at all")
    (folder / "broken_001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    good = (folder / "img_000.jpg").read_bytes()
    (folder / "broken_002.jpg").write_bytes(good[: len(good) // 3])
    (folder / "empty_003.jpg").write_bytes(b"")
    shutil.copy(folder / "img_001.png", folder / "copy_004.png")
    (folder / "text_005.jpg").write_text("hello")
    return folder


@pytest.fixture(scope="session")
def small_classifier(tmp_path_factory) -> Path:
    """A random-init timm resnet18 with a 10-class head, as a bundle with label names (no identification needed)."""
    import timm
    import torch

    from pthkit.api import open as open_model
    from pthkit.bundle import save_bundle

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    weights = folder / "r18.pth"
    torch.save(timm.create_model("resnet18", num_classes=10).state_dict(), weights)
    handle = open_model(weights, arch="timm:resnet18", device="cpu", check=False,
                        overrides={"size": 96})
    out = folder / "bundle"
    assert handle.module is not None
    save_bundle(handle.module, out, architecture="timm:resnet18", preprocess=handle.preprocess,
                label_names=[f"class_{i}" for i in range(10)])
    return out
