"""The fused score's alpha and the head's Platt calibration, fitted on held-out pairs."""

from __future__ import annotations

import numpy as np
import torch

from indexer.models.itm_head import fit_platt
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
    (scale, bias), both on the held-out pairs (`pixels`, `captions`)."""
    if len(captions) < 2:
        return 1.0, (1.0, 0.0)
    images = encode_images(trained, pixels, autocast=autocast)
    unique = list(dict.fromkeys(captions))
    texts = encode_texts(trained, unique, autocast=autocast)
    relevant = [{i for i, c in enumerate(captions) if c == u} for u in unique]
    itc = texts.embeddings @ images.embeddings.T
    k = min(rerank_k, len(captions))
    top = itc.argsort(dim=1, descending=True)[:, :k]
    q = torch.arange(len(unique))[:, None].expand_as(top).reshape(-1)
    logits = itm_logits(trained.head, texts, q, images, top.reshape(-1), autocast=autocast)
    logits = logits.view_as(top)
    scale = float(trained.model.logit_scale.exp())
    best = (-1.0, 1.0)
    for alpha in ALPHAS:
        fused = logits + alpha * scale * itc.gather(1, top)
        first = top.gather(1, fused.argmax(dim=1, keepdim=True)).squeeze(1).tolist()
        r1 = float(np.mean([f in rel for f, rel in zip(first, relevant, strict=True)]))
        if r1 > best[0] + 1e-9:
            best = (r1, alpha)
    labels = torch.tensor(
        [[c in rel for c in row] for row, rel in zip(top.tolist(), relevant, strict=True)]
    ).float()
    return best[1], fit_platt(logits.reshape(-1), labels.reshape(-1))
