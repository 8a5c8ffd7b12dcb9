"""Hits as the API's `Result`s: the CLI's JSON shape plus the URLs of their pictures."""

from __future__ import annotations

import time
from collections.abc import Sequence

from search.hits import Hit
from search.server.models import Result


def results(hits: Sequence[Hit], first_rank: int = 1) -> list[Result]:
    out = []
    for rank, hit in enumerate(hits, first_rank):
        fields = hit.to_json(rank)
        base = f"/api/images/{hit.id}"
        out.append(Result.model_validate({
            **fields, "thumbnail": f"{base}/thumbnail", "file": f"{base}/file",
        }))  # fmt: skip
    return out


def elapsed_ms(started: float) -> float:
    """Milliseconds since `started` (a `time.perf_counter()` reading), for `took_ms`."""
    return round((time.perf_counter() - started) * 1000, 2)
