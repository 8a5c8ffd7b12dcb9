"""Each text's candidates: the index's ITC top-k, exactly what the head reranks at query time.

The engine finds them (its text tower, vector store and live view), so the student learns on
the pools it will see. An edit of a text (a hard negative) is scored against the pool of the
text it was made from: the images it must *not* match best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from search.distil.texts import edits
from search.engine import Engine
from search.hits import Hit


@dataclass(frozen=True)
class TextCandidates:
    """One text to score and the images it is scored against."""

    text: str
    hits: list[Hit]
    edit_of: str | None = None  # the text this one is an edit of


def itc_candidates(
    engine: Engine, texts: Sequence[str], k: int, with_edits: bool = True, batch: int = 256
) -> list[TextCandidates]:
    """Each text with its ITC top-`k`, followed by its edits over the same images."""
    out: list[TextCandidates] = []
    for start in range(0, len(texts), batch):
        chunk = list(texts[start : start + batch])
        vectors = engine.encode_texts(chunk)
        for text, vector in zip(chunk, vectors, strict=True):
            hits = engine.search_vector(vector, k)
            if not hits:
                continue
            out.append(TextCandidates(text, hits))
            if with_edits:
                out += [TextCandidates(e, hits, text) for e in edits(text)]
    return out


def within_budget(
    pools: list[TextCandidates], budget_pairs: int | None, seed: int
) -> list[TextCandidates]:
    """Whole texts (each with its edits), in a seeded random order, until `budget_pairs`
    (image, text) pairs are reached; all of them without a budget."""
    if budget_pairs is None:
        return pools
    families: dict[str, list[TextCandidates]] = {}
    for pool in pools:
        families.setdefault(pool.edit_of or pool.text, []).append(pool)
    names = list(families)
    kept: list[TextCandidates] = []
    pairs = 0
    for i in np.random.default_rng([seed, 3]).permutation(len(names)):
        if pairs >= budget_pairs:
            break
        family = families[names[i]]
        kept += family
        pairs += sum(len(p.hits) for p in family)
    return kept
