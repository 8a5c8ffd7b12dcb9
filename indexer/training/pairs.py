"""Image-caption pair files for `train` and `eval`: JSONL or CSV, paths relative to the file.

JSONL: one object per line with "image" and "caption", optionally "negatives" (captions that do
not match the image, e.g. attribute or relation edits), "group" (an id shared by twin
images, for twin accuracy) and "boxes" (each named object's words in the caption -> its box
[left, top, right, bottom] in the image's pixels, for `train --ground-weight`). CSV: a header
with at least `image,caption`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from indexer.errors import BadInput


@dataclass(frozen=True)
class PairRow:
    """One image and its caption, with optional negative captions and twin group."""

    image: Path
    caption: str
    negatives: tuple[str, ...] = field(default=())
    group: int | None = None
    boxes: dict[str, list[float]] = field(default_factory=dict)


def read_pairs(path: Path) -> list[PairRow]:
    """Every pair in a JSONL or CSV file; a malformed row is a BadInput naming its line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read pairs from {path}: {e}") from None
    base = path.resolve().parent
    rows = _csv_rows(text) if path.suffix.lower() == ".csv" else _jsonl_rows(text, path)
    pairs = [_pair(row, base, path, line) for line, row in rows]
    if not pairs:
        raise BadInput(f"{path} holds no pairs")
    return pairs


def _jsonl_rows(text: str, path: Path) -> list[tuple[int, dict]]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise BadInput(f"{path}:{number}: not a JSON object") from None
        rows.append((number, row))
    return rows


def _csv_rows(text: str) -> list[tuple[int, dict]]:
    reader = csv.DictReader(text.splitlines())
    return [(number + 2, row) for number, row in enumerate(reader)]


def _pair(row: object, base: Path, path: Path, line: int) -> PairRow:
    if not isinstance(row, dict) or not row.get("image") or not row.get("caption"):
        raise BadInput(f"{path}:{line}: needs non-empty 'image' and 'caption'")
    negatives = row.get("negatives") or ()
    if isinstance(negatives, str) or not all(isinstance(n, str) for n in negatives):
        raise BadInput(f"{path}:{line}: 'negatives' must be a list of captions")
    group = row.get("group")
    boxes = row.get("boxes") or {}
    if not isinstance(boxes, dict) or not all(_is_box(b) for b in boxes.values()):
        raise BadInput(f"{path}:{line}: 'boxes' must map words to [left, top, right, bottom]")
    return PairRow(
        image=(base / str(row["image"])).resolve(),
        caption=str(row["caption"]).strip(),
        negatives=tuple(negatives),
        group=int(group) if group not in (None, "") else None,
        boxes={str(k): [float(v) for v in b] for k, b in boxes.items()},
    )


def _is_box(box: object) -> bool:
    return (
        isinstance(box, list)
        and len(box) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)
    )
