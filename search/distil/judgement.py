"""A teacher opened for distillation: the reranker whose scores are the targets, and the key
its cached scores are filed under.

The targets are the log-odds of the match probability the teacher reports, in the order it
ranks by. A photoseek model folder ranks by its fused score, its head's logit plus its own
alpha times its own ITC logit, and its Platt scaling turns that into its match probability:
its head's logit alone is a different and weaker ranking (the shipped demo model's head alone
puts a held-out caption's image first 47 % of the time, its fused score 72 %), and the fused
score itself is no log-odds (on the shapes gallery it is large for nearly every pair, so its
sigmoid says "match" to all). Any other reranker is distilled from its logits, as `--reranker
SPEC` ranks by them uncalibrated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from search.rerank.cross_encoder import CrossEncoderReranker
from search.rerank.fusion import Fusion
from search.rerank.kinds import open_reranker
from search.rerank.photoseek_model import PhotoseekScorer, is_model_folder, resolve_folder


@dataclass(frozen=True)
class Teacher:
    """The reranker to distil and the cache key of its scores."""

    reranker: CrossEncoderReranker
    key: str  # the checkpoint's fingerprint, marked with what its scores are


class FusedPhotoseekScorer(PhotoseekScorer):
    """A photoseek model folder's calibrated log-odds: Platt's scale x fused + bias, where the
    fused score is head logit + alpha x ITC logit, both from its own towers (what `search
    --rerank` ranks by and reports as its match probability with that model)."""

    def logits(self, text: str, images: Sequence[Image.Image]) -> np.ndarray:
        from indexer.training.scoring import encode_texts

        head = super().logits(text, images)
        embeddings = self.torch.stack([e for e, _ in self._encoded(images)])  # the memo's
        text_embedding = encode_texts(self.trained, [text]).embeddings[0]
        cosine = (embeddings.float() @ text_embedding.float()).numpy().astype(np.float64)
        itc_scale = float(self.trained.model.logit_scale.detach().exp())
        fused = head + self.trained.alpha * itc_scale * cosine
        scale, bias = (float(x) for x in self.trained.head.platt.tolist())
        return scale * fused + bias


def open_teacher(spec: str, index_dir: Path) -> Teacher:
    """The teacher `spec` names (anything `--reranker` accepts), for the index `index_dir`."""
    if is_model_folder(spec):
        checkpoint = resolve_folder(spec)
        scorer = FusedPhotoseekScorer(checkpoint.folder)
        return Teacher(
            CrossEncoderReranker(scorer, Fusion()), f"{checkpoint.fingerprint}-calibrated"
        )
    opened = open_reranker(spec, index_dir)
    return Teacher(opened.reranker, opened.checkpoint.fingerprint)
