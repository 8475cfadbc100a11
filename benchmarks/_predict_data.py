"""The benchmark's image folder: JPEGs of mixed sizes made from the installed packages' sample photos (deterministic)."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image

from pthkit.samples import demo_photos, skimage_photo, sklearn_photo

# (count, (width, height)) : ~60% under 0.5 MP, ~30% near 2 MP, ~10% near 12 MP
MIX: list[tuple[int, list[tuple[int, int]]]] = [
    (48, [(640, 480), (600, 400), (512, 512), (480, 640), (700, 500), (451, 300)]),
    (24, [(1600, 1200), (1732, 1155), (1200, 1600), (1680, 1260)]),
    (8, [(4000, 3000), (4032, 3024), (3000, 4000)]),
]


def _sources() -> list[Image.Image]:
    paths = list(demo_photos()) + [sklearn_photo("flower.jpg")]
    for extra in ("motorcycle_left.png", "hubble_deep_field.jpg", "coins.png"):
        try:
            paths.append(skimage_photo(extra))
        except Exception:  # noqa: BLE001 - optional extras
            pass
    return [Image.open(p).convert("RGB") for p in paths]


def _make(src: list[Image.Image], size: tuple[int, int], rng: random.Random) -> Image.Image:
    w, h = size
    base = src[rng.randrange(len(src))]
    # scale the photo to cover the target, then crop a random window: natural content at every size
    scale = max(w / base.width, h / base.height) * rng.uniform(1.0, 1.3)
    big = base.resize((max(w, round(base.width * scale)), max(h, round(base.height * scale))), Image.BICUBIC)
    x, y = rng.randrange(big.width - w + 1), rng.randrange(big.height - h + 1)
    return big.crop((x, y, x + w, y + h))


def build(folder: Path, copies: int = 1) -> list[Path]:
    """Write (once) and list the benchmark JPEGs: ``80 * copies`` of them, in the same size mix."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / ".complete"
    rng = random.Random(0)
    names: list[Path] = []
    plan = []
    for count, sizes in MIX:
        for i in range(count * copies):
            plan.append(sizes[i % len(sizes)])
    rng.shuffle(plan)
    for i, size in enumerate(plan):
        names.append(folder / f"img{i:03d}_{size[0]}x{size[1]}.jpg")
    if not (marker.exists() and all(p.exists() for p in names)):  # another --copies wrote fewer
        src = _sources()
        for path, size in zip(names, plan):
            _make(src, size, rng).save(path, quality=90)
        marker.write_text("ok")
    return names
