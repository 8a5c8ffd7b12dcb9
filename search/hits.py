"""The result of a search: one image and its score, and its stable JSON shape.

JSON paths are `os.fsdecode` strings (undecodable bytes become lone surrogates, written as
`\\udcXX` escapes), so `os.fsencode(obj["path"])` gives back the exact bytes of any file name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from indexer.store.layout import ImageRow


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: int
    path: bytes
    score: float
    width: int | None
    height: int | None
    taken_at: str | None
    extra: dict[str, float] = field(default_factory=dict)  # rerank fields, when reranked
    caption: str | None = None  # the stored caption (`photoseek index --captions`), if any

    @classmethod
    def from_row(cls, row: ImageRow, score: float, caption: str | None = None) -> Hit:
        """The hit for a catalog row at `score`."""
        return cls(row.id, row.path, score, row.width, row.height, row.taken_at, caption=caption)

    def to_json(self, rank: int) -> dict[str, object]:
        """The stable JSON shape of this result at `rank` (1 = best)."""
        return {
            "rank": rank,
            "path": os.fsdecode(self.path),
            "score": round(self.score, 6),
            "id": self.id,
            "width": self.width,
            "height": self.height,
            "taken_at": self.taken_at,
            **{k: v if isinstance(v, bool) else round(v, 6) for k, v in self.extra.items()},
            **({"caption": self.caption} if self.caption is not None else {}),
        }
