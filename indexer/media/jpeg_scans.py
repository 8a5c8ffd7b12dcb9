"""Cut a progressive JPEG down to the scans that decoding it at 1/8 scale reads, pixel for pixel.

At 1/8 scale libjpeg-turbo turns each 8x8 block of a full-resolution component into one pixel
from the block's DC coefficient alone, yet it entropy-decodes every AC scan first: often most of
the bytes of a large progressive photo, for nothing. Without those scans the 1/8-scale decode
does far less work and gives the same pixels. Two kinds of scan stay: every DC scan, and each
component's first AC band (Ss=1, Ah=0), because with no AC data at all libjpeg-turbo's block
smoothing re-estimates the DC values themselves. Subsampled components (chroma in 4:2:0 or
4:2:2) are decoded at 2x2 or larger, so they keep all their scans.
"""

from __future__ import annotations

import re

_EOI, _SOS, _SOF_PROGRESSIVE = 0xD9, 0xDA, 0xC2
# Every other start-of-frame: baseline, lossless, arithmetic-coded, hierarchical.
_OTHER_SOF = frozenset({0xC0, 0xC1, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# The next marker after entropy-coded data: 0xFF not followed by a stuffed zero, a restart
# marker or a fill byte.
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def eighth_scale_scans(data: bytes) -> bytes | None:
    """`data` without the scans a 1/8-scale decode does not read; None when there are none to
    drop, or `data` is not a whole, well-formed progressive Huffman JPEG (decode it as it is)."""
    if data[:2] != b"\xff\xd8":
        return None
    kept, full_resolution, dropped, pos = [data[:2]], None, False, 2
    while pos + 2 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == _EOI:
            break
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if end > len(data) or end < pos + 4 or marker in _OTHER_SOF:
            return None
        if marker == _SOF_PROGRESSIVE:
            full_resolution = _full_resolution_components(data[pos + 4 : end])
        if marker != _SOS:
            kept.append(data[pos:end])
            pos = end
            continue
        following = _MARKER.search(data, end)
        if full_resolution is None or following is None:  # no frame yet, or cut short
            return None
        needed = _scan_needed(data[pos + 4 : end], full_resolution)
        if needed is None:
            return None
        if needed:
            kept.append(data[pos : following.start()])
        dropped = dropped or not needed
        pos = following.start()
    else:
        return None  # ran off the end, or into bytes that are not a marker
    return b"".join([*kept, b"\xff\xd9"]) if dropped else None


def _full_resolution_components(frame: bytes) -> set[int] | None:
    """Ids of the components sampled at the frame's full resolution (Y, or all in 4:4:4)."""
    count = frame[5] if len(frame) > 5 else 0
    if count == 0 or len(frame) < 6 + 3 * count:
        return None
    specs = [frame[6 + 3 * i : 8 + 3 * i] for i in range(count)]
    sampling = {spec[0]: (spec[1] >> 4, spec[1] & 0x0F) for spec in specs}
    most = (max(h for h, _ in sampling.values()), max(v for _, v in sampling.values()))
    return {component for component, factors in sampling.items() if factors == most}


def _scan_needed(header: bytes, full_resolution: set[int]) -> bool | None:
    """Whether a 1/8-scale decode reads this scan; None for a malformed scan header."""
    count = header[0] if header else 0
    if count == 0 or len(header) != 1 + 2 * count + 3:
        return None
    first_coefficient, high_bits = header[1 + 2 * count], header[3 + 2 * count] >> 4
    if count > 1 or first_coefficient == 0 or header[1] not in full_resolution:
        return True  # DC scans, and the AC scans of subsampled components
    return first_coefficient == 1 and high_bits == 0  # the first AC band keeps DC as decoded
