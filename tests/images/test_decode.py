"""open_image: every PIL mode becomes the right RGB pixels, EXIF applied, first frame, reduced-size JPEG decoding,
and every failure is one ImageError line."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pthkit.errors import ImageError, InputNotFoundError
from pthkit.images import open_image
from pthkit.samples import skimage_photo


def _rgb(img: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    assert img.mode == "RGB"
    return tuple(int(v) for v in img.getpixel(xy))  # type: ignore[return-value]


# --- modes -----------------------------------------------------------------------------------------------------------


def test_rgb_stays_exact(tmp_path: Path):
    p = tmp_path / "a.png"
    Image.new("RGB", (5, 3), (10, 200, 30)).save(p)
    img = open_image(p)
    assert img.size == (5, 3) and _rgb(img, (4, 2)) == (10, 200, 30)


def test_cmyk_becomes_rgb(tmp_path: Path):
    p = tmp_path / "cmyk.tif"
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(p)  # no cyan, full magenta + yellow = red
    assert _rgb(open_image(p), (1, 1)) == (255, 0, 0)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p, quality=95)
    r, g, b = _rgb(open_image(p), (8, 8))
    assert r > 230 and g < 25 and b < 25


def test_palette_with_transparency_composited_on_white(tmp_path: Path):
    p = tmp_path / "p.png"
    img = Image.new("P", (4, 2), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 0 black (transparent), index 1 red
    img.putpixel((3, 1), 1)
    img.save(p, transparency=0)
    out = open_image(p)
    assert _rgb(out, (0, 0)) == (255, 255, 255)  # transparent -> white, not the black it stores
    assert _rgb(out, (3, 1)) == (255, 0, 0)


def test_palette_without_transparency(tmp_path: Path):
    p = tmp_path / "p.gif"
    img = Image.new("P", (2, 2), 1)
    img.putpalette([0, 0, 0, 0, 128, 255] + [0] * 762)
    img.save(p)
    assert _rgb(open_image(p), (1, 1)) == (0, 128, 255)


def test_greyscale_l(tmp_path: Path):
    p = tmp_path / "l.png"
    Image.new("L", (3, 3), 100).save(p)
    assert _rgb(open_image(p), (0, 0)) == (100, 100, 100)


def test_la_composited_on_white(tmp_path: Path):
    p = tmp_path / "la.png"
    arr = np.zeros((1, 3, 2), dtype=np.uint8)
    arr[0, 0] = (0, 0)  # transparent black
    arr[0, 1] = (0, 255)  # opaque black
    arr[0, 2] = (0, 128)  # half
    Image.fromarray(arr, "LA").save(p)
    out = open_image(p)
    assert _rgb(out, (0, 0)) == (255, 255, 255)
    assert _rgb(out, (1, 0)) == (0, 0, 0)
    assert abs(_rgb(out, (2, 0))[0] - 127) <= 1


def test_rgba_composited_on_white(tmp_path: Path):
    p = tmp_path / "rgba.png"
    Image.new("RGBA", (2, 2), (255, 0, 0, 128)).save(p)
    r, g, b = _rgb(open_image(p), (0, 0))
    assert r == 255 and abs(g - 127) <= 1 and abs(b - 127) <= 1


def test_16bit_grey_png_scaled_not_clipped(tmp_path: Path):
    p = tmp_path / "g16.png"
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)  # 32896 = 128 * 257
    Image.fromarray(arr).save(p)
    assert Image.open(p).mode in ("I;16", "I")
    out = open_image(p)
    assert [_rgb(out, (x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_32bit_int_in_16bit_range(tmp_path: Path):
    img = Image.fromarray(np.array([[0, 65535]], dtype=np.int32), "I")
    out = open_image(img)
    assert [_rgb(out, (x, 0))[0] for x in range(2)] == [0, 255]


def test_float_image_in_unit_range(tmp_path: Path):
    p = tmp_path / "f.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F").save(p)
    out = open_image(p)
    assert [_rgb(out, (x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_one_bit(tmp_path: Path):
    p = tmp_path / "b.png"
    img = Image.new("1", (2, 1), 0)
    img.putpixel((1, 0), 1)
    img.save(p)
    out = open_image(p)
    assert _rgb(out, (0, 0)) == (0, 0, 0) and _rgb(out, (1, 0)) == (255, 255, 255)


def _left_red_right_blue() -> Image.Image:
    img = Image.new("RGB", (4, 2), (255, 0, 0))
    img.paste((0, 0, 255), (2, 0, 4, 2))
    return img


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_applied(tmp_path: Path, suffix: str):
    img = _left_red_right_blue().resize((64, 32), Image.NEAREST)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: display rotated 90° clockwise
    p = tmp_path / f"rot{suffix}"
    img.save(p, exif=exif, **({"quality": 95} if suffix == ".jpg" else {}))
    out = open_image(p)
    assert out.size == (32, 64)
    top, bottom = _rgb(out, (16, 8)), _rgb(out, (16, 56))
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_animated_gif_first_frame(tmp_path: Path):
    p = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(p).n_frames == 3
    assert _rgb(open_image(p), (2, 2)) == (255, 0, 0)


def test_animated_png_and_webp_first_frame(tmp_path: Path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((0, 255, 0), (255, 0, 0))]
    apng = tmp_path / "anim.png"
    frames[0].save(apng, save_all=True, append_images=frames[1:], duration=50)
    assert _rgb(open_image(apng), (4, 4)) == (0, 255, 0)
    webp = tmp_path / "anim.webp"
    frames[0].save(webp, save_all=True, append_images=frames[1:], duration=50, lossless=True)
    assert _rgb(open_image(webp), (4, 4)) == (0, 255, 0)


# --- failures --------------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path):
    with pytest.raises(InputNotFoundError, match="no such file"):
        open_image(tmp_path / "nope.jpg")


def test_empty_file(tmp_path: Path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        open_image(p)


def test_text_file_is_not_an_image(tmp_path: Path):
    p = tmp_path / "notes.jpg"
    p.write_text("hello, I am not a picture\n" * 20)
    with pytest.raises(ImageError, match="not an image") as info:
        open_image(p)
    assert "\n" not in str(info.value)


def test_corrupt_jpeg(tmp_path: Path):
    good = tmp_path / "good.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good)
    data = bytearray(good.read_bytes())
    data[200:] = b"\x00\xff" * ((len(data) - 200) // 2) + b"\x00" * ((len(data) - 200) % 2)
    p = tmp_path / "corrupt.jpg"
    p.write_bytes(bytes(data[:4]) + b"garbage" * 40)
    with pytest.raises(ImageError, match="image: received .*corrupt.jpg"):
        open_image(p)


def test_truncated_jpeg(tmp_path: Path):
    src = skimage_photo("rocket.jpg").read_bytes()
    p = tmp_path / "truncated.jpg"
    p.write_bytes(src[: len(src) // 2])
    with pytest.raises(ImageError, match="truncated"):
        open_image(p)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height (a decompression bomb's header) with one tiny IDAT."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


def test_decompression_bomb_error(tmp_path: Path):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_header_only(100_000, 100_000))  # 10 gigapixels declared, 60 bytes on disk
    with pytest.raises(ImageError, match="decompression bomb"):
        open_image(p)


def test_decompression_bomb_warning_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    p = tmp_path / "big.png"
    Image.new("L", (100, 100)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # 10,000 px: between the limit and twice it -> PIL warns
    with pytest.raises(ImageError, match="decompression bomb"):
        open_image(p)


def test_bombs_are_refused_in_decoding_threads_without_catch_warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """catch_warnings swaps the process-wide filter list (not thread safe): open_image must not use it. A bomb is
    still refused from a thread pool, even when another filter ignores PIL's warning."""
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    def forbidden(*_a: object, **_k: object) -> None:
        raise AssertionError("warnings.catch_warnings used while decoding")

    p = tmp_path / "big.png"
    Image.new("L", (100, 100)).save(p)
    ok = tmp_path / "ok.png"
    Image.new("RGB", (50, 50), (10, 20, 30)).save(ok)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)
    monkeypatch.setattr(warnings, "catch_warnings", forbidden)
    monkeypatch.setattr(warnings, "filters", list(warnings.filters))  # restored after the test
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # someone else's filter: the size check holds

    def one(path: Path) -> str:
        try:
            return f"{open_image(path).size}"
        except ImageError as err:
            return "bomb" if "decompression bomb" in str(err) else str(err)

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(one, [p, ok] * 8))
    assert got == ["bomb", "(50, 50)"] * 8


# --- reduced-size JPEG decoding --------------------------------------------------------------------------------------


def test_draft_decodes_large_jpeg_smaller_but_not_below_target(tmp_path: Path):
    p = tmp_path / "big.jpg"
    Image.new("RGB", (2048, 1536), (90, 120, 150)).save(p)
    full = open_image(p)
    small = open_image(p, draft_size=(256, 256))
    assert full.size == (2048, 1536)
    assert small.size == (512, 384)  # 1/4 scale: 1/8 would give 192 rows < 256
    assert min(small.size) >= 256
    assert all(abs(a - b) <= 2 for a, b in zip(_rgb(small, (100, 100)), (90, 120, 150)))


def test_draft_skipped_when_image_is_not_twice_the_target(tmp_path: Path):
    p = tmp_path / "mid.jpg"
    Image.new("RGB", (500, 400)).save(p)
    assert open_image(p, draft_size=(256, 256)).size == (500, 400)


def test_draft_respects_exif_rotation(tmp_path: Path):
    p = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (2400, 600)).save(p, exif=exif)  # displayed 600 wide x 2400 high
    out = open_image(p, draft_size=(300, 1200))  # needs >= 300 wide and >= 1200 high as displayed
    assert out.size == (300, 1200)


def test_draft_ignored_for_png(tmp_path: Path):
    p = tmp_path / "big.png"
    Image.new("RGB", (1200, 1200)).save(p)
    assert open_image(p, draft_size=(256, 256)).size == (1200, 1200)
