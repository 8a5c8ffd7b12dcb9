"""Scoring with a trained encoder + head: embeddings, stored tokens, ITM logits and rerank."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from indexer.models.itm_head import ItmHead, image_features_and_tokens, text_features_and_tokens
from indexer.models.pixels import standardise
from indexer.training.data import tokenize
from indexer.training.precision import autocasting
from indexer.training.trained import Trained


@dataclass
class EncodedImages:
    """A gallery as the index holds it: normalised ITC embeddings and stored head tokens, on
    the CPU (rankings are computed there; `itm_logits` moves what the head reads)."""

    embeddings: torch.Tensor  # [N, E] float32
    tokens: torch.Tensor  # [N, P', d] float16


@dataclass
class EncodedTexts:
    """Captions or queries: normalised ITC embeddings and the head's token inputs (on the CPU)."""

    embeddings: torch.Tensor  # [Q, E] float32
    tokens: torch.Tensor  # [Q, T, Dt]
    mask: torch.Tensor  # [Q, T]


@torch.no_grad()
def encode_images(
    trained: Trained, pixels: torch.Tensor, batch: int = 256, autocast: torch.dtype | None = None
) -> EncodedImages:
    """Embed uint8 pixels [N, 3, S, S] and produce their stored (fp16) head tokens."""
    embs, toks = [], []
    for s in range(0, len(pixels), batch):
        x = standardise(pixels[s : s + batch].to(trained.device), trained.mean, trained.std)
        with autocasting(trained.device, autocast):
            emb, patches = image_features_and_tokens(trained.model, x)
            stored = trained.head.compact_image_tokens(patches, emb)
        embs.append(F.normalize(emb.float(), dim=-1).cpu())
        toks.append(stored.to(torch.float16).cpu())
    return EncodedImages(torch.cat(embs), torch.cat(toks))


@torch.no_grad()
def encode_texts(
    trained: Trained, texts: Sequence[str], batch: int = 512, autocast: torch.dtype | None = None
) -> EncodedTexts:
    """Embed captions and keep their token features for the head (padded to one length)."""
    embs, toks, masks = [], [], []
    for s in range(0, len(texts), batch):
        ids = tokenize(trained.tokenizer, texts[s : s + batch], trained.device)
        with autocasting(trained.device, autocast):
            emb, tokens, mask = text_features_and_tokens(trained.model, ids)
        embs.append(F.normalize(emb.float(), dim=-1).cpu())
        toks.append(tokens.float().cpu())
        masks.append(mask.cpu())
    length = max(t.shape[1] for t in toks)
    toks = [F.pad(t, (0, 0, 0, length - t.shape[1])) for t in toks]
    masks = [F.pad(m, (0, length - m.shape[1]), value=False) for m in masks]
    return EncodedTexts(torch.cat(embs), torch.cat(toks), torch.cat(masks))


@torch.no_grad()
def itm_logits(
    head: ItmHead,
    texts: EncodedTexts,
    text_index: torch.Tensor,
    images: EncodedImages,
    image_index: torch.Tensor,
    batch: int = 4096,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """ITM logits for the pairs (texts[text_index[i]], images[image_index[i]])."""
    device = head.out.weight.device
    out = []
    for s in range(0, len(text_index), batch):
        t, i = text_index[s : s + batch], image_index[s : s + batch]
        distinct, inverse = torch.unique(i, return_inverse=True)
        with autocasting(device, autocast):
            logits = head(
                texts.tokens[t].to(device),
                texts.mask[t].to(device),
                images.tokens[distinct].to(device),
                inverse.to(device),
            )
        out.append(logits.float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def rerank(
    itc: torch.Tensor, k: int, score: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Full rankings [Q, N] whose first k are the ITC top-k reordered by `score`.

    `score` gets the top-k candidate indices [Q, k] and returns their scores [Q, k]; only
    the order inside the top-k changes, never which candidates are in it.
    """
    k = min(k, itc.shape[1])
    order = itc.argsort(dim=1, descending=True, stable=True)
    top = order[:, :k]
    reordered = top.gather(1, score(top).argsort(dim=1, descending=True, stable=True))
    return torch.cat([reordered, order[:, k:]], dim=1)


def fused_scorer(
    trained: Trained,
    queries: EncodedTexts | EncodedImages,
    gallery: EncodedTexts | EncodedImages,
    itc: torch.Tensor,
    alpha: float,
    autocast: torch.dtype | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A `rerank` score function: ITM logit + alpha * ITC logit (cosine * logit scale).

    Either text queries over an image gallery or image queries over a text gallery.
    """
    scale = float(trained.model.logit_scale.detach().exp())
    if isinstance(queries, EncodedTexts) and isinstance(gallery, EncodedImages):
        texts, images, text_side = queries, gallery, True
    elif isinstance(queries, EncodedImages) and isinstance(gallery, EncodedTexts):
        texts, images, text_side = gallery, queries, False
    else:
        raise TypeError("fused_scorer needs texts against images or images against texts")

    def score(top: torch.Tensor) -> torch.Tensor:
        q = torch.arange(top.shape[0])[:, None].expand_as(top).reshape(-1)
        g = top.reshape(-1)
        t_index, i_index = (q, g) if text_side else (g, q)
        logits = itm_logits(trained.head, texts, t_index, images, i_index, autocast=autocast)
        return logits.view_as(top) + alpha * scale * itc.gather(1, top)

    return score
