"""BridgeTower's image-and-text retrieval head (two-way, run per pair)."""

from __future__ import annotations

from typing import Any

from search.rerank.backend import HfScorer, match_minus_no_match


class BridgeTowerScorer(HfScorer):
    """`BridgeTowerForImageAndTextRetrieval`: logit[match] - logit[no match]."""

    model_class = "BridgeTowerForImageAndTextRetrieval"

    def pair_logits(self, inputs: dict[str, Any]) -> Any:
        return match_minus_no_match(self.inference_model()(**inputs).logits)
