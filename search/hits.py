"""The result of a search: one image and its score."""

from __future__ import annotations

from dataclasses import dataclass, field


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
