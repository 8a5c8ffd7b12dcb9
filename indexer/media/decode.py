"""Decode image bytes into model-ready RGB pixels, with the metadata `exif` reads from them.

Fast path: JPEGs are decoded at reduced size (DCT scaling via Pillow's draft mode) close to the
model's input, since full decoding of a 4-15 MP photo dominates indexing on a small CPU; at 1/8
scale a progressive JPEG skips the scans that scale does not read. Large WebPs and 8-bit RGB(A)
PNGs go through libvips: WebP scaled by libwebp while decoding, PNG streamed and box-shrunk a
strip at a time; Pillow can only decode them whole.
Every failure becomes `UnreadableImage` with a short reason; nothing else escapes.
"""

from __future__ import annotations

import functools
import io
import logging
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from indexer.errors import UnreadableImage
from indexer.media.discovery import RAW_EXTENSIONS
from indexer.media.exif import PhotoInfo, needs_orienting, photo_info
from indexer.media.jpeg_scans import eighth_scale_scans

log = logging.getLogger(__name__)

# Refuse larger images before decoding: Pillow's own hard limit, read here, never changed.
MAX_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)

# (format, mode) pairs that libvips decodes at reduced size (see `_vips_scaled`).
_VIPS_SCALED = frozenset({("WEBP", "RGB"), ("WEBP", "RGBA"), ("PNG", "RGB"), ("PNG", "RGBA")})
_REDUCIBLE_MODES = frozenset({"RGB", "RGBA", "RGBX", "L", "LA", "CMYK", "I", "F", "I;16"})
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    Image.DecompressionBombError,
)


@dataclass(frozen=True)
class Decoded:
    """A decoded photo: model input pixels [size, size, 3] uint8 and its metadata."""

    pixels: np.ndarray
    info: PhotoInfo


@functools.cache
def _register_plugins() -> None:
    """Teach Pillow HEIF/HEIC (AVIF is native in current Pillow)."""
    from pillow_heif import register_heif_opener

    register_heif_opener()


def decode(data: bytes, ext: str, size: int) -> Decoded:
    """Decode a file's bytes (ext: lower-case extension) into `size`×`size` model input."""
    image, full_size = _open_any(data, ext, size)
    try:
        info = photo_info(image, full_size)
        return Decoded(model_input(_oriented_rgb(_shrink(image, size)), size), info)
    except _DECODE_ERRORS as e:
        raise UnreadableImage(_reason(e)) from None


def load_rgb(data: bytes, ext: str, draft_to: int | None = None) -> Image.Image:
    """An oriented RGB image from file bytes, for callers that need the picture itself."""
    image, _ = _open_any(data, ext, draft_to)
    try:
        return _oriented_rgb(_shrink(image, draft_to) if draft_to else image)
    except _DECODE_ERRORS as e:
        raise UnreadableImage(_reason(e)) from None


def _shrink(image: Image.Image, size: int) -> Image.Image:
    """Box-reduce by a whole factor while the short side stays ≥ 3×size, before any copy.

    A 16 MP WebP or PNG cannot be decoded small, but everything after decoding (alpha, mode,
    rotation, the final bicubic resize) then works on a few hundred thousand pixels, not 16 M.
    Three times the target keeps the bicubic resize's quality (Pillow's reducing_gap idea).
    """
    factor = min(image.size) // (3 * size)
    if factor < 2 or image.mode not in _REDUCIBLE_MODES:
        return image
    return image.reduce(factor)


def _oriented_rgb(image: Image.Image) -> Image.Image:
    if needs_orienting(image):
        image = ImageOps.exif_transpose(image)
    return to_rgb(image)


def _open_any(data: bytes, ext: str, draft_to: int | None) -> tuple[Image.Image, tuple[int, int]]:
    if not data:
        raise UnreadableImage("empty file")
    return _raw_preview(data) if ext in RAW_EXTENSIONS else _open(data, draft_to)


def _open(data: bytes, draft_to: int | None) -> tuple[Image.Image, tuple[int, int]]:
    _register_plugins()
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise UnreadableImage(
                f"decompression bomb refused: {width}x{height} pixels exceeds {MAX_PIXELS}"
            )
        if draft_to and image.format == "JPEG":
            image = _jpeg_draft(image, data, draft_to)
        factor = min(width, height) // (3 * draft_to) if draft_to else 0
        if factor >= 2 and image.format and (image.format, image.mode) in _VIPS_SCALED:
            scaled = _vips_scaled(data, image.format, factor, image.info)
            if scaled is not None:
                return scaled, (width, height)
        image.load()  # decodes the first frame of an animation
    except UnreadableImage:
        raise
    except _DECODE_ERRORS as e:
        raise UnreadableImage(_reason(e)) from None
    return image, (width, height)


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


def _raw_preview(data: bytes) -> tuple[Image.Image, tuple[int, int]]:
    """The JPEG or bitmap preview a camera embeds in its RAW file (no demosaicing)."""
    import rawpy

    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            thumb = raw.extract_thumb()
            sensor = (raw.sizes.width, raw.sizes.height)
    except rawpy.LibRawError as e:
        raise UnreadableImage(f"RAW file without a usable preview ({type(e).__name__})") from None
    except _DECODE_ERRORS as e:
        raise UnreadableImage(_reason(e)) from None
    if isinstance(thumb.data, np.ndarray):  # a BITMAP preview; a JPEG one comes as bytes
        return Image.fromarray(thumb.data), sensor
    return _open(bytes(thumb.data), None)[0], sensor


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB from any Pillow mode: alpha over white, 16/32-bit scaled down, CMYK converted."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = values.max() if values.size else 0.0
        # I;16 is 16-bit by definition (a dark one may stay below 256); for I and F, guess
        sixteen_bit = mode.startswith("I;16") or top > 255
        scale = 255.0 / 65535.0 if sixteen_bit else 1.0
        gray = np.clip(values * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def model_input(image: Image.Image, size: int) -> np.ndarray:
    """Resize the shortest side to `size` (bicubic) and centre-crop: open_clip's eval transform.

    Sizes and offsets round as torchvision's Resize and CenterCrop do, so the crop lands on the
    pixels the model saw in training (rounding the long side or flooring the offset moves it).
    """
    width, height = image.size
    if width <= height:
        new = (size, int(size * height / width))
    else:
        new = (int(size * width / height), size)
    resized = image.resize(new, Image.Resampling.BICUBIC, reducing_gap=3.0)
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
