"""What a photo's EXIF says: its orientation, the date it was taken, and the camera.

Values come as cameras write them (NUL-padded strings, bytes, "0000:00:00" for an unset date);
anything unusable reads as None rather than an error. Damaged EXIF is missing EXIF: the picture
it came with is decoded all the same (upright as stored, no date, no camera).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from PIL import Image

log = logging.getLogger(__name__)

_EXIF_IFD = 0x8769
_TAG_MAKE, _TAG_MODEL, _TAG_DATETIME, _TAG_DATETIME_ORIGINAL = 271, 272, 306, 36867
_TAG_ORIENTATION = 0x0112
# EXIF orientation -> the transposition that makes the stored picture upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class PhotoInfo:
    """Metadata stored per image: oriented size, EXIF date taken and camera."""

    width: int
    height: int
    taken_at: str | None  # ISO 8601, local time as the camera wrote it
    camera_make: str | None
    camera_model: str | None


def read_exif(image: Image.Image) -> Image.Exif:
    """The image's EXIF, empty when there is none or it cannot be parsed."""
    try:
        exif = image.getexif()
        exif.get_ifd(_EXIF_IFD)  # parsed lazily: damage there must show here, not later
    # Pillow's EXIF parser raises whatever damaged bytes lead it into (struct, Syntax, Type,
    # Index, Overflow, Recursion...); metadata is optional, so every failure reads as none.
    except Exception as e:  # noqa: BLE001
        log.debug("unreadable EXIF ignored: %s: %s", type(e).__name__, e)
        return Image.Exif()
    return exif


def orientation(image: Image.Image) -> int:
    """The EXIF orientation, 1-8; 1 (as stored) when missing, damaged or out of range."""
    value = read_exif(image).get(_TAG_ORIENTATION, 1)
    return value if isinstance(value, int) and value in range(1, 9) else 1


def needs_orienting(image: Image.Image) -> bool:
    """Whether the EXIF orientation asks for a flip or turn (2-8) before the picture is upright."""
    return orientation(image) != 1


def upright(image: Image.Image, turn: int) -> Image.Image:
    """`image` flipped or turned as EXIF orientation `turn` asks (the EXIF itself untouched:
    rewriting a damaged block is how Pillow's own `exif_transpose` fails)."""
    method = _UPRIGHT.get(turn)
    return image if method is None else image.transpose(method)


def photo_info(
    image: Image.Image, full_size: tuple[int, int], turn: int | None = None
) -> PhotoInfo:
    """The catalog's metadata for an opened image whose stored (unrotated) size is `full_size`;
    `turn` overrides the EXIF orientation (a RAW file's own flip)."""
    exif = read_exif(image)
    width, height = full_size
    if (orientation(image) if turn is None else turn) in (5, 6, 7, 8):  # turned 90°: portrait
        width, height = height, width
    sub = _sub_ifd(exif)
    return PhotoInfo(
        width=width,
        height=height,
        taken_at=_exif_date(sub.get(_TAG_DATETIME_ORIGINAL) or exif.get(_TAG_DATETIME)),
        camera_make=_exif_text(exif.get(_TAG_MAKE)),
        camera_model=_exif_text(exif.get(_TAG_MODEL)),
    )


def _sub_ifd(exif: Image.Exif) -> dict[int, object]:
    try:
        return dict(exif.get_ifd(_EXIF_IFD))
    except Exception:  # noqa: BLE001 - as in `read_exif`: damaged metadata is missing metadata
        return {}


def _exif_text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    text = value.replace("\x00", "").strip()
    return text or None


def _exif_date(value: object) -> str | None:
    text = _exif_text(value)
    if not text:
        return None
    try:
        return datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None
