"""`photoseek calibrate`: fit a pretrained reranker's alpha and Platt scaling on held-out pairs.

As `photoseek train` does for its own head: each unique caption's pool is the ITC top
`RERANK_K` of the pair images by the index model's cosine; alpha (of `ALPHAS`) is the one whose
fused score puts a matching image first most often, and Platt's (scale, bias) is fitted to the
fused scores of that pool. The fit is stored with the index, keyed by the checkpoint's
fingerprint, so `--threshold` cuts on a calibrated probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.errors import BadInput
from indexer.locations import TOWERS_DIR
from indexer.media import decode as decoding
from indexer.media.discovery import extension
from indexer.models.model_files import RERANK_K
from indexer.towers.spec import TowersSpec
from indexer.training.pairs import read_pairs
from search.encoders.towers import ImageEncoder, TextEncoder
from search.hits import Hit
from search.rerank.cross_encoder import read_candidate
from search.rerank.fusion import Fusion
from search.rerank.kinds import open_reranker, write_fusion

ALPHAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # the grid `photoseek train` searches


@dataclass(frozen=True)
class Calibrated:
    """What `calibrate` fitted and where it stored it."""

    fusion: Fusion
    pairs: int
    recall_at_1: float
    path: Path


def calibrate(index_dir: Path, spec: str, pairs_file: Path, rerank_k: int = RERANK_K) -> Calibrated:
    """Fit and store alpha + Platt for reranker `spec` on the pairs in `pairs_file`."""
    rows = read_pairs(pairs_file)
    images = list(dict.fromkeys(r.image for r in rows))
    captions = list(dict.fromkeys(r.caption for r in rows))
    if len(images) < 2:
        raise BadInput(f"{pairs_file}: calibration needs pairs with at least 2 images")
    matches = {(images.index(r.image), captions.index(r.caption)) for r in rows}
    itc = _itc(index_dir, images, captions)  # [captions, images]
    opened = open_reranker(spec, index_dir)
    pool = np.argsort(-itc, axis=1, kind="stable")[:, : min(rerank_k, len(images))]
    logits = np.zeros(pool.shape)
    for q, caption in enumerate(captions):
        hits = [Hit(int(j), bytes(images[j]), float(itc[q, j]), None, None, None) for j in pool[q]]
        candidates = [c for c in map(read_candidate, hits) if c is not None]
        kept, scores = opened.reranker.logits(caption, candidates)
        if len(kept) != len(hits):
            raise BadInput(f"{pairs_file}: some images of the pairs cannot be read")
        logits[q] = scores
    labels = np.array([[(j, q) in matches for j in row] for q, row in enumerate(pool)], float)
    scale = opened.reranker.fusion.logit_scale
    itc_pool = np.take_along_axis(itc, pool, axis=1) * scale
    alpha, r1 = _best_alpha(logits, itc_pool, labels)
    platt = _fit_platt((logits + alpha * itc_pool).reshape(-1), labels.reshape(-1))
    fusion = Fusion(alpha, scale, platt)
    path = write_fusion(index_dir, opened.checkpoint, fusion, len(rows))
    return Calibrated(fusion, len(rows), r1, path)


def _itc(index_dir: Path, images: list[Path], captions: list[str]) -> np.ndarray:
    """Cosines of each caption against each image, by the index model's ONNX towers."""
    towers = index_dir / TOWERS_DIR
    size = TowersSpec.read(towers).image.size
    pixels = []
    for image in images:
        ext = extension(bytes(image))
        pixels.append(decoding.decode(decoding.read_image(image, ext), ext, size).pixels)
    image_vectors = ImageEncoder(towers).encode(np.stack(pixels))
    return TextEncoder(towers).encode(captions) @ image_vectors.T


def _best_alpha(logits: np.ndarray, itc: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The alpha of ALPHAS whose fused score ranks a matching image first most often."""
    best = (-1.0, 0.0)
    for alpha in ALPHAS:
        first = (logits + alpha * itc).argmax(axis=1)
        r1 = float(labels[np.arange(len(labels)), first].mean())
        if r1 > best[0] + 1e-9:
            best = (r1, alpha)
    return best[1], best[0]


def _fit_platt(fused: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    import torch

    from indexer.models.itm_head import fit_platt

    return fit_platt(torch.from_numpy(fused), torch.from_numpy(labels))
