"""ViLT's image-and-text retrieval head: one score per pair, single stream (nothing to cache)."""

from __future__ import annotations

from typing import Any

from search.rerank.backend import HfScorer


class ViltScorer(HfScorer):
    """`ViltForImageAndTextRetrieval`: its single score is the match log-odds as it is."""

    model_class = "ViltForImageAndTextRetrieval"

    def pair_logits(self, inputs: dict[str, Any]) -> Any:
        return self.inference_model()(**inputs).logits[:, 0]
