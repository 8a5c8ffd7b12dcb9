"""EXIF reading on its own: orientation, rotated size, and the forms cameras write values in."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

from indexer.media.decode import decode
from indexer.media.exif import PhotoInfo, needs_orienting, photo_info


def _with_exif(tags: dict[int, object]) -> Image.Image:
    image = Image.new("RGB", (4, 2))
    exif = image.getexif()
    for tag, value in tags.items():
        exif[tag] = value
    return image


def test_orientation_one_or_missing_is_upright() -> None:
    assert not needs_orienting(_with_exif({}))
    assert not needs_orienting(_with_exif({0x0112: 1}))
    assert all(needs_orienting(_with_exif({0x0112: value})) for value in range(2, 9))
    assert not needs_orienting(_with_exif({0x0112: 9}))  # out of range: left as stored


def test_turned_photos_report_their_upright_size() -> None:
    assert photo_info(_with_exif({0x0112: 6}), (40, 20)) == PhotoInfo(20, 40, None, None, None)
    assert photo_info(_with_exif({0x0112: 3}), (40, 20)).width == 40  # 180°: same shape


def test_bytes_and_non_text_values() -> None:
    info = photo_info(_with_exif({271: b"NIKON\x00", 272: 42, 306: b"2001:02:03 04:05:06"}), (1, 1))
    assert info.camera_make == "NIKON"
    assert info.camera_model is None
    assert info.taken_at == "2001-02-03T04:05:06"


# --- damaged metadata is missing metadata, never a lost picture -----------------------------


def _camera_jpeg(orientation: int = 6) -> bytes:
    """A flat-coloured JPEG with the EXIF a camera writes, APP1 first (no JFIF segment)."""
    rational = TiffImagePlugin.IFDRational
    exif = Image.Exif()
    exif.update({271: "Canon", 272: "EOS R5", 306: "2020:01:01 00:00:00", 0x0112: orientation})
    exif.update({282: rational(300, 1), 283: rational(300, 1), 296: 2})
    sub = exif.get_ifd(0x8769)
    sub.update({36867: "2021:07:04 15:30:45", 33434: rational(1, 250)})
    sub[37500] = bytes(range(256)) * 2  # a maker note: most of a real EXIF block is opaque
    exif.get_ifd(0x8825).update({1: "N", 2: (rational(48, 1), rational(51, 1), rational(30, 1))})
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 40)).save(buffer, "JPEG", exif=exif, quality=95)
    data = buffer.getvalue()
    if data[2:4] == b"\xff\xe0":  # drop the JFIF segment Pillow writes, as cameras do
        data = data[:2] + data[4 + int.from_bytes(data[4:6], "big") :]
    assert data[2:4] == b"\xff\xe1"
    return data


def _damaged(data: bytes, rng: np.random.Generator, start: int, end: int) -> bytes:
    copy = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        copy[int(rng.integers(start, end))] = int(rng.integers(0, 256))
    return bytes(copy)


def test_intact_camera_exif_is_read() -> None:
    info = decode(_camera_jpeg(), "jpg", 32).info
    assert info == PhotoInfo(48, 64, "2021-07-04T15:30:45", "Canon", "EOS R5")


def test_damaged_exif_never_loses_the_picture() -> None:
    """300 copies with 1-4 bytes of the EXIF segment (marker and length included) damaged: every
    one decodes to the picture; what metadata survives is whatever could still be read."""
    data = _camera_jpeg()
    end = 4 + int.from_bytes(data[4:6], "big")  # the APP1 segment: data[2:end]
    rng = np.random.default_rng(11)
    for copy in (_damaged(data, rng, 2, end) for _ in range(300)):
        decoded = decode(copy, "jpg", 32)
        assert np.all(np.abs(decoded.pixels.astype(int) - (200, 30, 40)) <= 12)
        assert (decoded.info.width, decoded.info.height) in ((64, 48), (48, 64))


def test_a_wrong_segment_length_loses_the_metadata_only() -> None:
    """The EXIF segment's length field damaged to shorter and longer values: parsers land
    inside the EXIF bytes or past the frame's tables, yet the picture decodes."""
    data = _camera_jpeg()
    length = int.from_bytes(data[4:6], "big")
    for wrong in [*range(2, length, 3), *range(length + 1, len(data) - 4, 5)]:
        decoded = decode(data[:4] + wrong.to_bytes(2, "big") + data[6:], "jpg", 32)
        assert np.all(np.abs(decoded.pixels.astype(int) - (200, 30, 40)) <= 12), wrong


@pytest.mark.parametrize("byte", [0x00, 0xD8, 0xE1])
def test_a_damaged_segment_marker_loses_the_metadata_only(byte: int) -> None:
    data = bytearray(_camera_jpeg())
    data[2] = byte  # the 0xFF that starts the EXIF segment
    decoded = decode(bytes(data), "jpg", 32)
    assert decoded.info == PhotoInfo(64, 48, None, None, None)  # no rotation read either
    assert np.all(np.abs(decoded.pixels.astype(int) - (200, 30, 40)) <= 12)


def test_unparseable_exif_reads_as_missing() -> None:
    image = Image.new("RGB", (4, 2))
    image.info["exif"] = b"Exif\x00\x00garbage"
    assert not needs_orienting(image)
    assert photo_info(image, (4, 2)) == PhotoInfo(4, 2, None, None, None)
