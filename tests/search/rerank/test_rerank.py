"""`search --rerank`: the ITM head rescores the ITC top-k of a real index of a trained model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_runs_without_torch, run
from indexer.datasets.shapes_world import write_dataset
from indexer.errors import BadInput
from indexer.pipeline import IndexOptions, run_index
from indexer.training.loop import train
from indexer.training.pairs import read_pairs
from search.engine import Engine
from search.query import parse_terms


@pytest.fixture(scope="module")
def trained_index(tmp_path_factory, towers_cache) -> tuple[Path, Path, list]:
    """(index, model folder, test rows): a briefly trained shapes model indexing its test set."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_CACHE_HOME", str(towers_cache))
        data = tmp_path_factory.mktemp("shapes")
        files = write_dataset(data, train_groups=24, test_groups=6, size=64, seed=0)
        rows = read_pairs(files.train_jsonl)
        model = data / "model"
        train(
            [(str(r.image), r.caption, r.negatives) for r in rows],
            model,
            epochs=1,
            batch_size=32,
            groups=[r.group for r in rows],
        )
        index = data / "index"
        run_index(index, IndexOptions(roots=(data / "test",), model=str(model)))
        return index, model, read_pairs(files.test_jsonl)


def test_rerank_reorders_only_the_top_k(trained_index):
    index, _, rows = trained_index
    with Engine.open(index) as engine:
        for row in rows[:4]:
            terms = parse_terms([row.caption])
            itc = engine.search(terms, k=8)
            reranked = engine.search(terms, k=8, rerank_k=8)
            assert {h.id for h in reranked} == {h.id for h in itc}
            assert [h.score for h in reranked] == sorted((h.score for h in reranked), reverse=True)
            for hit in reranked:
                assert 0.0 <= hit.extra["itm_prob"] <= 1.0
                assert hit.extra["itc_score"] == pytest.approx(
                    next(h.score for h in itc if h.id == hit.id), abs=1e-5
                )


def test_onnx_rerank_scores_as_the_torch_head(trained_index):
    """The exported text tokens and head give the logits and probabilities the trained torch
    head gives for the same stored tokens."""
    import torch

    from indexer.training.scoring import EncodedImages, encode_texts, itm_logits
    from indexer.training.trained import load_trained

    index, model, rows = trained_index
    trained = load_trained(model)
    with Engine.open(index) as engine:
        hits = engine.search(parse_terms([rows[1].caption]), k=12, rerank_k=12)
        stored = engine.catalog.tokens_by_id([h.id for h in hits])
    config = trained.head.config
    tokens = torch.from_numpy(
        np.stack([stored[h.id].reshape(config.stored_tokens, config.store_dim) for h in hits])
    )
    texts = encode_texts(trained, [rows[1].caption])
    index_ = torch.arange(len(hits))
    expected = itm_logits(
        trained.head, texts, torch.zeros_like(index_), EncodedImages(torch.empty(0), tokens), index_
    )
    got = np.array([h.extra["itm_logit"] for h in hits])
    assert np.allclose(got, expected.numpy(), atol=1e-3)
    # itm_prob calibrates the fused score the hits are ordered by, with the head's Platt fit.
    scale = float(trained.model.logit_scale.detach().exp())
    itc = torch.tensor([h.extra["itc_score"] for h in hits])
    fused = expected + trained.alpha * scale * itc
    assert np.allclose([h.score for h in hits], fused.numpy(), atol=1e-3)
    probabilities = trained.head.probability(fused).numpy()
    assert np.allclose([h.extra["itm_prob"] for h in hits], probabilities, atol=1e-4)


def test_cold_rerank_never_imports_torch(trained_index):
    index, _, rows = trained_index
    assert_runs_without_torch(
        "from pathlib import Path\n"
        "from search.engine import Engine\n"
        "from search.query import parse_terms\n"
        f"with Engine.open(Path({str(index)!r})) as engine:\n"
        f"    hits = engine.search(parse_terms([{rows[0].caption!r}]), k=3, rerank_k=8)\n"
        "assert len(hits) == 3 and 'itm_prob' in hits[0].extra\n"
    )


def test_threshold_cuts_on_match_probability(trained_index):
    index, _, rows = trained_index
    with Engine.open(index) as engine:
        terms = parse_terms([rows[0].caption])
        everything = engine.search(terms, k=24, rerank_k=24)
        assert len(everything) == 24
        cut = sorted(h.extra["itm_prob"] for h in everything)[12]
        kept = engine.search(terms, k=24, rerank_k=24, threshold=cut)
        assert kept and all(h.extra["itm_prob"] >= cut for h in kept)
        assert len(kept) < 24
        assert [h.id for h in kept] == [h.id for h in everything[: len(kept)]]  # one cut
        assert engine.search(terms, k=5, rerank_k=24, threshold=1.01) == []
        with pytest.raises(BadInput, match="no arithmetic"):
            engine.search(parse_terms(["a", "+", "b"]), k=5, rerank_k=8)


def test_cli_rerank_json_and_status(trained_index):
    index, _, rows = trained_index
    result = run("search", rows[0].caption, "--index", str(index), "--rerank", "-k", "3",
                 "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert len(hits) == 3 and all({"itm_prob", "itc_score"} <= set(h) for h in hits)
    status = json.loads(run("status", "--index", str(index), "--json").stdout)
    assert 0 < status["rerank_bytes_per_image"] <= 16 * 1024


def test_rerank_needs_a_trained_head(tmp_path, photos, tiny_checkpoint):
    index = tmp_path / "plain"
    run_index(index, IndexOptions(roots=(photos,), model=tiny_checkpoint))
    with Engine.open(index) as engine, pytest.raises(BadInput, match="ITM head"):
        engine.search(parse_terms(["a dog"]), k=3, rerank_k=8)


def test_rerank_k_above_k_returns_the_best_k_of_the_reranked_pool(trained_index):
    """k=3 of a rerank-k=24 pool: the 3 best fused scores among the ITC top 24, which may
    include images outside the ITC top 3; itm_prob falls as the fused score does."""
    index, _, rows = trained_index
    entered = 0
    with Engine.open(index) as engine:
        for row in rows[:8]:
            terms = parse_terms([row.caption])
            pool = engine.search(terms, k=24)
            everything = engine.search(terms, k=24, rerank_k=24)
            best = engine.search(terms, k=3, rerank_k=24)
            assert {h.id for h in everything} == {h.id for h in pool}
            assert [(h.id, h.score) for h in best] == [(h.id, h.score) for h in everything[:3]]
            probabilities = [h.extra["itm_prob"] for h in everything]
            assert probabilities == sorted(probabilities, reverse=True)
            entered += bool({h.id for h in best} - {h.id for h in pool[:3]})
    assert entered, "reranking 24 candidates never brought in an image outside the ITC top 3"


def test_huge_scores_give_probabilities_without_overflow(trained_index, tmp_path):
    """A Platt scale that sends scale * score far past exp's range: 0 or 1, no warning."""
    import shutil
    import warnings

    from search.rerank.head import match_probability

    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = match_probability(np.array([1e308, -1e308, 1e4, -1e4, 0.0]), (1e10, 0.0))
    assert got.tolist() == [1.0, 0.0, 1.0, 0.0, 0.5]
    index, _, rows = trained_index
    copy = tmp_path / "index"
    shutil.copytree(index, copy)
    towers = copy / "towers" / "towers.json"
    spec = json.loads(towers.read_text())
    spec["rerank"]["platt"] = [1e6, 0.0]
    towers.write_text(json.dumps(spec))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Engine.open(copy) as engine:
            hits = engine.search(parse_terms([rows[0].caption]), k=8, rerank_k=8)
    assert {h.extra["itm_prob"] for h in hits} <= {0.0, 1.0}
