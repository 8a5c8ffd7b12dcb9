"""A reranker over a pretrained transformers ITM model: it reads the candidates' files.

Images go through photoseek's decoder (orientation, formats, bomb limits), then the model's
own processor. A candidate whose file cannot be read now is left out with a logged reason; the
others are still scored. With a `SplitScorer` (BLIP) and a cache, each image's vision output is
computed once and read back after.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image

from indexer.errors import UnreadableImage
from indexer.media import decode as decoding
from indexer.media.discovery import extension
from search.hits import Hit
from search.rerank.backend import PairScorer, SplitScorer
from search.rerank.fusion import Fusion, fuse
from search.rerank.protocol import TokensById
from search.rerank.vision_cache import VisionCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A candidate's file, read: its hit, bytes and content hash."""

    hit: Hit
    data: bytes
    digest: str


def read_candidate(hit: Hit) -> Candidate | None:
    """The candidate's file bytes, or None (logged) when it cannot be read now."""
    try:
        data = decoding.read_image(hit.path, extension(hit.path))
    except (OSError, UnreadableImage) as e:
        log.warning("%s: %s", hit.path.decode(errors="replace"), e)
        return None
    return Candidate(hit, data, hashlib.sha256(data).hexdigest()[:32])


class CrossEncoderReranker:
    """Rescores candidates with a transformers ITM model (see `search.rerank.head`)."""

    def __init__(
        self, scorer: PairScorer, fusion: Fusion, cache: VisionCache | None = None
    ) -> None:
        self.scorer = scorer
        self.fusion = fusion
        self.cache = cache if isinstance(scorer, SplitScorer) else None

    def rerank(self, tokens_by_id: TokensById, text: str, hits: list[Hit]) -> list[Hit]:
        candidates = [c for c in map(read_candidate, hits) if c is not None]
        kept, logits = self.logits(text, candidates)
        return fuse([c.hit for c in kept], logits, self.fusion) if kept else []

    def logits(self, text: str, candidates: list[Candidate]) -> tuple[list[Candidate], np.ndarray]:
        """The candidates that decoded and their match log-odds, in batches of the scorer's;
        byte-identical files (copies of one photo) are scored once."""
        kept, logits = self._distinct_logits(text, list({c.digest: c for c in candidates}.values()))
        by_digest = dict(zip((c.digest for c in kept), logits.tolist(), strict=True))
        kept = [c for c in candidates if c.digest in by_digest]
        return kept, np.array([by_digest[c.digest] for c in kept], dtype=logits.dtype)

    def _distinct_logits(
        self, text: str, candidates: list[Candidate]
    ) -> tuple[list[Candidate], np.ndarray]:
        kept: list[Candidate] = []
        parts: list[np.ndarray] = []
        for start in range(0, len(candidates), self.scorer.batch):
            batch = candidates[start : start + self.scorer.batch]
            if self.cache is not None:
                vision, ok = self.vision(batch)
                if ok:
                    assert isinstance(self.scorer, SplitScorer)
                    parts.append(self.scorer.logits_from_vision(text, vision))
                kept += ok
                continue
            ok, images = self._decoded(batch)
            if ok:
                parts.append(self.scorer.logits(text, images))
            kept += ok
        return kept, np.concatenate(parts) if parts else np.zeros(0)

    def vision(self, batch: list[Candidate]) -> tuple[np.ndarray, list[Candidate]]:
        """The batch's vision outputs, from the cache where present, computed and stored
        otherwise; with the candidates they belong to."""
        assert self.cache is not None and isinstance(self.scorer, SplitScorer)
        cached = {c.digest: self.cache.get(c.digest) for c in batch}
        missing = list({c.digest: c for c in batch if cached[c.digest] is None}.values())
        ok, images = self._decoded(missing)
        if ok:
            for c, array in zip(ok, self.scorer.vision(images), strict=True):
                self.cache.put(c.digest, array)
                cached[c.digest] = array
        kept = [c for c in batch if cached[c.digest] is not None]
        arrays = [cached[c.digest] for c in kept]
        return (np.stack(arrays) if arrays else np.zeros(0)), kept  # type: ignore[arg-type]

    def _decoded(self, batch: list[Candidate]) -> tuple[list[Candidate], list[Image.Image]]:
        ok, images = [], []
        for c in batch:
            try:
                images.append(decoding.load_rgb(c.data, extension(c.hit.path),
                                                self.scorer.image_size()))  # fmt: skip
            except UnreadableImage as e:
                log.warning("%s: %s", c.hit.path.decode(errors="replace"), e)
                continue
            ok.append(c)
        return ok, images
