"""Rerank ITC candidates with the ITM head trained beside the index's model.

The contract of a reranked query (`Engine.search(..., rerank_k=R)`), for every reranker:

- Rescored: the ITC top max(k, R) of the images that pass the filters (the pool).
- Score: ``itm_logit + alpha * logit_scale * itc_cosine``, as BLIP fuses them (alpha chosen at
  training time on held-out pairs).
- Returned: the best k of the pool by that fused score, best first, so an image outside the
  ITC top-k can enter the result (that is what reranking is for); with R ≤ k the result holds
  the ITC top-k reordered.
- `itm_prob`: the calibrated probability that the image matches the text, Platt scaling of the
  fused score fitted on held-out pairs over the ITC top `RERANK_K` (the default R). It is
  monotone in the fused score, so it never disagrees with the order, and `--threshold` on it
  cuts the ranking at one place. `itc_score` and `itm_logit` are the two parts; `calibrated`
  says whether a Platt fit stands behind `itm_prob` (always, for this head).

The head reads the index's stored per-image tokens (written at index time when the model has a
head) and the query's text token features. Both the text tower and the head run from the ONNX
export in the index, so reranking never imports torch and needs no model files.
"""

from __future__ import annotations

import numpy as np

from indexer.errors import BadInput
from search.encoders.towers import HeadScorer, TextEncoder
from search.hits import Hit
from search.rerank.fusion import Fusion, fuse, match_probability
from search.rerank.protocol import TokensById

__all__ = ["HeadReranker", "match_probability"]


class HeadReranker:
    """Rescores an engine's candidates for one text with the exported ITM head."""

    def __init__(self, text: TextEncoder, head: HeadScorer) -> None:
        self.text = text
        self.head = head

    def rerank(self, tokens_by_id: TokensById, text: str, hits: list[Hit]) -> list[Hit]:
        """All of `hits` rescored against `text`, best fused score first, with itm_prob,
        itc_score, itm_logit and calibrated; the caller keeps the best k."""
        if not hits:
            return []
        spec = self.head.rerank
        stored = tokens_by_id([h.id for h in hits])
        if len(stored) != len(hits):
            raise BadInput("this index has no ITM tokens for some images; run `photoseek index`")
        shape = (spec.stored_tokens, spec.store_dim)
        images = np.stack([stored[h.id].reshape(shape) for h in hits])
        logits = self.head.logits(*self.text.encode_tokens(text), images)
        return fuse(hits, logits, Fusion(spec.alpha, spec.logit_scale, spec.platt))
