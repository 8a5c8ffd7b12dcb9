"""`photoseek train --teacher`: distil a teacher reranker into the index model's head.

The stages: the text pool (with the captions `index --captions` stored) and its edits; each
text's ITC top-k from the index; the teacher's scores of those pairs, the log-odds of the match
probability it reports (`search.distil.judgement`; cached under
OUT/teacher-scores/<teacher key>/, so a rerun skips what is scored); then
`indexer.training.distil.distil_head` on the index's own encoder, fed plain file paths and
numbers. OUT becomes an ordinary model folder: `photoseek index --model
OUT` stores its head's tokens and `search --rerank` uses it torch-free.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from indexer.models.model_files import RERANK_K
from indexer.progress import Progress
from indexer.training.distil import DistilOptions, DistilQuery, DistilResult, distil_head
from search.distil.candidates import itc_candidates, within_budget
from search.distil.judgement import open_teacher
from search.distil.teacher import Scored, score_all
from search.distil.teacher_cache import TeacherCache
from search.distil.texts import text_pool, with_captions
from search.wiring import build_engine

SCORES_DIR = "teacher-scores"


@dataclass(frozen=True)
class DistilSettings:
    """What a distillation run reads besides the index, teacher and out folder."""

    texts_file: Path | None = None  # None: the built-in photo vocabulary with its templates
    budget_pairs: int | None = None  # at most about this many (text, image) pairs
    rerank_k: int = RERANK_K  # candidates per text: the ITC top-k a reranked query rescores
    batch_pairs: int = 64  # pairs per teacher batch (and per cache file)
    options: DistilOptions = field(default_factory=DistilOptions)


@dataclass(frozen=True)
class DistilReport:
    """What a run did: the student, the pairs and the time of each stage."""

    result: DistilResult
    texts: int
    pairs: int
    teacher_s: float
    student_s: float


def distil(
    index_dir: Path,
    teacher: str,
    out: Path,
    settings: DistilSettings | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> DistilReport:
    """Train OUT's head on the index's encoder to score as `teacher` does."""
    settings = settings or DistilSettings()
    scored, model = teacher_scores(index_dir, teacher, out, settings, progress)
    started = time.perf_counter()
    images, queries = student_data(scored)
    result = distil_head(model, images, queries, out, settings.options, progress)
    student_s = time.perf_counter() - started
    pairs = sum(len(q.images) for q in queries)
    return DistilReport(result, len(queries), pairs, scored.seconds, student_s)


@dataclass(frozen=True)
class TeacherScores:
    """Every pool's teacher scores and how long scoring took (cached pairs cost nothing)."""

    pools: list[Scored]
    seconds: float


def teacher_scores(
    index_dir: Path,
    teacher: str,
    out: Path,
    settings: DistilSettings,
    progress: Callable[[Progress], None] | None = None,
) -> tuple[TeacherScores, str]:
    """The teacher's scores of the pools of the text pool, and the index's `--model` spec."""
    listed = text_pool(settings.texts_file)  # a bad --texts fails before the teacher loads
    opened = open_teacher(teacher, index_dir)
    with build_engine(index_dir) as engine:
        captions = engine.catalog.captions_by_id(engine.catalog.live_ids()).values()
        pools = itc_candidates(engine, with_captions(listed, captions), settings.rerank_k)
        model = engine.record.identity.spec
    pools = within_budget(pools, settings.budget_pairs, settings.options.seed)
    cache = TeacherCache(out / SCORES_DIR / opened.key)
    started = time.perf_counter()
    scored = score_all(opened.reranker, cache, pools, settings.batch_pairs, progress)
    return TeacherScores(scored, time.perf_counter() - started), model


def student_data(scored: TeacherScores) -> tuple[list[str], list[DistilQuery]]:
    """The image files and per-text (candidate rows, teacher logits) the training reads."""
    rows: dict[bytes, int] = {}
    queries = []
    for pool in scored.pools:
        if not pool.hits:
            continue
        images = tuple(rows.setdefault(h.path, len(rows)) for h in pool.hits)
        queries.append(DistilQuery(pool.text, images, tuple(pool.teacher)))
    return [os.fsdecode(path) for path in rows], queries
