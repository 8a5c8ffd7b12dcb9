"""Output: progress lines, markdown tables and the JSON reports under bench/out/."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path


def say(text: str) -> None:
    """Print a progress line at once (the benchmarks run for minutes)."""
    print(text, flush=True)


def table(header: Sequence[str], align: str, rows: Iterable[Sequence[str]]) -> list[str]:
    """A markdown table's lines; `align` holds one letter a column: l (left) or r (right)."""
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    return [_row(header), rule, *(_row(r) for r in rows)]


def _row(cells: Sequence[str]) -> str:
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def write_json(path: Path, data: dict) -> None:
    """Write a benchmark's JSON report; values JSON has no type for (paths) become strings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
