"""BLIP's ITM head, with the image side run apart so its output can be cached per image.

`BlipForImageTextRetrieval` runs `vision_model` on the pixels, then `text_encoder` over the
text with the vision output as cross-attention states, then `itm_head` on the first token;
splitting it there gives the same logits as the full forward (a test holds it to that). The
text side runs through `search.rerank.blip_text`, which computes the same cross-attention
with 0.45 of its multiply-adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from search.rerank.backend import HfScorer, match_minus_no_match
from search.rerank.blip_text import itm_logits


class BlipScorer(HfScorer):
    """`BlipForImageTextRetrieval` with `use_itm_head`: logit[match] - logit[no match]."""

    model_class = "BlipForImageTextRetrieval"
    batch = 16

    def pair_logits(self, inputs: dict[str, Any]) -> Any:
        """transformers' own full forward (what the explain tests hook into)."""
        return match_minus_no_match(self.model(**inputs, use_itm_head=True).itm_score)

    def logits(self, text: str, images: Sequence[Image.Image]) -> np.ndarray:
        with self.running():
            return self._text_side(text, self._vision_states(images)).float().cpu().numpy()

    def vision(self, images: Sequence[Image.Image]) -> np.ndarray:
        with self.running():
            return self._vision_states(images).float().cpu().numpy()

    def logits_from_vision(self, text: str, vision: np.ndarray) -> np.ndarray:
        states = self.torch.from_numpy(np.ascontiguousarray(vision))
        with self.running():
            return self._text_side(text, states).float().cpu().numpy()

    def _vision_states(self, images: Sequence[Image.Image]) -> Any:
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        model = self.inference_model()
        return model.vision_model(pixel_values=pixels.to(self.device)).last_hidden_state

    def _text_side(self, text: str, states: Any) -> Any:
        encoded = self.processor(text=[text], return_tensors="pt", truncation=True)
        # in the dtype the matmuls read, once: autocast would cast them in every layer
        dtype = self.torch.bfloat16 if self.precision == "bf16" else self.torch.float32
        states = states.to(self.device, dtype)
        return itm_logits(self.inference_model(), encoded["input_ids"].to(self.device), states)
