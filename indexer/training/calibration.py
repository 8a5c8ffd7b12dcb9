"""The fused score's alpha and its Platt calibration, fitted on held-out pairs.

The probability a reranked query reports (`itm_prob`) calibrates the *fused* score the results
are ordered by, so it never disagrees with the order and `--threshold` cuts the ranking at one
place. It is fitted on the candidates a query reranks by default: the ITC top `RERANK_K` of
each held-out caption (whatever pool the alpha search used), so it means "the chance that this
candidate of a default `--rerank` query matches the text".
"""

from __future__ import annotations

import numpy as np
import torch

from indexer.models.itm_head import fit_platt
from indexer.models.model_files import RERANK_K
from indexer.training.scoring import encode_images, encode_texts, itm_logits
from indexer.training.trained import Trained

ALPHAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


@torch.no_grad()
def calibrate(
    trained: Trained,
    pixels: torch.Tensor,
    captions: list[str],
    rerank_k: int,
    autocast: torch.dtype | None,
) -> tuple[float, tuple[float, float]]:
    """Alpha (best text->image R@1 after reranking the ITC top `rerank_k`) and Platt's
    (scale, bias) of the fused score over the ITC top `RERANK_K`, on the held-out pairs
    (`pixels`, `captions`)."""
    if len(captions) < 2:
        return 1.0, (1.0, 0.0)
    images = encode_images(trained, pixels, autocast=autocast)
    unique = list(dict.fromkeys(captions))
    texts = encode_texts(trained, unique, autocast=autocast)
    relevant = [{i for i, c in enumerate(captions) if c == u} for u in unique]
    itc = texts.embeddings @ images.embeddings.T
    # One pool for both fits: the first `rerank_k` columns are the alpha search's candidates.
    top = itc.argsort(dim=1, descending=True)[:, : min(max(rerank_k, RERANK_K), len(captions))]
    q = torch.arange(len(unique))[:, None].expand_as(top).reshape(-1)
    logits = itm_logits(trained.head, texts, q, images, top.reshape(-1), autocast=autocast)
    itc_logits = float(trained.model.logit_scale.exp()) * itc.gather(1, top)
    pool = (logits.view_as(top), itc_logits, top)
    logits_k, itc_k, top_k = (part[:, :rerank_k] for part in pool)
    alpha = _best_alpha(logits_k, itc_k, top_k, relevant)
    labels = torch.tensor(
        [[c in rel for c in row] for row, rel in zip(top.tolist(), relevant, strict=True)]
    ).float()
    fused = pool[0] + alpha * pool[1]
    return alpha, fit_platt(fused[:, :RERANK_K].reshape(-1), labels[:, :RERANK_K].reshape(-1))


def _best_alpha(
    logits: torch.Tensor, itc_logits: torch.Tensor, top: torch.Tensor, relevant: list[set[int]]
) -> float:
    """The alpha of ALPHAS whose fused score puts a relevant image first most often."""
    best = (-1.0, 1.0)
    for alpha in ALPHAS:
        fused = logits + alpha * itc_logits
        first = top.gather(1, fused.argmax(dim=1, keepdim=True)).squeeze(1).tolist()
        r1 = float(np.mean([f in rel for f, rel in zip(first, relevant, strict=True)]))
        if r1 > best[0] + 1e-9:
            best = (r1, alpha)
    return best[1]
