"""The teacher's scores for every (text, candidate) pair, computed once, batched and cached.

Pairs already in the cache are skipped; the others are scored in batches of about
`batch_pairs` (each text's candidates in one call of the reranker), each batch stored as soon as
it is scored. Progress is reported per batch as the "teacher scoring" stage, in pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from indexer.progress import Progress
from search.distil.candidates import TextCandidates
from search.distil.teacher_cache import TeacherCache
from search.hits import Hit
from search.rerank.cross_encoder import Candidate, CrossEncoderReranker, read_candidate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    """One text's candidates that the teacher scored, with the scores."""

    text: str
    hits: list[Hit]
    digests: list[str]
    teacher: list[float]


def score_all(
    teacher: CrossEncoderReranker,
    cache: TeacherCache,
    pools: list[TextCandidates],
    batch_pairs: int = 64,
    progress: Callable[[Progress], None] | None = None,
) -> list[Scored]:
    """Every pool's teacher scores (from `cache`, else computed and stored there)."""
    digests = _digests(pools)
    total = sum(1 for p in pools for h in p.hits if digests.get(h.path) is not None)
    pending: dict[str, list[Hit]] = {}
    waiting = done = 0
    for pool in pools:
        for hit in pool.hits:
            digest = digests.get(hit.path)
            if digest is None:
                continue
            if cache.get(pool.text, digest) is not None:
                done += 1
                continue
            pending.setdefault(pool.text, []).append(hit)
            waiting += 1
            if waiting >= batch_pairs:
                done += _flush(teacher, cache, pending)
                pending, waiting = {}, 0
                _report(progress, done, total)
    if pending:
        done += _flush(teacher, cache, pending)
    _report(progress, done, total)
    return [_scored(pool, digests, cache) for pool in pools]


def _digests(pools: list[TextCandidates]) -> dict[bytes, str | None]:
    """Each candidate file's content hash, read once (None: unreadable now, logged)."""
    out: dict[bytes, str | None] = {}
    for pool in pools:
        for hit in pool.hits:
            if hit.path not in out:
                candidate = read_candidate(hit)
                out[hit.path] = candidate.digest if candidate is not None else None
    return out


def _flush(
    teacher: CrossEncoderReranker, cache: TeacherCache, pending: dict[str, list[Hit]]
) -> int:
    """Score and store one batch; the number of pairs it covered (scored or not readable)."""
    pairs: list[tuple[str, str, float]] = []
    covered = 0
    for text, hits in pending.items():
        candidates: list[Candidate] = [c for c in map(read_candidate, hits) if c is not None]
        kept, logits = teacher.logits(text, candidates)
        pairs += [(text, c.digest, float(x)) for c, x in zip(kept, logits.tolist(), strict=True)]
        covered += len(hits)
    if pairs:
        cache.append(pairs)
    return covered


def _report(progress: Callable[[Progress], None] | None, done: int, total: int) -> None:
    if progress is not None:
        progress(Progress("teacher scoring", done, total, "pairs"))


def _scored(pool: TextCandidates, digests: dict[bytes, str | None], cache: TeacherCache) -> Scored:
    hits, kept, scores = [], [], []
    for hit in pool.hits:
        digest = digests.get(hit.path)
        score = cache.get(pool.text, digest) if digest is not None else None
        if digest is not None and score is not None:
            hits.append(hit)
            kept.append(digest)
            scores.append(score)
    return Scored(pool.text, hits, kept, scores)
