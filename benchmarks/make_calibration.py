"""Regenerate pthkit's packaged calibration crops (``src/pthkit/data/calibration/*.jpg``) from scikit-image's photos.

Why packaged crops: normalization inference, the twin (batch-norm fit) test and the post-load check must give the
same answer on every install, so they must not depend on which optional packages ship sample photos. The crops are
small (128 px JPEG) and come only from public-domain / CC0 photos that scikit-image bundles (see LICENSE.md there).

Run: ``python benchmarks/make_calibration.py`` (needs scikit-image; deterministic for a given Pillow version).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "src" / "pthkit" / "data" / "calibration"
SIZE = 128
QUALITY = 88
PHOTO_SIDE = 256  # whole photos with known ImageNet content, for the post-load check
PHOTOS = {"coffee.png": "espresso", "chelsea.png": "cat", "rocket.jpg": "missile", "astronaut.png": ""}
# (file in skimage/data, number of crops, licence as stated in skimage.data's docstrings)
SOURCES: list[tuple[str, int, str]] = [
    ("coffee.png", 9, "CC0 by the photographer (Rachel Michetti); courtesy of Pikolo Espresso Bar"),
    ("chelsea.png", 9, "CC0 by the photographer (Stefan van der Walt)"),
    ("rocket.jpg", 9, "public domain (SpaceX)"),
    ("astronaut.png", 9, "public domain (NASA Great Images database)"),
    ("camera.png", 1, "CC0 by the photographer (Lav Varshney)"),
    ("grass.png", 1, "CC0 (CC0Textures)"),
    ("gravel.png", 1, "CC0 (CC0Textures)"),
    ("clock_motion.png", 1, "public domain (Stefan van der Walt)"),
]


def _crop_box(rng: random.Random, w: int, h: int) -> tuple[int, int, int, int]:
    """A random crop of 25-100% of the area with aspect 3/4..4/3 (torchvision RandomResizedCrop's rule)."""
    for _ in range(20):
        area = rng.uniform(0.25, 1.0) * w * h
        ratio = rng.uniform(3 / 4, 4 / 3)
        cw, ch = round((area * ratio) ** 0.5), round((area / ratio) ** 0.5)
        if cw <= w and ch <= h:
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return x, y, x + cw, y + ch
    side = min(w, h)
    return (w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side


def main() -> int:
    import skimage

    data = Path(skimage.__file__).parent / "data"
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.jpg"):
        old.unlink()
    rng = random.Random(20260101)
    rows = []
    for name, count, licence in SOURCES:
        with Image.open(data / name) as im:
            im = im.convert("RGB")
            for i in range(count):
                box = _crop_box(rng, *im.size)
                crop = im.crop(box).resize((SIZE, SIZE), Image.Resampling.LANCZOS)
                if rng.random() < 0.5:
                    crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                out = OUT / f"crop-{Path(name).stem}-{i:02d}.jpg"
                crop.save(out, "JPEG", quality=QUALITY, optimize=True)
                rows.append(f"| {out.name} | skimage/data/{name} crop {box} | {licence} |")
    for name, _, licence in SOURCES:
        if name not in PHOTOS:
            continue
        with Image.open(data / name) as im:
            im = im.convert("RGB")
            scale = PHOTO_SIDE / min(im.size)
            photo = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
            out = OUT / f"photo-{Path(name).stem}.jpg"
            photo.save(out, "JPEG", quality=QUALITY, optimize=True)
            rows.append(f"| {out.name} | skimage/data/{name}, short side {PHOTO_SIDE} px (known content: "
                        f"{PHOTOS[name] or 'none'}) | {licence} |")
    total = sum(p.stat().st_size for p in OUT.glob("*.jpg"))
    (OUT / "LICENSE.md").write_text(
        "# Calibration crops: sources and licences\n\n"
        f"{len(rows)} files (crops of {SIZE}x{SIZE} px and whole photos), {total / 1024:.0f} KiB in all, made by `benchmarks/make_calibration.py`\n"
        "from photos bundled with scikit-image (`skimage/data`). Every source photo is public domain or CC0, as stated\n"
        "in scikit-image's `skimage.data` docstrings; the crops are therefore free of copyright restrictions too.\n\n"
        "| file | source | licence |\n| --- | --- | --- |\n" + "\n".join(rows) + "\n",
        encoding="utf-8",
    )
    print(f"wrote {len(rows)} files ({total / 1024:.0f} KiB) to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
