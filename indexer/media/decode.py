"""Decode image bytes into model-ready RGB pixels, with the metadata `exif` reads from them.

Fast path: JPEGs are decoded at reduced size (DCT scaling via Pillow's draft mode) close to the
model's input, since full decoding of a 4-15 MP photo dominates indexing on a small CPU; at 1/8
scale a progressive JPEG skips the scans that scale does not read. Large WebPs and 8-bit RGB(A)
PNGs go through libvips: WebP scaled by libwebp while decoding, PNG streamed and box-shrunk a
strip at a time; Pillow can only decode them whole. Whatever is decoded whole waits for room in
the process's pixel budget (`budget`), so memory does not grow with the worker count.
Every failure becomes `UnreadableImage` with a short reason; nothing else escapes. Damaged
metadata never costs the picture: it reads as missing (`exif`), and a JPEG whose metadata
segments derail the parser is decoded without them (`jpeg_repair`).
"""

from __future__ import annotations

import functools
import io
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image

from indexer.errors import BadModelSpec, UnreadableImage
from indexer.media.budget import full_decodes
from indexer.media.discovery import RAW_EXTENSIONS
from indexer.media.exif import PhotoInfo, orientation, photo_info, upright
from indexer.media.jpeg_repair import without_metadata
from indexer.media.jpeg_scans import eighth_scale_scans
from indexer.media.raw import raw_preview

log = logging.getLogger(__name__)

# Refuse larger images before decoding: Pillow's own hard limit, read here, never changed.
MAX_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)
# No picture under MAX_PIXELS takes more than 8 bytes a pixel (16-bit RGBA) uncompressed.
MAX_FILE_BYTES = 8 * MAX_PIXELS + (64 << 20)
# Smaller files are read whole at once: probing their header first would cost more than it saves.
_PROBED_FROM = 1 << 20
# A whole decode holds about this much per pixel at its peak: the decoded image (1-4 bytes a
# pixel in Pillow) and one converted copy of it.
_BYTES_PER_PIXEL = 8

# (format, mode) pairs that libvips decodes at reduced size (see `_vips_scaled`).
_VIPS_SCALED = frozenset({("WEBP", "RGB"), ("WEBP", "RGBA"), ("PNG", "RGB"), ("PNG", "RGBA")})
# Modes Pillow's `reduce()` averages correctly (not palette indices, not 1-bit, not I;16).
_REDUCIBLE_MODES = frozenset({"RGB", "RGBA", "RGBX", "L", "LA", "CMYK", "I", "F"})
# What Pillow and its plugins raise on damaged files; damaged headers reach into parsing code
# that fails with Type-, Key-, Overflow- and ZeroDivisionErrors as well.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    TypeError,
    KeyError,
    OverflowError,
    ZeroDivisionError,
    Image.DecompressionBombError,
)
# 16-bit values to 8-bit, by the formula `to_rgb` always used: v * 255 / 65535, rounded down.
_SIXTEEN_TO_EIGHT = (np.arange(65536, dtype=np.float64) * (255.0 / 65535.0)).astype(np.uint8)
_T = TypeVar("_T")


# open_clip's eval resize modes and interpolations that `model_input` implements.
RESIZE_MODES = ("shortest", "squash")
# How a centre crop's offset rounds: torchvision's (open_clip) or transformers' processors'.
CROP_OFFSETS = ("round", "floor")
_RESAMPLING = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class ImageInput:
    """How a model's image tower wants a photo made square: open_clip's eval resize, as data."""

    size: int  # the square side S
    # "shortest": the short side resized to S, then centre-cropped; "squash": both sides to S,
    # the aspect ratio given up (SigLIP, CLIPA, PE, DFN tags)
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"  # or "bilinear"
    crop_offset: str = "round"  # or "floor": transformers' processors crop a pixel earlier

    def __post_init__(self) -> None:
        if (
            self.resize_mode not in RESIZE_MODES
            or self.interpolation not in _RESAMPLING
            or self.crop_offset not in CROP_OFFSETS
        ):
            raise BadModelSpec(
                f"image resize {self.resize_mode!r} ({self.interpolation}, crop offset "
                f"{self.crop_offset!r}) is not supported: photoseek only implements "
                f"{' and '.join(RESIZE_MODES)}, {' or '.join(_RESAMPLING)}, with the crop "
                f"offset {' or '.join(CROP_OFFSETS)}ed"
            )


@dataclass(frozen=True)
class Decoded:
    """A decoded photo: model input pixels [size, size, 3] uint8 and its metadata."""

    pixels: np.ndarray
    info: PhotoInfo


@dataclass(frozen=True)
class _Opened:
    """An image opened from its header; decoded already only when libvips decoded it small."""

    image: Image.Image
    full_size: tuple[int, int]  # as stored, before any turn
    turn: int | None  # a RAW's own orientation; None: the image's EXIF says


@functools.cache
def _register_plugins() -> None:
    """Teach Pillow HEIF/HEIC (AVIF is native in current Pillow)."""
    from pillow_heif import register_heif_opener

    register_heif_opener()


def read_image(path: str | bytes | os.PathLike[str], ext: str) -> bytes:
    """A photo file's bytes for `decode`; refused from its header, before the rest is read, when
    the picture is over the pixel limit or the file is larger than any picture under it."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_FILE_BYTES:
            raise UnreadableImage(f"file too large: {size} bytes (limit {MAX_FILE_BYTES})")
        if size >= _PROBED_FROM and ext not in RAW_EXTENSIONS:
            _refuse_bombs_from_header(f)
            f.seek(0)
        return f.read()


def _refuse_bombs_from_header(f: io.BufferedReader) -> None:
    """Raise for a picture over the pixel limit, reading only the header Pillow needs."""
    _register_plugins()
    try:
        width, height = Image.open(f).size
    except Image.DecompressionBombError as e:
        raise UnreadableImage(_reason(e)) from None
    except _DECODE_ERRORS:
        return  # a header Pillow cannot read is judged by `decode`, from all the bytes
    _check_pixels(width, height)


def decode(data: bytes, ext: str, size: int | ImageInput) -> Decoded:
    """Decode a file's bytes (ext: lower-case extension) into `size`×`size` model input,
    resized as `size` says (an int: the short side resized, then centre-cropped)."""
    side = size.size if isinstance(size, ImageInput) else size

    def once(data: bytes) -> Decoded:
        opened = _open_any(data, ext, side)
        pixels, info = _finish(opened, side, lambda image: model_input(image, size))
        return Decoded(pixels, info)

    return _repairing(once, data, ext)


def load_rgb(data: bytes, ext: str, draft_to: int | None = None) -> Image.Image:
    """An oriented RGB image from file bytes, for callers that need the picture itself."""

    def once(data: bytes) -> Image.Image:
        return _finish(_open_any(data, ext, draft_to), draft_to, lambda image: image)[0]

    return _repairing(once, data, ext)


def _repairing(decode_once: Callable[[bytes], _T], data: bytes, ext: str) -> _T:
    """`decode_once(data)`, retried once without the metadata segments of a JPEG it refused."""
    try:
        return decode_once(data)
    except UnreadableImage as e:
        repaired = None if ext in RAW_EXTENSIONS else without_metadata(data)
        if repaired is None or str(e).startswith("decompression bomb"):
            raise
        try:
            result = decode_once(repaired)
        except UnreadableImage:
            raise e from None
        log.debug("decoded without its damaged metadata segments (%s)", e)
        return result


def _finish(
    opened: _Opened, size: int | None, final: Callable[[Image.Image], _T]
) -> tuple[_T, PhotoInfo]:
    """Decode, read the metadata, shrink toward `size`, turn upright, make RGB, then `final`;
    the full-size steps within the pixel budget."""

    def work() -> tuple[_T, PhotoInfo]:
        image = opened.image
        image.load()  # decodes the first frame of an animation
        # after the load: a PNG's EXIF may come after its pixels
        info = photo_info(image, opened.full_size, opened.turn)
        turn = orientation(image) if opened.turn is None else opened.turn
        small = _shrink(image, size) if size else image
        if small is not image:
            image.close()  # frees the full-size pixels now, within the budget
        return final(to_rgb(upright(small, turn))), info

    cost = opened.image.width * opened.image.height * _BYTES_PER_PIXEL
    try:
        return full_decodes().run(cost, work)
    except _DECODE_ERRORS as e:
        raise UnreadableImage(_reason(e)) from None


def _shrink(image: Image.Image, size: int) -> Image.Image:
    """Box-reduce by a whole factor while the short side stays ≥ 3×size, before any copy.

    A 16 MP WebP or PNG cannot be decoded small, but everything after decoding (alpha, mode,
    rotation, the final bicubic resize) then works on a few hundred thousand pixels, not 16 M.
    Three times the target keeps the bicubic resize's quality (Pillow's reducing_gap idea).
    Modes `reduce()` refuses or would average wrongly are made 8-bit first.
    """
    factor = min(image.size) // (3 * size)
    if factor < 2:
        return image
    if image.mode.startswith("I;16"):
        image = _eight_bit(image)
    elif image.mode not in _REDUCIBLE_MODES:
        image = to_rgb(image)  # palette, 1-bit, PA, YCbCr...: averaged as colours
    return image.reduce(factor)


def _open_any(data: bytes, ext: str, draft_to: int | None) -> _Opened:
    if not data:
        raise UnreadableImage("empty file")
    if ext not in RAW_EXTENSIONS:
        image, full_size = _open(data, draft_to)
        return _Opened(image, full_size, None)
    raw = raw_preview(data)
    preview = (
        raw.preview if isinstance(raw.preview, Image.Image) else _open(raw.preview, draft_to)[0]
    )
    return _Opened(preview, raw.sensor_size, raw.orientation)


def _open(data: bytes, draft_to: int | None) -> tuple[Image.Image, tuple[int, int]]:
    _register_plugins()
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
        width, height = image.size
        _check_pixels(width, height)
        if draft_to and image.format == "JPEG":
            image = _jpeg_draft(image, data, draft_to)
        factor = min(width, height) // (3 * draft_to) if draft_to else 0
        if factor >= 2 and image.format and (image.format, image.mode) in _VIPS_SCALED:
            scaled = _vips_scaled(data, image.format, factor, image.info)
            if scaled is not None:
                return scaled, (width, height)
    except UnreadableImage:
        raise
    except _DECODE_ERRORS as e:
        raise UnreadableImage(_reason(e)) from None
    return image, (width, height)


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise UnreadableImage(
            f"decompression bomb refused: {width}x{height} pixels exceeds {MAX_PIXELS}"
        )


def _jpeg_draft(image: Image.Image, data: bytes, draft_to: int) -> Image.Image:
    """The JPEG set to decode at the smallest DCT scale still >= draft_to; at 1/8 scale, a
    progressive one reads only the scans that scale needs (`jpeg_scans`: same pixels)."""
    width, height = image.size
    image.draft("RGB", (draft_to, draft_to))
    if image.size != (-(-width // 8), -(-height // 8)):
        return image
    fewer = eighth_scale_scans(data)
    if fewer is None:
        return image
    cut = Image.open(io.BytesIO(fewer))
    cut.draft("RGB", (draft_to, draft_to))
    return cut


def _vips_scaled(data: bytes, fmt: str, factor: int, info: dict) -> Image.Image | None:
    """The first frame of a WebP or PNG at 1/factor size, decoded by libvips; None for a PNG
    that is not 8-bit RGB(A) after all (16-bit: Pillow's decode handles it).

    Pillow decodes a 17 MP WebP whole (~285 MB, a third of a second here); libwebp's scaling
    decoder is 1.6x faster. A PNG is streamed through a box shrink instead of held whole:
    2.4x faster on the benchmark photos. The result keeps the file's EXIF, so orientation and
    metadata are read as from Pillow's own decode.
    """
    pyvips = _vips()
    try:
        if fmt == "WEBP":
            image = pyvips.Image.new_from_buffer(
                data, "", scale=1.0 / factor, access="sequential", fail_on="truncated"
            )
        else:
            image = pyvips.Image.new_from_buffer(data, "", access="sequential", fail_on="truncated")
            if image.format != "uchar" or image.bands not in (3, 4):
                return None
            image = image.shrink(factor, factor)
        pixels = image.numpy()
    except pyvips.Error as e:
        # libvips' message names its own write step first; the file is what failed.
        log.debug("libvips could not decode a %s: %s", fmt, e)
        raise UnreadableImage(f"truncated or corrupt {fmt}") from None
    result = Image.fromarray(pixels)  # [h, w, 3] or [h, w, 4], uint8
    if "exif" in info:
        result.info["exif"] = info["exif"]
    return result


@functools.cache
def _vips():  # noqa: ANN202 - the pyvips module
    """pyvips, set up for photoseek's decoding: one image per worker thread (the pipeline runs
    its own), and no cache of decoded images (each file is decoded once)."""
    import pyvips

    pyvips.concurrency_set(1)
    pyvips.cache_set_max(0)
    return pyvips


def _eight_bit(image: Image.Image) -> Image.Image:
    """An I;16 (any byte order) image as 8-bit L, one byte a pixel at every step."""
    return Image.fromarray(_SIXTEEN_TO_EIGHT[np.asarray(image)], "L")


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB from any Pillow mode: alpha over white, 16/32-bit scaled down, CMYK converted."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16"):  # 16-bit by definition, even a dark one below 256
        return _eight_bit(image).convert("RGB")
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = values.max() if values.size else 0.0
        scale = 255.0 / 65535.0 if top > 255 else 1.0  # I and F: 16-bit when they exceed 8
        gray = np.clip(values * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def model_input(image: Image.Image, size: int | ImageInput) -> np.ndarray:
    """open_clip's eval transform: resize the shortest side to `size` and centre-crop, or (an
    ImageInput that says so) squash the whole picture to `size`×`size`; bicubic unless bilinear.

    torchvision's Resize on a PIL image is Pillow's resize, antialiased when shrinking, as here.
    Sizes and offsets round as torchvision's Resize and CenterCrop do, so the crop lands on the
    pixels the model saw in training (rounding the long side or flooring the offset moves it).
    """
    shape = size if isinstance(size, ImageInput) else ImageInput(size)
    size, resample = shape.size, _RESAMPLING[shape.interpolation]
    if shape.resize_mode == "squash":
        squashed = image.resize((size, size), resample, reducing_gap=3.0)
        return np.asarray(squashed, dtype=np.uint8)
    width, height = image.size
    if width <= height:
        new = (size, int(size * height / width))
    else:
        new = (int(size * width / height), size)
    resized = image.resize(new, resample, reducing_gap=3.0)
    if shape.crop_offset == "floor":
        left, top = (new[0] - size) // 2, (new[1] - size) // 2
    else:
        left, top = round((new[0] - size) / 2), round((new[1] - size) / 2)
    return np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _reason(error: BaseException) -> str:
    if isinstance(error, Image.DecompressionBombError):
        return f"decompression bomb refused: {error}"
    text = str(error).splitlines()[0] if str(error) else ""
    if "cannot identify image file" in text:
        return "not an image (unrecognised format)"
    if "truncated" in text or isinstance(error, EOFError):
        return f"truncated image ({text or 'unexpected end of data'})"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
