"""Decode one image file into the RGB picture a model expects, or fail with a one-line :class:`ImageError`.

PIL decodes; this module adds what a plain ``Image.open(p).convert("RGB")`` gets wrong:

- EXIF orientation is applied (phone photos are stored sideways);
- transparency (RGBA, LA, palette with a transparent colour) is composited on **white**, not dropped: dropping alpha
  shows whatever colour the transparent pixels happen to hold (often black), which no viewer shows;
- 16-bit and 32-bit greyscale (``I;16``, ``I``) and float (``F``) images are scaled to 8 bits; ``convert("RGB")``
  clips them instead, turning most 16-bit photos white;
- animated GIF / WebP / APNG give their first frame;
- a decompression bomb (``Image.MAX_IMAGE_PIXELS``; PIL's warning is treated as an error), a truncated, corrupt or
  empty file, or a file that is not an image raise :class:`ImageError`.

Large JPEGs can be decoded at a reduced size (``draft_size``): libjpeg scales the DCT by 1/2, 1/4 or 1/8 while
decoding, which is several times faster than decoding in full and resizing, and is a good low-pass filter.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from pthkit.errors import ImageError, InputNotFoundError, PthkitError

__all__ = ["BACKGROUND", "open_image", "to_rgb"]

BACKGROUND: tuple[int, int, int] = (255, 255, 255)
"""Colour transparent pixels are composited on."""

# EXIF orientations that swap width and height.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})


def _fail(path: Any, reason: str, hint: str | None = None) -> PthkitError:
    return ImageError.build(
        "image", received=f"{os.fspath(path) if isinstance(path, (str, os.PathLike)) else path!s} ({reason})",
        expected="a readable image file (JPEG, PNG, GIF, WebP, BMP, TIFF …)",
        hint=hint or "The file is skipped; re-export or remove it.",
    )


def _scale_to_uint8(arr: np.ndarray, mode: str) -> Any:
    """Map a high-bit-depth greyscale array to 0..255 (why: PIL's convert clips at 255 instead of scaling)."""
    if mode.startswith("I;16") or mode == "I;16":
        return (arr.astype(np.float32) / 257.0).round().clip(0, 255).astype(np.uint8)
    if mode == "F":
        finite = arr[np.isfinite(arr)]
        hi = float(finite.max()) if finite.size else 0.0
        lo = float(finite.min()) if finite.size else 0.0
        if lo >= 0.0 and hi <= 1.0:  # float images in [0, 1]
            scaled = arr * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            scaled = arr
        else:  # any other range: stretch to 0..255 (documented; no convention exists)
            scaled = (arr - lo) / (hi - lo or 1.0) * 255.0
        return np.nan_to_num(scaled).round().clip(0, 255).astype(np.uint8)
    # "I" (32-bit int): PNG 16-bit greyscale used to open as "I"; treat values above 255 as 16-bit.
    hi = int(arr.max()) if arr.size else 0
    if hi <= 255:
        return arr.clip(0, 255).astype(np.uint8)
    if hi <= 65535:
        return (arr.astype(np.float64) / 257.0).round().clip(0, 255).astype(np.uint8)
    return (arr.astype(np.float64) / hi * 255.0).round().clip(0, 255).astype(np.uint8)


def _composite(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded image of any PIL mode to 8-bit RGB (see the module docstring for the rules)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _composite(img)
    if mode == "P":
        if "transparency" in img.info or img.palette is not None and img.palette.mode == "RGBA":
            return _composite(img)
        return img.convert("RGB")
    if mode in ("I", "F") or mode.startswith("I;16"):
        grey = _scale_to_uint8(np.asarray(img), mode)
        return Image.fromarray(grey, "L").convert("RGB")
    try:  # L, 1, CMYK, YCbCr, RGBX, HSV …: PIL's own conversion is right for these
        return img.convert("RGB")
    except (ValueError, OSError) as err:
        raise _fail(getattr(img, "filename", "<image>"), f"mode {mode} cannot be converted to RGB: {err}") from err


def _draft(img: Image.Image, draft_size: tuple[int, int]) -> None:
    """Ask the JPEG decoder for a reduced size that is still at least ``draft_size`` (w, h) in both directions."""
    if img.format != "JPEG":
        return
    width, height = draft_size
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block only means we do not know the orientation
        orientation = 1
    if orientation in _TRANSPOSING_ORIENTATIONS:  # the target is in displayed orientation; the file is stored turned
        width, height = height, width
    if img.size[0] >= 2 * width and img.size[1] >= 2 * height:
        img.draft("RGB", (width, height))


_configured = False
_configure_lock = threading.Lock()


def _configure_pil() -> None:
    """Once per process: PIL's ``DecompressionBombWarning`` (raised from ``PIL.Image`` between ``MAX_IMAGE_PIXELS``
    and twice that) becomes an exception instead of a printed warning, so ``Image.open`` stops there.

    Why not ``warnings.catch_warnings()`` around each open: it swaps the process-wide filter list and is not thread
    safe (decoding runs in a thread pool). The filter only concerns that warning from ``PIL.Image``; whatever another
    filter does with it, :func:`_check_pixels` refuses the image too.
    """
    global _configured
    if _configured:
        return
    with _configure_lock:
        if not _configured:
            warnings.filterwarnings("error", category=Image.DecompressionBombWarning, module="PIL.Image")
            _configured = True


def _check_pixels(img: Image.Image) -> None:
    """Refuse an image over ``PIL.Image.MAX_IMAGE_PIXELS`` (read at call time; ``None`` disables the check)."""
    limit = Image.MAX_IMAGE_PIXELS
    pixels = img.size[0] * img.size[1]
    if limit is not None and pixels > limit:
        raise Image.DecompressionBombError(
            f"Image size ({pixels} pixels) exceeds limit of {limit} pixels, could be decompression bomb DOS attack."
        )


def open_image(
    path: str | os.PathLike[str] | Image.Image,
    *,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Open ``path`` as an 8-bit RGB PIL image with EXIF orientation applied.

    Args:
        path: an image file, or an already opened PIL image (converted the same way).
        draft_size: ``(width, height)`` the caller needs at least (e.g. ``(256, 256)`` before "resize shorter side to
            256"). A JPEG at least twice as large in both directions is decoded at 1/2, 1/4 or 1/8 scale, never below
            this size. ``None`` decodes at full size.

    Raises:
        InputNotFoundError: the path does not exist or is not a file.
        ImageError: the file is not a decodable image, is truncated or corrupt, or is a decompression bomb.
    """
    if isinstance(path, Image.Image):
        img = path
        try:
            img.load()
            return to_rgb(ImageOps.exif_transpose(img))
        except (OSError, ValueError) as err:
            raise _fail("<in-memory image>", str(err)) from err
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError.build(
            "image", received=f"{str(path)!r} ({'a folder' if path.is_dir() else 'no such file'})",
            expected="an existing image file", hint="Check the path.",
        )
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone else's global setting would hide truncated files as grey areas
        warnings.warn("PIL ImageFile.LOAD_TRUNCATED_IMAGES is set: truncated images are not detected", stacklevel=2)
    _configure_pil()
    try:
        img = Image.open(path)
        try:
            _check_pixels(img)
            if draft_size is not None:
                _draft(img, draft_size)
            if getattr(img, "is_animated", False):
                img.seek(0)
            img.load()
            ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of a 12 MP photo
            rgb = to_rgb(img)
            if rgb is img and getattr(img, "fp", None) is not None:
                # Multi-frame files keep their file open after load(); detach before closing it.
                rgb = img.copy()
                img.close()
            elif rgb is not img:
                img.close()
            return rgb
        except BaseException:
            img.close()
            raise
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise _fail(
            path, f"decompression bomb: {' '.join(str(err).split())}",
            hint="Skipped; raise PIL.Image.MAX_IMAGE_PIXELS if you trust this file.",
        ) from err
    except UnidentifiedImageError as err:
        reason = "empty file" if path.stat().st_size == 0 else "not an image PIL can identify"
        raise _fail(path, reason) from err
    except MemoryError as err:
        raise _fail(path, "too large to decode in memory") from err
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, EOFError, RuntimeError) as err:
        # PIL's decoders raise all of these on malformed data; "image file is truncated" is an OSError.
        text = " ".join(str(err).split()) or type(err).__name__
        reason = "truncated file" if "truncated" in text.lower() else f"corrupt: {text}"
        raise _fail(path, reason) from err
