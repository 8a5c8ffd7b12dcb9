"""A progressive JPEG decoded at 1/8 scale reads fewer scans and gives the very same pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexer.errors import UnreadableImage
from indexer.media.decode import decode, model_input, to_rgb
from indexer.media.jpeg_scans import eighth_scale_scans

SIZE = 256  # 2,400 x 2,112 reaches the target at 1/8 scale: 300 x 264


def _photo_like(mode: str) -> Image.Image:
    """Gradients, edges and noise: every AC band of every component carries data."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:2112, 0:2400].astype(np.float64)
    base = np.stack([255 * x / 2400, 255 * y / 2112, 128 + 90 * np.sin(x / 37) * np.cos(y / 53)])
    base[:, 500:900, 300:1400] = np.array([230, 40, 30])[:, None, None]
    pixels = np.clip(base.transpose(1, 2, 0) + rng.normal(0, 18, (2112, 2400, 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8)).convert(mode)


def _jpeg(tmp_path: Path, mode: str, **params: object) -> bytes:
    path = tmp_path / f"progressive {mode} ✓.jpg"
    _photo_like(mode).save(path, quality=92, **params)
    return path.read_bytes()


def _eighth(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    image.draft(image.mode, (SIZE, SIZE))
    assert image.size == (300, 264)
    return np.asarray(image)


@pytest.mark.parametrize(
    ("mode", "subsampling"),
    [("RGB", "4:2:0"), ("RGB", "4:2:2"), ("RGB", "4:4:4"), ("L", None), ("CMYK", None)],
)
def test_same_pixels_from_fewer_bytes(tmp_path: Path, mode: str, subsampling: str | None) -> None:
    extra = {"subsampling": subsampling} if subsampling else {}
    data = _jpeg(tmp_path, mode, progressive=True, **extra)
    fewer = eighth_scale_scans(data)
    assert fewer is not None
    assert len(fewer) < 0.7 * len(data)
    assert np.array_equal(_eighth(fewer), _eighth(data))


def test_decode_at_eighth_scale_keeps_pixels_and_metadata(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0110] = "Camera 7"
    data = _jpeg(tmp_path, "RGB", progressive=True, exif=exif.tobytes())
    whole = Image.open(io.BytesIO(data))
    whole.draft("RGB", (SIZE, SIZE))
    decoded = decode(data, "jpg", SIZE)
    assert np.array_equal(decoded.pixels, model_input(to_rgb(whole), SIZE))
    assert (decoded.info.width, decoded.info.height) == (2400, 2112)
    assert decoded.info.camera_model == "Camera 7"


def test_nothing_to_drop(tmp_path: Path) -> None:
    assert eighth_scale_scans(_jpeg(tmp_path, "RGB")) is None  # baseline: one scan
    assert eighth_scale_scans(b"\x89PNG\r\n\x1a\n" + bytes(64)) is None
    assert eighth_scale_scans(b"\xff\xd8\xff\xe0\x00") is None  # a segment cut short
    assert eighth_scale_scans(b"\xff\xd8" + bytes(100)) is None  # not a marker after SOI


def test_truncated_progressive_jpeg_is_still_reported(tmp_path: Path) -> None:
    data = _jpeg(tmp_path, "RGB", progressive=True)
    cut = data[: int(len(data) * 0.8)]  # inside a later AC scan, one the cut stream would drop
    assert eighth_scale_scans(cut) is None
    with pytest.raises(UnreadableImage, match="truncated"):
        decode(cut, "jpg", SIZE)
