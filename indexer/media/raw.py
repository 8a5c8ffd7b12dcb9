"""The preview a camera embeds in its RAW file, with the RAW's own orientation and sensor size.

Demosaicing a RAW takes seconds; the embedded JPEG (or bitmap) preview is what the camera showed
and plenty for a model input. The preview's own EXIF is not trusted for orientation: cameras
write the turn into the RAW (LibRaw's `flip`), and many previews carry none or a stale one.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from indexer.errors import UnreadableImage

# LibRaw's flip (dcraw's: bit 2 swaps the axes, bit 1 flips vertically, bit 0 horizontally)
# -> the EXIF orientation asking for the same turn; dcraw maps the other way, "50132467".
_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}


@dataclass(frozen=True)
class RawPreview:
    """A RAW file's preview: JPEG bytes or a decoded bitmap, and what the RAW says of itself."""

    preview: bytes | Image.Image
    sensor_size: tuple[int, int]  # as stored, before the turn
    orientation: int  # EXIF-style, 1-8, from the RAW's flip


def raw_preview(data: bytes) -> RawPreview:
    """The embedded preview of a RAW file's bytes (no demosaicing)."""
    import rawpy

    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            thumb = raw.extract_thumb()
            sizes = raw.sizes
            sensor = (int(sizes.width), int(sizes.height))
            turn = _FLIP_TO_ORIENTATION.get(int(sizes.flip) & 7, 1)
    except (rawpy.LibRawError, ValueError, OSError) as e:
        raise UnreadableImage(f"RAW file without a usable preview ({type(e).__name__})") from None
    if isinstance(thumb.data, np.ndarray):  # a BITMAP preview; a JPEG one comes as bytes
        return RawPreview(Image.fromarray(thumb.data), sensor, turn)
    return RawPreview(bytes(thumb.data), sensor, turn)
