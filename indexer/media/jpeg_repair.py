"""Recover the picture of a JPEG whose metadata segments are damaged, by dropping them.

A wrong length in an APPn segment (EXIF, XMP, ICC) throws every parser off the segment chain
and the whole file is refused, although the frame, its tables and its scans are intact. The
picture is the frame whose table-and-frame segments form a well-formed chain to a start of
scan; a thumbnail embedded in the EXIF forms one too, so the largest frame wins.
"""

from __future__ import annotations

import re

_SOS, _DRI, _DQT, _DHT, _COM = 0xDA, 0xDD, 0xDB, 0xC4, 0xFE
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# A chain may start at any table or frame segment, never at metadata.
_START = re.compile(rb"\xff[\xdb\xc4\xdd\xc0-\xc3\xc5-\xc7\xc9-\xcb\xcd-\xcf]")
_APP = range(0xE0, 0xF0)
# Metadata sits before the frame; looking further is looking into scan data.
_SEARCHED = 4 << 20


def without_metadata(data: bytes) -> bytes | None:
    """`data` as SOI + the picture's own chain onwards, or None when no frame chain is found."""
    if data[:2] != b"\xff\xd8":
        return None
    best, best_area = None, 0
    for match in _START.finditer(data, 2, min(len(data), _SEARCHED)):
        area = _chain_area(data, match.start())
        if area > best_area:  # strictly: the earliest start of the largest frame keeps its tables
            best, best_area = match.start(), area
    return None if best is None else b"\xff\xd8" + data[best:]


def _chain_area(data: bytes, pos: int) -> int:
    """Pixels of the frame of a well-formed segment chain from `pos` to a start of scan; 0 for
    none (a malformed segment, no frame, or a chain that runs off the data)."""
    area = 0
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if (
            marker not in _SOF
            and marker not in (_SOS, _DRI, _DQT, _DHT, _COM)
            and marker not in _APP
        ):
            return 0
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if end > len(data) or end < pos + 4:
            return 0
        if marker == _SOS:
            return area
        if marker in _SOF and end >= pos + 9:
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            area = width * height
        pos = end
    return 0
