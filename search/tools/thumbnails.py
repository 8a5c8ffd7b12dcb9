"""Thumbnails of indexed images: made once per (row, size) and cached in the index folder.

The cache is keyed by catalog row id: a changed file gets a new row, so a cached thumbnail is
never stale for its id, and deleting `thumbnails/` only costs regenerating them.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from indexer import atomic
from indexer.errors import UnreadableImage
from indexer.media import decode as decoding
from indexer.media.discovery import extension

THUMBNAILS_DIR = "thumbnails"
SIZES = (256, 512)  # px, longest side


def thumbnail(path: bytes, size: int) -> Image.Image | None:
    """The image at `path` shrunk to fit `size`×`size` (bomb limits as in indexing), or None
    when the file cannot be read or decoded now."""
    try:
        data = decoding.read_image(path, extension(path))
        image = decoding.load_rgb(data, extension(path), draft_to=size)
    except (OSError, UnreadableImage):
        return None
    image.thumbnail((size, size))
    return image


def cached_webp(index_dir: Path, image_id: int, path: bytes, size: int) -> Path | None:
    """The WebP thumbnail of row `image_id` (file `path`), made on first use; None when the
    file cannot be decoded now (nothing is cached then, so it is retried next time)."""
    target = index_dir / THUMBNAILS_DIR / str(size) / f"{image_id}.webp"
    if target.is_file():
        return target
    image = thumbnail(path, size)
    if image is None:
        return None
    out = io.BytesIO()
    image.save(out, format="WEBP", quality=80, method=4)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(target, out.getvalue())
    return target
