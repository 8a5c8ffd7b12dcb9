"""A photoseek model folder with a head as a reranker on an index of another model: its tokens
come from its own image tower on the candidates' files, never from the index."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import REPO
from indexer.media import decode as decoding
from indexer.media.discovery import extension
from indexer.training.scoring import (
    EncodedImages,
    EncodedTexts,
    encode_images,
    encode_texts,
    fused_scorer,
    itm_logits,
)
from indexer.training.trained import Trained, load_trained
from search.distil.run import DistilSettings, teacher_scores
from search.query import parse_terms
from search.rerank.cross_encoder import read_candidate
from search.rerank.kinds import open_reranker
from search.wiring import build_engine

DEMO = REPO / "data" / "demo-model"
TEXT = "a red circle left of a blue square"


def _encoded(paths: list[bytes]) -> tuple[Trained, EncodedTexts, EncodedImages]:
    """The demo model, TEXT and the files (decoded as `index` decodes) on its own towers."""
    trained = load_trained(DEMO)
    pixels = [
        decoding.decode(decoding.read_image(p, extension(p)), extension(p), trained.image_size)
        for p in paths
    ]
    chw = torch.from_numpy(np.stack([d.pixels for d in pixels])).permute(0, 3, 1, 2)
    return trained, encode_texts(trained, [TEXT]), encode_images(trained, chw.contiguous())


def _direct(paths: list[bytes]) -> np.ndarray:
    """The demo model's head on its own towers."""
    trained, texts, images = _encoded(paths)
    rows = torch.arange(len(paths))
    return itm_logits(trained.head, texts, torch.zeros_like(rows), images, rows).numpy()


def test_a_model_folder_reranks_another_models_index(distil_gallery):
    index, _, _ = distil_gallery
    with build_engine(index, reranker=str(DEMO)) as engine:
        hits = engine.search(parse_terms([TEXT]), k=6, rerank_k=6)
        candidates = engine.search_vector(engine.encode_texts([TEXT])[0], 6)
    assert len(hits) == 6 and {h.id for h in hits} == {h.id for h in candidates}
    expected = dict(zip((h.id for h in candidates), _direct([h.path for h in candidates]),
                        strict=True))  # fmt: skip
    for hit in hits:
        assert hit.extra["itm_logit"] == pytest.approx(float(expected[hit.id]), abs=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_memoised_image_tokens_score_as_fresh_ones(distil_gallery):
    index, _, _ = distil_gallery
    with build_engine(index) as engine:
        hits = engine.search_vector(engine.encode_texts([TEXT])[0], 6)
    opened = open_reranker(str(DEMO), index)
    candidates = [read_candidate(h) for h in hits]
    _, first = opened.reranker.logits(TEXT, candidates[:3])  # fills the memo with three
    _, together = opened.reranker.logits(TEXT, candidates)
    np.testing.assert_allclose(together[:3], first, atol=1e-5)
    np.testing.assert_allclose(together, _direct([h.path for h in hits]), atol=1e-4)


def test_a_model_folder_teacher_is_distilled_by_the_score_it_ranks_by(distil_gallery, tmp_path):
    """The demo model ranks by its head's logit + alpha x its own ITC logit (alpha 2) and
    reports Platt's sigmoid of that: those log-odds, not the head alone (which ranks the
    gallery's captions first 47 % of the time against the fused score's 72 %), are the
    judgement the student must learn."""
    index, _, _ = distil_gallery
    texts = tmp_path / "texts.txt"
    texts.write_text(TEXT + "\n")
    scored, _ = teacher_scores(index, str(DEMO), tmp_path / "out", DistilSettings(texts_file=texts))
    pool = next(p for p in scored.pools if p.text == TEXT)
    trained, encoded_text, images = _encoded([h.path for h in pool.hits])
    assert trained.alpha > 0 and trained.head.platt.tolist() != [1.0, 0.0]
    itc = encoded_text.embeddings @ images.embeddings.T
    fused = fused_scorer(trained, encoded_text, images, itc, trained.alpha)
    scale, bias = trained.head.platt.tolist()
    expected = scale * fused(torch.arange(len(pool.hits))[None, :])[0].numpy() + bias
    np.testing.assert_allclose(pool.teacher, expected, atol=1e-3)
