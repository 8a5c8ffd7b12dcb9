"""FLAVA's ITM head over `FlavaModel`'s multimodal encoder (two-way, run per pair).

The checkpoints (e.g. facebook/flava-full) are `FlavaForPreTraining`; only its `flava` model
and `itm_head` run here, on unmasked text, which is what its pretraining forward computes for
ITM when the text is not masked.
"""

from __future__ import annotations

from typing import Any

from search.rerank.backend import HfScorer, match_minus_no_match


class FlavaScorer(HfScorer):
    """`FlavaModel` + `FlavaITMHead`: logit[match] - logit[no match]."""

    model_class = "FlavaForPreTraining"

    def pair_logits(self, inputs: dict[str, Any]) -> Any:
        model = self.inference_model()
        output = model.flava(**inputs, return_dict=True)
        return match_minus_no_match(model.itm_head(output.multimodal_embeddings))
