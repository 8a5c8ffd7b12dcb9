"""The fused score and match probability every reranker reports, from its ITM logits.

fused = itm_logit + alpha * logit_scale * itc_cosine (BLIP's fusion). Calibrated (Platt fitted
on held-out pairs), itm_prob = sigmoid(scale * fused + bias); uncalibrated, alpha is 0 and
itm_prob = sigmoid(itm_logit). Either way itm_prob is monotone in the order the hits come
back in, so `--threshold` on it cuts the ranking at one place.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from search.hits import Hit

# The ITC logit scale of pretrained CLIP models (open_clip clamps it there); a plain index
# records none, and calibration fits alpha against it.
CLIP_LOGIT_SCALE = 100.0


@dataclass(frozen=True)
class Fusion:
    """How ITM logits and ITC cosines become the fused score and its probability."""

    alpha: float = 0.0
    logit_scale: float = CLIP_LOGIT_SCALE
    platt: tuple[float, float] | None = None  # None: not calibrated, itm_prob = sigmoid(logit)

    @property
    def calibrated(self) -> bool:
        return self.platt is not None


def fuse(hits: list[Hit], logits: np.ndarray, fusion: Fusion) -> list[Hit]:
    """`hits` with the fused score and the rerank fields, best fused score first."""
    logits = np.asarray(logits, dtype=np.float64)
    cosines = np.array([h.score for h in hits], dtype=np.float64)
    fused = logits + fusion.alpha * fusion.logit_scale * cosines
    probabilities = match_probability(fused, fusion.platt or (1.0, 0.0))
    rescored = [
        replace(
            hit,
            score=score,
            extra={
                "itm_logit": x,
                "itm_prob": p,
                "itc_score": hit.score,
                "calibrated": fusion.calibrated,
            },
        )
        for hit, score, p, x in zip(
            hits, fused.tolist(), probabilities.tolist(), logits.tolist(), strict=True
        )
    ]
    return sorted(rescored, key=lambda h: -h.score)


def match_probability(fused: np.ndarray, platt: tuple[float, float]) -> np.ndarray:
    """sigmoid(scale * fused + bias), without overflow for any score (a bare exp overflows)."""
    scale, bias = platt
    with np.errstate(over="ignore"):  # an absurd score becomes ±inf, which maps to 1 or 0
        z = scale * np.asarray(fused, dtype=np.float64) + bias
    small = np.exp(-np.abs(z))  # in [0, 1]: exp of a non-positive number never overflows
    return np.where(z >= 0, 1.0 / (1.0 + small), small / (1.0 + small))
