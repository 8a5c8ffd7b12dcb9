"""BLIP's ITM head, with the image side run apart so its output can be cached per image.

`BlipForImageTextRetrieval` runs `vision_model` on the pixels, then `text_encoder` over the
text with the vision output as cross-attention states, then `itm_head` on the first token;
splitting it there gives the same logits as the full forward (a test holds it to that).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from search.rerank.backend import HfScorer, match_minus_no_match


class BlipScorer(HfScorer):
    """`BlipForImageTextRetrieval` with `use_itm_head`: logit[match] - logit[no match]."""

    model_class = "BlipForImageTextRetrieval"
    batch = 16

    def pair_logits(self, inputs: dict[str, Any]) -> Any:
        return match_minus_no_match(self.model(**inputs, use_itm_head=True).itm_score)

    def vision(self, images: Sequence[Image.Image]) -> np.ndarray:
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        with self.running():
            output = self.model.vision_model(pixel_values=pixels.to(self.device))
            return output.last_hidden_state.float().cpu().numpy()

    def logits_from_vision(self, text: str, vision: np.ndarray) -> np.ndarray:
        torch = self.torch
        encoded = self.processor(text=[text], return_tensors="pt", truncation=True)
        n = len(vision)
        ids = encoded["input_ids"].to(self.device).expand(n, -1)
        mask = encoded["attention_mask"].to(self.device).expand(n, -1)
        with self.running():
            states = torch.from_numpy(np.ascontiguousarray(vision)).to(self.device)
            states = states.to(self.model.dtype)
            states_mask = torch.ones(states.shape[:-1], dtype=torch.long, device=self.device)
            text_out = self.model.text_encoder(
                input_ids=ids, attention_mask=mask,
                encoder_hidden_states=states, encoder_attention_mask=states_mask,
            )  # fmt: skip
            two_way = self.model.itm_head(text_out.last_hidden_state[:, 0, :])
            return match_minus_no_match(two_way).float().cpu().numpy()
