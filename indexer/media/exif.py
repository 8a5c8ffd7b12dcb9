"""What a photo's EXIF says: its orientation, the date it was taken, and the camera.

Values come as cameras write them (NUL-padded strings, bytes, "0000:00:00" for an unset date);
anything unusable reads as None rather than an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from PIL import Image

_EXIF_IFD = 0x8769
_TAG_MAKE, _TAG_MODEL, _TAG_DATETIME, _TAG_DATETIME_ORIGINAL = 271, 272, 306, 36867
_TAG_ORIENTATION = 0x0112


@dataclass(frozen=True)
class PhotoInfo:
    """Metadata stored per image: oriented size, EXIF date taken and camera."""

    width: int
    height: int
    taken_at: str | None  # ISO 8601, local time as the camera wrote it
    camera_make: str | None
    camera_model: str | None


def needs_orienting(image: Image.Image) -> bool:
    """Whether the EXIF orientation asks for a flip or turn (2-8) before the picture is upright."""
    return image.getexif().get(_TAG_ORIENTATION, 1) in range(2, 9)


def photo_info(image: Image.Image, full_size: tuple[int, int]) -> PhotoInfo:
    """The catalog's metadata for an opened image whose stored (unrotated) size is `full_size`."""
    exif = image.getexif()
    width, height = full_size
    if exif.get(_TAG_ORIENTATION) in (5, 6, 7, 8):  # rotated 90°: the oriented picture is portrait
        width, height = height, width
    sub = exif.get_ifd(_EXIF_IFD)
    return PhotoInfo(
        width=width,
        height=height,
        taken_at=_exif_date(sub.get(_TAG_DATETIME_ORIGINAL) or exif.get(_TAG_DATETIME)),
        camera_make=_exif_text(exif.get(_TAG_MAKE)),
        camera_model=_exif_text(exif.get(_TAG_MODEL)),
    )


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
