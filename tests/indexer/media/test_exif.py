"""EXIF reading on its own: orientation, rotated size, and the forms cameras write values in."""

from __future__ import annotations

from PIL import Image

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
