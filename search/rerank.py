"""Rerank ITC candidates with the ITM head trained beside the index's model.

Final score, as BLIP fuses them: ``itm_logit + alpha * logit_scale * itc_cosine`` (alpha chosen
at training time on held-out pairs). `itm_prob` is the head's calibrated match probability
(Platt scaling fitted on held-out pairs), the score `--threshold` cuts on when reranking: a
meaningful "no good match" line. Reranking reorders the ITC top-k; it never changes which
candidates are in it.

The head needs the index's stored per-image tokens (written at index time when the model has a
head) and the query's text token features, which the torch text tower computes: this path
imports torch, so a cold `--rerank` query pays for it once.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from indexer.errors import BadInput
from indexer.index_dir import check_model
from indexer.model_loading import HEAD_FILE, ModelSpec
from search.engine import Engine, Hit


class Reranker:
    """The trained encoder + head of an index's model folder, ready to rescore candidates."""

    def __init__(self, model_dir: Path) -> None:
        from indexer.training import load_trained

        self.trained = load_trained(model_dir)
        self.config = self.trained.head.config

    @classmethod
    def for_engine(cls, engine: Engine) -> Reranker:
        spec = ModelSpec.parse(engine.record.identity.spec)
        folder = Path(spec.name)
        if spec.kind != "local-dir" or not (folder / HEAD_FILE).is_file():
            raise BadInput(
                f"--rerank needs a model trained with an ITM head (`photoseek train`); "
                f"this index uses {engine.record.identity.spec}"
            )
        check_model(engine.catalog, spec.identity())  # the folder still holds the same model
        return cls(folder)

    def rerank(self, engine: Engine, text: str, hits: list[Hit]) -> list[Hit]:
        """`hits` rescored against `text`, best fused score first, with itm_prob/itc_score."""
        if not hits:
            return []
        import torch

        from indexer.training import EncodedImages, encode_texts, itm_logits

        stored = engine.catalog.tokens_by_id([h.id for h in hits])
        if len(stored) != len(hits):
            raise BadInput("this index has no ITM tokens for some images; run `photoseek index`")
        shape = (self.config.stored_tokens, self.config.store_dim)
        tokens = torch.from_numpy(np.stack([stored[h.id].reshape(shape) for h in hits]))
        texts = encode_texts(self.trained, [text])
        images = EncodedImages(torch.empty(0), tokens)
        index = torch.arange(len(hits))
        logits = itm_logits(self.trained.head, texts, torch.zeros_like(index), images, index)
        probabilities = self.trained.head.probability(logits)
        scale = float(self.trained.model.logit_scale.detach().exp())
        rescored = []
        for hit, logit, probability in zip(
            hits, logits.tolist(), probabilities.tolist(), strict=True
        ):
            fused = logit + self.trained.alpha * scale * hit.score
            extra = {"itm_prob": probability, "itc_score": hit.score, "itm_logit": logit}
            rescored.append(replace(hit, score=fused, extra=extra))
        return sorted(rescored, key=lambda h: -h.score)
