"""Rerank ITC candidates with the ITM head trained beside the index's model.

Final score, as BLIP fuses them: ``itm_logit + alpha * logit_scale * itc_cosine`` (alpha chosen
at training time on held-out pairs). `itm_prob` is the head's calibrated match probability
(Platt scaling fitted on held-out pairs), the score `--threshold` cuts on when reranking: a
meaningful "no good match" line. Reranking reorders the ITC top-k; it never changes which
candidates are in it.

The head reads the index's stored per-image tokens (written at index time when the model has a
head) and the query's text token features. Both the text tower and the head run from the ONNX
export in the index, so reranking never imports torch and needs no model files.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from indexer.errors import BadInput
from search.encoders.towers import HeadScorer, TextEncoder
from search.hits import Hit


class Reranker:
    """Rescores an engine's candidates for one text with the exported ITM head."""

    def __init__(self, text: TextEncoder, head: HeadScorer) -> None:
        self.text = text
        self.head = head

    def rerank(self, tokens_by_id, text: str, hits: list[Hit]) -> list[Hit]:  # noqa: ANN001
        """`hits` rescored against `text`, best fused score first, with itm_prob/itc_score.

        `tokens_by_id` maps catalog ids to stored tokens (`Catalog.tokens_by_id`).
        """
        if not hits:
            return []
        spec = self.head.rerank
        stored = tokens_by_id([h.id for h in hits])
        if len(stored) != len(hits):
            raise BadInput("this index has no ITM tokens for some images; run `photoseek index`")
        shape = (spec.stored_tokens, spec.store_dim)
        images = np.stack([stored[h.id].reshape(shape) for h in hits])
        logits = self.head.logits(*self.text.encode_tokens(text), images)
        probabilities = self.head.probability(logits)
        rescored = []
        for hit, logit, probability in zip(
            hits, logits.tolist(), probabilities.tolist(), strict=True
        ):
            fused = logit + spec.alpha * spec.logit_scale * hit.score
            extra = {"itm_prob": probability, "itc_score": hit.score, "itm_logit": logit}
            rescored.append(replace(hit, score=fused, extra=extra))
        return sorted(rescored, key=lambda h: -h.score)
