"""Decoding turns any real photo file into size×size RGB plus metadata, or a clear refusal."""

from __future__ import annotations

import io
import struct
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from indexer.errors import PhotoseekError, UnreadableImage
from indexer.media.budget import PixelBudget, full_decodes
from indexer.media.decode import (
    MAX_FILE_BYTES,
    Decoded,
    _vips_scaled,
    decode,
    load_rgb,
    model_input,
    read_image,
    to_rgb,
)
from indexer.media.exif import PhotoInfo

SIZE = 32
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def _save(tmp_path: Path, name: str, image: Image.Image, **params: object) -> bytes:
    """Save `image` to a real file with an awkward name and return the file's bytes."""
    path = tmp_path / name
    image.save(path, **params)
    return path.read_bytes()


def _decode(data: bytes, ext: str, size: int = SIZE) -> Decoded:
    decoded = decode(data, ext, size)
    assert decoded.pixels.shape == (size, size, 3)
    assert decoded.pixels.dtype == np.uint8
    return decoded


def _close(pixel: np.ndarray, colour: tuple[int, int, int], tol: int = 12) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(colour)) <= tol))


def _smooth_rgb(width: int, height: int) -> np.ndarray:
    """A photo-like picture: gradients plus a few flat blocks, deterministic."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 255 * x / width
    g = 255 * y / height
    b = 128 + 100 * np.sin(x / width * 6) * np.cos(y / height * 4)
    image = np.stack([r, g, b], axis=-1)
    image[height // 4 : height // 2, width // 5 : width // 3] = (240, 30, 30)
    image[height // 2 : height * 3 // 4, width // 2 : width * 4 // 5] = (20, 20, 200)
    return np.clip(image, 0, 255).astype(np.uint8)


# --- modes ---------------------------------------------------------------------------------


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    data = _save(tmp_path, "cmyk café.jpg", Image.new("CMYK", (40, 40), (0, 255, 255, 0)))
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    decoded = _decode(data, "jpg")
    assert _close(decoded.pixels[SIZE // 2, SIZE // 2], RED)
    assert (decoded.info.width, decoded.info.height) == (40, 40)


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (32768, 128), (65535, 255)])
def test_16_bit_grayscale_png_scaled_to_8_bit(tmp_path: Path, value: int, expected: int) -> None:
    gray16 = Image.fromarray(np.full((20, 30), value, dtype=np.uint16))
    data = _save(tmp_path, f"gray 16 bit {value}.png", gray16)
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    pixels = _decode(data, "png").pixels
    assert np.all(np.abs(pixels.astype(int) - expected) <= 1), pixels[0, 0]


def test_dark_16_bit_image_stays_dark() -> None:
    # a 16-bit picture whose values all happen to be below 256 is nearly black, not 8-bit
    dark = Image.fromarray(np.full((10, 10), 200, dtype=np.uint16))
    assert dark.mode == "I;16"
    rgb = to_rgb(dark)
    assert rgb.mode == "RGB"
    assert np.asarray(rgb).max() <= 1


def test_16_bit_gradient_keeps_its_order() -> None:
    ramp = np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)
    gray = np.asarray(to_rgb(Image.fromarray(ramp)))[..., 0].ravel().astype(int)
    assert gray[0] == 0 and gray[-1] == 255
    assert np.all(np.diff(gray) >= 0)


def test_palette_png_with_transparency_over_white(tmp_path: Path) -> None:
    image = Image.new("P", (40, 40), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    image.paste(1, (0, 20, 40, 40))  # bottom half red, top half transparent black
    data = _save(tmp_path, "palette ✓.png", image, transparency=0)
    reopened = Image.open(io.BytesIO(data))
    assert reopened.mode == "P" and "transparency" in reopened.info
    pixels = _decode(data, "png", 40).pixels
    assert _close(pixels[5, 20], WHITE, 0)  # not the palette's black
    assert _close(pixels[35, 20], RED, 0)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composited_over_white(tmp_path: Path, mode: str) -> None:
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)  # black everywhere
    rgba[:, :, 3] = 255
    rgba[:10, :, 3] = 0  # fully transparent band on top
    rgba[10:20, :, 3] = 128  # half transparent band
    image = Image.fromarray(rgba, "RGBA").convert(mode)
    data = _save(tmp_path, f"alpha {mode} ünï.png", image)
    assert Image.open(io.BytesIO(data)).mode == mode
    pixels = _decode(data, "png", 40).pixels
    assert _close(pixels[2, 20], WHITE, 0)
    assert _close(pixels[15, 20], (127, 127, 127), 2)
    assert _close(pixels[35, 20], (0, 0, 0), 0)


def test_l_and_1_bit(tmp_path: Path) -> None:
    gray = _save(tmp_path, "gray.png", Image.new("L", (20, 20), 77))
    assert _close(_decode(gray, "png").pixels[0, 0], (77, 77, 77), 0)

    bits = Image.new("1", (40, 40), 0)
    bits.paste(1, (20, 0, 40, 40))  # right half white
    data = _save(tmp_path, "one bit.png", bits)
    assert Image.open(io.BytesIO(data)).mode == "1"
    pixels = _decode(data, "png", 40).pixels
    assert _close(pixels[20, 5], (0, 0, 0), 0)
    assert _close(pixels[20, 35], WHITE, 0)


def test_to_rgb_leaves_rgb_alone_and_converts_every_mode() -> None:
    rgb = Image.new("RGB", (4, 4), (1, 2, 3))
    assert to_rgb(rgb) is rgb
    for mode in ["L", "1", "P", "RGBA", "LA", "PA", "CMYK", "YCbCr", "I", "I;16", "F", "HSV"]:
        converted = to_rgb(Image.new(mode, (4, 3)))
        assert converted.mode == "RGB", mode
        assert converted.size == (4, 3), mode


# --- EXIF ----------------------------------------------------------------------------------


def _half_red_half_blue(width: int, height: int) -> Image.Image:
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = RED
    pixels[:, width // 2 :] = BLUE
    return Image.fromarray(pixels)


def test_exif_orientation_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to view
    data = _save(tmp_path, "rotated ✓.jpg", _half_red_half_blue(128, 64), exif=exif, quality=95)

    decoded = _decode(data, "jpg")
    # turned clockwise, the stored left (red) half is on top and the right (blue) at the bottom
    assert _close(decoded.pixels[1, SIZE // 2], RED, 30)
    assert _close(decoded.pixels[-2, SIZE // 2], BLUE, 30)
    assert _close(decoded.pixels[SIZE // 4, 1], RED, 30)  # left and right columns agree
    assert _close(decoded.pixels[SIZE // 4, -2], RED, 30)
    assert (decoded.info.width, decoded.info.height) == (64, 128)

    picture = load_rgb(data, "jpg")
    assert picture.mode == "RGB" and picture.size == (64, 128)
    assert _close(np.asarray(picture)[10, 32], RED, 30)
    assert _close(np.asarray(picture)[118, 32], BLUE, 30)


def test_no_orientation_keeps_layout(tmp_path: Path) -> None:
    data = _save(tmp_path, "upright.jpg", _half_red_half_blue(128, 64), quality=95)
    decoded = _decode(data, "jpg")
    assert _close(decoded.pixels[SIZE // 2, 1], RED, 30)
    assert _close(decoded.pixels[SIZE // 2, -2], BLUE, 30)
    assert decoded.info == PhotoInfo(128, 64, None, None, None)


def test_exif_date_and_camera(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[271] = "Canon"  # Make
    exif[272] = "Canon EOS R5\x00"  # Model, NUL-padded as cameras write it
    exif[306] = "2030:01:01 00:00:00"  # DateTime (file modified): must lose to the original
    exif.get_ifd(0x8769)[36867] = "2021:07:04 15:30:45"  # DateTimeOriginal
    data = _save(tmp_path, "exif 東京.jpg", Image.new("RGB", (48, 32), GREEN), exif=exif)
    info = _decode(data, "jpg").info
    assert info == PhotoInfo(
        width=48,
        height=32,
        taken_at="2021-07-04T15:30:45",
        camera_make="Canon",
        camera_model="Canon EOS R5",
    )


def test_exif_datetime_fallback_and_bad_date(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[306] = "2019:12:31 23:59:58"
    data = _save(tmp_path, "fallback.jpg", Image.new("RGB", (8, 8)), exif=exif)
    assert _decode(data, "jpg").info.taken_at == "2019-12-31T23:59:58"

    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = "0000:00:00 00:00:00"  # what some cameras write when unset
    exif[271] = "   "
    data = _save(tmp_path, "unset.jpg", Image.new("RGB", (8, 8)), exif=exif)
    info = _decode(data, "jpg").info
    assert info.taken_at is None
    assert info.camera_make is None


# --- formats -------------------------------------------------------------------------------


def test_animated_gif_gives_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (30, 20), colour) for colour in (RED, GREEN, BLUE)]
    path = tmp_path / "animated ✓.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    data = path.read_bytes()
    assert Image.open(io.BytesIO(data)).n_frames == 3
    decoded = _decode(data, "gif")
    assert _close(decoded.pixels[SIZE // 2, SIZE // 2], RED, 0)
    assert (decoded.info.width, decoded.info.height) == (30, 20)


def _format_roundtrip(tmp_path: Path, fmt: str, ext: str) -> None:
    image = Image.fromarray(_smooth_rgb(60, 40))
    path = tmp_path / f"photo {fmt} é.{ext}"
    try:
        image.save(path, format=fmt, quality=95)  # ignored by lossless formats
    except (KeyError, OSError, ValueError) as e:  # this Pillow build cannot write it
        pytest.skip(f"cannot encode {fmt} here: {e}")
    decoded = _decode(path.read_bytes(), ext, 40)
    expected = model_input(image, 40)
    assert np.abs(decoded.pixels.astype(int) - expected.astype(int)).mean() < 6
    assert (decoded.info.width, decoded.info.height) == (60, 40)


@pytest.mark.parametrize(
    ("fmt", "ext"),
    [("PNG", "png"), ("WEBP", "webp"), ("TIFF", "tif"), ("BMP", "bmp"), ("JPEG", "jpeg")],
)
def test_common_formats(tmp_path: Path, fmt: str, ext: str) -> None:
    _format_roundtrip(tmp_path, fmt, ext)


def test_gif_format(tmp_path: Path) -> None:
    data = _save(tmp_path, "flat.gif", Image.new("RGB", (40, 30), (200, 30, 40)))
    decoded = _decode(data, "gif")
    assert _close(decoded.pixels[3, 3], (200, 30, 40), 2)


def test_heic(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    if not pillow_heif.libheif_info().get("HEIF"):
        pytest.skip("libheif has no HEIF encoder here")
    _format_roundtrip(tmp_path, "HEIF", "heic")


def test_avif(tmp_path: Path) -> None:
    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF support")
    _format_roundtrip(tmp_path, "AVIF", "avif")


# --- JPEG draft fast path ------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("big") / "big 3000×2000 ✓.jpg"
    Image.fromarray(_smooth_rgb(3000, 2000)).save(path, quality=90)
    return path.read_bytes()


def test_jpeg_draft_close_to_full_decode(big_jpeg: bytes) -> None:
    size = 224
    decoded = _decode(big_jpeg, "jpg", size)
    full = model_input(to_rgb(Image.open(io.BytesIO(big_jpeg))), size)
    diff = np.abs(decoded.pixels.astype(int) - full.astype(int))
    assert diff.mean() < 6, diff.mean()
    # the catalog records the photo's real size, not the reduced decode
    assert (decoded.info.width, decoded.info.height) == (3000, 2000)


def test_jpeg_draft_decodes_at_reduced_size(big_jpeg: bytes) -> None:
    # the fast path is in effect: DCT scaling stops at the smallest size still >= the target
    reduced = load_rgb(big_jpeg, "jpg", draft_to=224)
    assert reduced.size == (375, 250)
    assert load_rgb(big_jpeg, "jpg").size == (3000, 2000)


# --- WebP scaled decode --------------------------------------------------------------------


def _webp(tmp_path: Path, image: Image.Image, **params: object) -> bytes:
    return _save(tmp_path, "big webp ✓.webp", image, quality=90, **params)


def test_large_webp_decodes_scaled_close_to_full_decode(tmp_path: Path) -> None:
    """Big WebPs go through libwebp's scaling decoder: the model input matches Pillow's full
    decode, the catalog keeps the real size, and `load_rgb` sees the reduced picture."""
    data = _webp(tmp_path, Image.fromarray(_smooth_rgb(2400, 1600)))
    decoded = _decode(data, "webp", 224)
    full = model_input(to_rgb(Image.open(io.BytesIO(data))), 224)
    diff = np.abs(decoded.pixels.astype(int) - full.astype(int))
    assert diff.mean() < 3, diff.mean()
    assert (decoded.info.width, decoded.info.height) == (2400, 1600)
    assert load_rgb(data, "webp", draft_to=224).size == (1200, 800)
    assert _vips_scaled(data, "WEBP", 3, {}).size == (800, 533)  # scaled while decoding


def test_large_webp_keeps_orientation_alpha_and_first_frame(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = _half_red_half_blue(1600, 800).convert("RGBA")
    sideways.putalpha(255)
    data = _webp(tmp_path, sideways, exif=exif)
    decoded = _decode(data, "webp")
    assert _close(decoded.pixels[1, SIZE // 2], RED, 30)  # rotated as the EXIF says
    assert _close(decoded.pixels[-2, SIZE // 2], BLUE, 30)
    assert (decoded.info.width, decoded.info.height) == (800, 1600)

    frames = [Image.new("RGB", (1200, 900), colour) for colour in (GREEN, RED)]
    path = tmp_path / "animated.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    assert _close(_decode(path.read_bytes(), "webp").pixels[SIZE // 2, SIZE // 2], GREEN, 30)


def test_large_png_streams_through_a_shrink(tmp_path: Path) -> None:
    """Big 8-bit RGB(A) PNGs are shrunk while streaming: same model input as Pillow's full
    decode, transparency still over white; a 16-bit one takes Pillow's path."""
    rgb = Image.fromarray(_smooth_rgb(2400, 1600))
    data = _save(tmp_path, "big ✓.png", rgb)
    decoded = _decode(data, "png", 224)
    full = model_input(to_rgb(Image.open(io.BytesIO(data))), 224)
    assert np.abs(decoded.pixels.astype(int) - full.astype(int)).mean() < 2
    assert _vips_scaled(data, "PNG", 3, {}).size == (800, 533)

    clear = Image.new("RGBA", (1600, 1200), (255, 0, 0, 0))
    clear.paste((0, 0, 255, 255), (800, 0, 1600, 1200))
    decoded = _decode(_save(tmp_path, "half clear.png", clear), "png")
    assert _close(decoded.pixels[SIZE // 2, 1], WHITE, 12)
    assert _close(decoded.pixels[SIZE // 2, -2], BLUE, 12)

    deep = np.full((1200, 1600, 3), 40000, dtype=np.uint16)
    path = tmp_path / "deep.png"
    path.write_bytes(_png_rgb16(deep))
    assert _vips_scaled(path.read_bytes(), "PNG", 2, {}) is None
    value = _decode(path.read_bytes(), "png").pixels[SIZE // 2, SIZE // 2]
    assert np.all(np.abs(value.astype(int) - 40000 * 255 // 65535) <= 2)


def _png_rgb16(pixels: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (Pillow cannot write one)."""
    height, width, _ = pixels.shape
    raw = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))  # fmt: skip


def test_truncated_large_webp_and_png_are_unreadable(tmp_path: Path) -> None:
    picture = Image.fromarray(_smooth_rgb(2400, 1600))
    for data, ext in (
        (_webp(tmp_path, picture), "webp"),
        (_save(tmp_path, "p.png", picture), "png"),
    ):
        for cut in (len(data) // 2, len(data) - 100):
            with pytest.raises(UnreadableImage, match="truncated|corrupt|decoder"):
                decode(data[:cut], ext, SIZE)


# --- model_input ---------------------------------------------------------------------------


def _bands(width: int, height: int, vertical: bool) -> Image.Image:
    """Three equal bands red | green | blue across the long side."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    length = width if vertical else height
    for i, colour in enumerate((RED, GREEN, BLUE)):
        part = slice(i * length // 3, (i + 1) * length // 3)
        if vertical:
            pixels[:, part] = colour
        else:
            pixels[part, :] = colour
    return Image.fromarray(pixels)


@pytest.mark.parametrize(("width", "height"), [(300, 100), (100, 300), (999, 333), (333, 999)])
def test_model_input_centre_crops_wide_and_tall(width: int, height: int) -> None:
    size = 50
    pixels = model_input(_bands(width, height, vertical=width > height), size)
    assert pixels.shape == (size, size, 3) and pixels.dtype == np.uint8
    # the middle band is exactly the centre square: only green survives the crop
    assert _close(pixels[2:-2, 2:-2].reshape(-1, 3).mean(axis=0), GREEN, 3)
    assert _close(pixels[size // 2, size // 2], GREEN, 0)


@pytest.mark.parametrize(("width", "height"), [(224, 224), (225, 224), (10, 7), (1, 500), (3, 3)])
def test_model_input_exact_shape(width: int, height: int) -> None:
    pixels = model_input(Image.new("RGB", (width, height), (9, 8, 7)), 224)
    assert pixels.shape == (224, 224, 3)
    assert _close(pixels[112, 112], (9, 8, 7), 1)


# --- refusals ------------------------------------------------------------------------------


def _reason(data: bytes, ext: str = "jpg") -> str:
    with pytest.raises(UnreadableImage) as caught:
        decode(data, ext, SIZE)
    with pytest.raises(UnreadableImage):
        load_rgb(data, ext)
    return str(caught.value)


def test_empty_bytes() -> None:
    assert "empty" in _reason(b"")


def test_truncated_jpeg(tmp_path: Path) -> None:
    data = _save(tmp_path, "cut ✂.jpg", Image.fromarray(_smooth_rgb(400, 300)), quality=95)
    assert "truncated" in _reason(data[: len(data) // 2])


def test_random_bytes() -> None:
    data = np.random.default_rng(7).bytes(4096)
    assert "not an image" in _reason(data)


def test_text_file_pretending_to_be_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes – really text.jpg"
    path.write_text("shopping list\n- milk\n- eggs\n" * 20, encoding="utf-8")
    assert "not an image" in _reason(path.read_bytes())


def test_decompression_bomb_refused_without_decoding(tmp_path: Path) -> None:
    data = bytearray(_save(tmp_path, "tiny.png", Image.new("L", (1, 1))))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", 40000, 40000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    (tmp_path / "bomb 💣.png").write_bytes(data)
    start = time.perf_counter()
    reason = _reason(bytes(data), "png")
    assert time.perf_counter() - start < 1.0
    assert "bomb" in reason
    # refusing the file must not change Pillow's limit for the whole process
    assert Image.MAX_IMAGE_PIXELS == 89_478_485


def test_raw_extension_with_garbage(tmp_path: Path) -> None:
    path = tmp_path / "DSC_0001 ✓.nef"
    path.write_bytes(b"II*\x00" + np.random.default_rng(3).bytes(2000))
    assert "RAW" in _reason(path.read_bytes(), "nef")


def test_unreadable_is_a_photoseek_error() -> None:
    with pytest.raises(PhotoseekError):
        decode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "png", SIZE)


# --- every mode at sizes that reduce before the resize -------------------------------------


def _two_tone(mode: str, width: int, height: int) -> Image.Image:
    """Left half dark, right half bright, in `mode` (16-bit modes with 16-bit values)."""
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.full((height, width), 5000, dtype=np.uint16)
        values[:, width // 2 :] = 60000
        if mode == "I;16B":  # Pillow's convert() to I;16B clips at 255
            return Image.frombytes(mode, (width, height), values.astype(">u2").tobytes())
        image = Image.fromarray(values)  # I;16
        return image if mode == "I;16" else image.convert(mode)
    gray = np.full((height, width), 40, dtype=np.uint8)
    gray[:, width // 2 :] = 220
    return Image.fromarray(gray, "L").convert("RGB").convert(mode)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I", "F", "LA", "P", "1", "CMYK", "L"])
@pytest.mark.parametrize(
    ("width", "height"), [(6 * SIZE, 6 * SIZE), (1000, 6 * SIZE + 5), (7 * SIZE, 2000)]
)
def test_every_mode_decodes_at_sizes_that_reduce(
    tmp_path: Path, mode: str, width: int, height: int
) -> None:
    """Short sides from 6x the model input up: the box reduction runs (Pillow's `reduce()`
    refuses I;16), and the result matches a full decode of the same file."""
    fmt, ext = ("PNG", "png") if mode in ("I;16", "LA", "P", "1", "L") else ("TIFF", "tif")
    data = _save(
        tmp_path, f"{mode} {width}x{height} ✓.{ext}", _two_tone(mode, width, height), format=fmt
    )
    opened = Image.open(io.BytesIO(data))
    assert opened.mode == mode and min(opened.size) >= 6 * SIZE
    decoded = _decode(data, ext)
    full = model_input(to_rgb(Image.open(io.BytesIO(data))), SIZE)
    differ = np.abs(decoded.pixels.astype(int) - full.astype(int)) > 8
    assert differ.mean() < 0.1  # at most the column where dark meets bright
    assert (decoded.info.width, decoded.info.height) == (width, height)
    assert decoded.pixels[:, 1].mean() < decoded.pixels[:, -2].mean() - 50  # dark | bright


# --- RAW: the embedded preview, the RAW's own turn and sensor size -------------------------


def _tiff_ifd(entries: list[tuple[int, int, int, bytes]], data_at: int) -> bytes:
    """One little-endian TIFF IFD; values over 4 bytes follow it, from offset `data_at`."""
    table, extra = struct.pack("<H", len(entries)), b""
    for tag, kind, count, value in sorted(entries):
        if len(value) <= 4:
            table += struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\0")
        else:
            table += struct.pack("<HHII", tag, kind, count, data_at + len(extra))
            extra += value + b"\0" * (len(value) % 2)
    return table + struct.pack("<I", 0) + extra


def _dng(
    preview: bytes, preview_size: tuple[int, int], sensor: tuple[int, int], flip: int
) -> bytes:
    """A minimal real DNG that LibRaw reads: IFD0 is the JPEG preview and carries the camera's
    Orientation `flip`; its SubIFD holds a 16-bit Bayer mosaic of `sensor` size."""
    short = lambda *v: struct.pack(f"<{len(v)}H", *v)  # noqa: E731
    long_ = lambda *v: struct.pack(f"<{len(v)}I", *v)  # noqa: E731
    width, height = sensor
    mosaic = np.random.default_rng(0).integers(0, 4000, (height, width)).astype("<u2").tobytes()

    def layout(sub_at: int, preview_at: int, mosaic_at: int) -> tuple[bytes, bytes]:
        first = [(254, 4, 1, long_(1)), (256, 4, 1, long_(preview_size[0])),
                 (257, 4, 1, long_(preview_size[1])), (258, 3, 3, short(8, 8, 8)),
                 (259, 3, 1, short(7)), (262, 3, 1, short(6)), (271, 2, 6, b"Canon\0"),
                 (273, 4, 1, long_(preview_at)), (274, 3, 1, short(flip)), (277, 3, 1, short(3)),
                 (278, 4, 1, long_(preview_size[1])), (279, 4, 1, long_(len(preview))),
                 (330, 4, 1, long_(sub_at)), (50706, 1, 4, bytes([1, 4, 0, 0]))]  # fmt: skip
        sub = [(254, 4, 1, long_(0)), (256, 4, 1, long_(width)), (257, 4, 1, long_(height)),
               (258, 3, 1, short(16)), (259, 3, 1, short(1)), (262, 3, 1, short(32803)),
               (273, 4, 1, long_(mosaic_at)), (277, 3, 1, short(1)), (278, 4, 1, long_(height)),
               (279, 4, 1, long_(len(mosaic))), (33421, 3, 2, short(2, 2)),
               (33422, 1, 4, bytes([0, 1, 1, 2])), (50717, 4, 1, long_(4095))]  # fmt: skip
        head = b"II*\0" + long_(8) + _tiff_ifd(first, 8 + 6 + 12 * len(first))
        return head, _tiff_ifd(sub, len(head) + 6 + 12 * len(sub))

    head, sub = layout(0, 0, 0)
    head, sub = layout(len(head), len(head) + len(sub), len(head) + len(sub) + len(preview))
    return head + sub + preview + mosaic


@pytest.mark.parametrize(
    ("flip", "red_at"), [(1, (16, 1)), (3, (16, -2)), (6, (1, 16)), (8, (-2, 16))]
)
def test_raw_preview_turned_by_the_raw_and_decoded_small(
    tmp_path: Path, flip: int, red_at: tuple[int, int]
) -> None:
    """The preview (900x600, red left half) carries a stale EXIF turn of 180°; the RAW's own
    Orientation (LibRaw's `sizes.flip`) is the one applied, and the catalog gets the upright
    sensor size. The preview decodes at reduced size."""
    rawpy = pytest.importorskip("rawpy")
    stale = Image.Exif()
    stale[0x0112] = 3
    preview = _save(tmp_path, "preview.jpg", _half_red_half_blue(900, 600), exif=stale, quality=95)
    data = _dng(preview, (900, 600), (1200, 800), flip)
    (tmp_path / "IMG_0001 ✓.dng").write_bytes(data)
    with rawpy.imread(io.BytesIO(data)) as raw:  # the file is what LibRaw reads it as
        assert (raw.sizes.width, raw.sizes.height) == (1200, 800)
        assert raw.sizes.flip == {1: 0, 3: 3, 6: 6, 8: 5}[flip]

    decoded = _decode(data, "dng")
    turned = flip in (6, 8)
    assert (decoded.info.width, decoded.info.height) == ((800, 1200) if turned else (1200, 800))
    assert _close(decoded.pixels[red_at], RED, 40)
    assert load_rgb(data, "dng", draft_to=224).size == ((300, 450) if turned else (450, 300))


# --- bounded reading and bounded pixels in flight ------------------------------------------


def _bomb_png(tmp_path: Path, name: str, file_size: int) -> Path:
    """A PNG whose header claims 40000x40000 pixels, in a (sparse) file of `file_size` bytes."""
    data = bytearray(_save(tmp_path, "one pixel.png", Image.new("L", (1, 1))))
    data[16:24] = struct.pack(">II", 40000, 40000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path = tmp_path / name
    with open(path, "wb") as f:
        f.write(data)
        f.truncate(file_size)
    return path


def test_bomb_refused_from_its_header_without_reading_the_file(tmp_path: Path) -> None:
    path = _bomb_png(tmp_path, "bomb 💣 1 GiB.png", 1 << 30)
    tracemalloc.start()
    try:
        with pytest.raises(UnreadableImage, match="decompression bomb"):
            read_image(path, "png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak  # the header, not the gigabyte


def test_file_larger_than_any_picture_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.tif"
    with open(path, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(UnreadableImage, match="file too large"):
        read_image(path, "tif")


def test_read_image_returns_the_whole_file(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (1000, 1500, 3), dtype=np.uint8)
    data = _save(tmp_path, "noisy ✓.jpg", Image.fromarray(noise), quality=95)
    assert len(data) > 1 << 20  # large enough to have its header probed first
    assert read_image(tmp_path / "noisy ✓.jpg", "jpg") == data
    text = tmp_path / "big notes.jpg"  # no header Pillow knows: read whole, judged by decode
    text.write_bytes(b"not a picture\n" * 100_000)
    assert "not an image" in _reason(read_image(text, "jpg"))


def test_pixel_budget_bounds_what_is_held_at_once() -> None:
    budget = PixelBudget(100 << 20)
    held, most, guard = [0], [0], threading.Lock()

    def work(amount: int) -> None:
        with budget.hold(amount):
            with guard:
                held[0] += amount
                most[0] = max(most[0], held[0])
            time.sleep(0.02)
            with guard:
                held[0] -= amount

    threads = [threading.Thread(target=work, args=(60 << 20,)) for _ in range(4)]
    threads += [threading.Thread(target=work, args=(500 << 20,))]  # over the budget: alone
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert most[0] in (60 << 20, 500 << 20)  # one at a time: two 60s exceed 100, as does 500
    with budget.hold(budget.capacity), budget.hold(1 << 20):  # small decodes never wait
        pass


def test_full_size_decodes_wait_for_the_budget(tmp_path: Path) -> None:
    """A TIFF is decoded whole, so it waits while the budget is taken; a JPEG of the same size
    decodes at reduced size and does not."""
    picture = Image.fromarray(_smooth_rgb(2400, 1600))
    tiff = _save(tmp_path, "big.tif", picture, compression="tiff_deflate")
    jpeg = _save(tmp_path, "big.jpg", picture)
    results: list[Decoded] = []
    budget = full_decodes()
    with budget.hold(budget.capacity):
        jpeg_thread = threading.Thread(target=lambda: results.append(decode(jpeg, "jpg", SIZE)))
        tiff_thread = threading.Thread(target=lambda: results.append(decode(tiff, "tif", SIZE)))
        jpeg_thread.start()
        tiff_thread.start()
        jpeg_thread.join(10)
        assert not jpeg_thread.is_alive() and len(results) == 1
        tiff_thread.join(0.5)
        assert tiff_thread.is_alive()  # waiting for room
    tiff_thread.join(10)
    assert len(results) == 2 and results[1].info.width == 2400
