"""Draw an explanation's map over its photo: a heat overlay on the square the model saw."""

from __future__ import annotations

import numpy as np
from PIL import Image

from search.tools.explain import PhotoGeometry

OVERLAY_SIDE = 1024  # px, longest side of a written overlay: a heatmap needs no more
_OUTSIDE = 0.45  # brightness kept outside the square the model saw

# A perceptual ramp (dark blue -> cyan -> yellow -> red), enough for one map per picture.
_STOPS = np.array(
    [[0.0, 0.0, 0.3], [0.0, 0.6, 1.0], [1.0, 0.9, 0.0], [1.0, 0.1, 0.0]], dtype=np.float32
)


def _colours(values: np.ndarray) -> np.ndarray:
    """RGB in 0..1 for values in 0..1, piecewise linear through `_STOPS`."""
    t = np.clip(values, 0.0, 1.0) * (len(_STOPS) - 1)
    low = np.minimum(t.astype(int), len(_STOPS) - 2)
    frac = (t - low)[..., None]
    return _STOPS[low] * (1 - frac) + _STOPS[low + 1] * frac


def overlay(photo: Image.Image, grid: np.ndarray, geometry: PhotoGeometry) -> Image.Image:
    """`photo` (upright, any size) with `grid` (values 0..1) upsampled bilinearly over the
    crop the model saw, blended by the map's value; the rest of the photo dimmed."""
    photo = photo.convert("RGB")
    scale = photo.width / geometry.width
    left, top, right, bottom = (round(v * scale) for v in geometry.crop)
    size = (max(right - left, 1), max(bottom - top, 1))
    # Float mode "F" resizes without rounding to 8 bits first.
    heat = np.asarray(
        Image.fromarray(grid.astype(np.float32), "F").resize(size, Image.Resampling.BILINEAR)
    )
    base = np.asarray(photo, dtype=np.float32) / 255.0
    out = base * _OUTSIDE
    region = base[top : top + size[1], left : left + size[0]]
    h, w = region.shape[:2]
    alpha = 0.25 + 0.5 * np.clip(heat[:h, :w], 0.0, 1.0)[..., None]
    out[top : top + h, left : left + w] = region * (1 - alpha) + _colours(heat[:h, :w]) * alpha
    return Image.fromarray(np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8))


def overlay_for(data: bytes, ext: str, grid: np.ndarray, geometry: PhotoGeometry) -> Image.Image:
    """The overlay on the photo in `data`, at most `OVERLAY_SIDE` px on its longest side."""
    from indexer.media import decode as decoding

    photo = decoding.load_rgb(data, ext, draft_to=OVERLAY_SIDE)
    photo.thumbnail((OVERLAY_SIDE, OVERLAY_SIDE))
    return overlay(photo, grid, geometry)
