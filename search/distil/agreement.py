"""How closely a student head ranks as its teacher does, on the index's own candidates.

For each text, the student is the index's reranked query (the ITM head from the ONNX export,
its fused score over the ITC top-k) and the teacher scores the same candidates; agreement is
Spearman's rank correlation over them, averaged over the texts, and the share of texts whose
first candidate is the same for both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from indexer.models.model_files import RERANK_K
from indexer.progress import Progress
from search.distil.candidates import TextCandidates
from search.distil.judgement import open_teacher
from search.distil.teacher import score_all
from search.distil.teacher_cache import TeacherCache
from search.distil.texts import text_pool
from search.query import Term
from search.rerank.kinds import RERANK_DIR
from search.wiring import build_engine


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two score vectors (ties share their mean rank; 0 when
    either is constant)."""
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    norm = float(np.sqrt((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / norm) if norm > 0 else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):  # ties: their mean rank
        same = x == value
        ranks[same] = ranks[same].mean()
    return ranks


def agreement(students: list[np.ndarray], teachers: list[np.ndarray]) -> dict[str, float]:
    """Mean Spearman and top-1 agreement over the texts with at least two candidates."""
    pairs = [(s, t) for s, t in zip(students, teachers, strict=True) if len(s) > 1]
    if not pairs:
        return {"spearman": 0.0, "top1": 0.0, "texts": 0}
    rho = [spearman(s, t) for s, t in pairs]
    top1 = [int(np.argmax(s)) == int(np.argmax(t)) for s, t in pairs]
    return {"spearman": float(np.mean(rho)), "top1": float(np.mean(top1)), "texts": len(pairs)}


def index_agreement(
    index_dir: Path,
    teacher: str,
    texts_file: Path | None = None,
    rerank_k: int = RERANK_K,
    progress: Callable[[Progress], None] | None = None,
) -> dict[str, float]:
    """Agreement of the index's head with `teacher` on each text's ITC top-`rerank_k`; the
    teacher's scores are cached under the index's rerank/teacher/<teacher key>/."""
    texts = text_pool(texts_file)
    opened = open_teacher(teacher, index_dir)
    student: dict[str, dict[int, float]] = {}
    pools = []
    with build_engine(index_dir) as engine:
        for text in texts:
            hits = engine.search([Term(text=text)], k=rerank_k, rerank_k=rerank_k)
            student[text] = {h.id: h.score for h in hits}
            pools.append(TextCandidates(text, hits))
    cache = TeacherCache(index_dir / RERANK_DIR / "teacher" / opened.key)
    scored = score_all(opened.reranker, cache, pools, progress=progress)
    students = [np.array([student[p.text][h.id] for h in p.hits]) for p in scored]
    return agreement(students, [np.array(p.teacher) for p in scored])
