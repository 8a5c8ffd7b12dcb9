"""Tests for joint ITC + ITM training, the fusion head, rerank and the saved checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import TINY
from indexer.datasets import shapes_world as sw
from indexer.errors import BadInput, ModelMismatch
from indexer.models.itm_head import ItmConfig, ItmHead, compact_token_bytes, head_config_for
from indexer.models.model_files import load_head
from indexer.training.checkpoints import STATE_FILE
from indexer.training.data import load_pixels
from indexer.training.loop import TrainProgress, train
from indexer.training.losses import twin_listwise
from indexer.training.metrics import evaluate
from indexer.training.options import TrainOptions
from indexer.training.scoring import encode_images, encode_texts, fused_scorer, rerank
from indexer.training.trained import Trained, load_trained

# Small enough to train in seconds on one thread; wide patches (4x4 grid) still see layout.
OPTIONS = TrainOptions(lr=2e-3, warmup_steps=20, head={"width": 64, "store_dim": 64, "heads": 2})


class Interrupted(Exception):
    pass


def shapes_pairs(
    root: Path, groups: int, seed: int
) -> tuple[list[tuple[str, str, list[str]]], list[int]]:
    """Twin groups from a restricted world (3 colours, 3 shapes): learnable in a few hundred
    steps, still with twins that only composition tells apart."""
    rng = np.random.default_rng(seed)
    colours, shapes = ("red", "blue", "yellow"), ("circle", "square", "triangle")
    scenes = [
        s
        for s in sw.all_scenes()
        if {s.colour1, s.colour2} <= set(colours) and {s.shape1, s.shape2} <= set(shapes)
    ]
    pairs, ids = [], []
    for g in range(groups):
        base = scenes[int(rng.integers(len(scenes)))]
        layout = sw.sample_layout(base.relation, rng)
        for k, scene in enumerate(base.group()):
            path = root / f"{g:04d}_{k}.png"
            sw.render(scene, layout, 64).save(path)
            pairs.append((str(path), scene.caption(), [t.caption() for t in scene.twins()]))
            ids.append(g)
    return pairs, ids


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("shapes")
    return shapes_pairs(root, 160, seed=0)


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory, data) -> Path:
    torch.set_num_threads(1)
    pairs, groups = data
    out = tmp_path_factory.mktemp("run")
    train(pairs, out, model=TINY, epochs=15, batch_size=32, groups=groups, options=OPTIONS)
    return out


def test_training_beats_chance(trained_dir: Path, data) -> None:
    pairs, groups = data
    gallery = pairs[:128]
    report = evaluate(
        load_trained(trained_dir), [p[:2] for p in gallery], twin_groups=groups[:128], ks=(8,)
    )
    captions = len({p[1] for p in gallery})
    # Chance: R@5 = 5/128 images, twin accuracy 25%.
    assert report["t2i"]["itc"]["R@5"] > 3 * 100 * 5 / 128, report
    assert report["twin_accuracy"]["rerank@8"] > 40, report
    assert report["captions"] == captions


def test_rerank_changes_only_the_order_of_the_top_k() -> None:
    generator = torch.Generator().manual_seed(0)
    itc = torch.randn(20, 50, generator=generator)
    scores = torch.randn(20, 50, generator=generator)
    for k in (1, 8, 50, 80):
        ranked = rerank(itc, k, lambda top: scores.gather(1, top))
        plain = itc.argsort(dim=1, descending=True, stable=True)
        kk = min(k, 50)
        for row, base in zip(ranked.tolist(), plain.tolist(), strict=True):
            assert set(row[:kk]) == set(base[:kk])
            assert row[kk:] == base[kk:]
            assert sorted(row) == list(range(50))


def test_fused_rerank_keeps_the_candidate_set(trained_dir: Path, data) -> None:
    pairs, _ = data
    trained = load_trained(trained_dir)
    pixels, _, _ = load_pixels([p[0] for p in pairs[:40]], trained.image_size)
    images = encode_images(trained, pixels)
    texts = encode_texts(trained, [p[1] for p in pairs[:40]])
    itc = texts.embeddings @ images.embeddings.T
    ranked = rerank(itc, 8, fused_scorer(trained, texts, images, itc, trained.alpha))
    plain = itc.argsort(dim=1, descending=True, stable=True)
    assert torch.equal(ranked[:, :8].sort(dim=1).values, plain[:, :8].sort(dim=1).values)
    assert torch.equal(ranked[:, 8:], plain[:, 8:])


def scores_of(trained: Trained, pairs) -> torch.Tensor:
    pixels, _, _ = load_pixels([p[0] for p in pairs], trained.image_size)
    images = encode_images(trained, pixels)
    texts = encode_texts(trained, [p[1] for p in pairs])
    itc = texts.embeddings @ images.embeddings.T
    every = torch.arange(len(pairs))[None, :].expand(len(pairs), -1)
    return torch.cat([itc, fused_scorer(trained, texts, images, itc, trained.alpha)(every)])


def test_checkpoint_reloads_to_identical_scores(trained_dir: Path, data) -> None:
    pairs, _ = data
    from safetensors.torch import load_file

    state = torch.load(trained_dir / STATE_FILE, map_location="cpu", weights_only=True)
    again = load_trained(trained_dir)
    in_training = load_trained(trained_dir)
    in_training.model.load_state_dict(state["model"])
    in_training.head.load_state_dict({**state["head"], "platt": in_training.head.platt})
    assert torch.equal(scores_of(again, pairs[:12]), scores_of(in_training, pairs[:12]))
    assert load_file(str(trained_dir / "itm_head.safetensors")).keys() == state["head"].keys()


def test_interrupted_training_resumes_to_the_same_weights(tmp_path: Path, data) -> None:
    pairs, groups = data
    small, ids = pairs[:96], groups[:96]
    options = TrainOptions(warmup_steps=2, head=OPTIONS.head)
    whole = train(
        small, tmp_path / "whole", model=TINY, epochs=2, batch_size=16, groups=ids, options=options
    )

    def stop_in_second_epoch(p: TrainProgress) -> None:
        if p.epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(
            small,
            tmp_path / "split",
            model=TINY,
            epochs=2,
            batch_size=16,
            groups=ids,
            options=options,
            progress=stop_in_second_epoch,
        )
    resumed = train(
        small, tmp_path / "split", model=TINY, epochs=2, batch_size=16, groups=ids, options=options
    )
    assert resumed.epochs_run == 1
    assert resumed.encoder_fingerprint == whole.encoder_fingerprint
    for name in ("open_clip_model.safetensors", "itm_head.safetensors"):
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "split" / name).read_bytes()


@pytest.mark.parametrize(("lock_image", "lock_text"), [(True, False), (True, True)])
def test_locked_towers_keep_their_weights(
    tmp_path: Path, trained_dir: Path, data, lock_image: bool, lock_text: bool
) -> None:
    from safetensors.torch import load_file

    pairs, groups = data
    out = tmp_path / "tuned"
    train(
        pairs[:64],
        out,
        model=f"local-dir:{trained_dir}",
        lock_image=lock_image,
        lock_text=lock_text,
        epochs=1,
        batch_size=16,
        groups=groups[:64],
        options=TrainOptions(warmup_steps=2, head=OPTIONS.head),
    )
    before = load_file(trained_dir / "open_clip_model.safetensors")
    after = load_file(out / "open_clip_model.safetensors")
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    visual = {name for name in before if name.startswith("visual.")}
    text = set(before) - visual - {"logit_scale"}
    assert bool(changed & visual) == (not lock_image)
    assert bool(changed & text) == (not lock_text)


def test_locking_a_tower_needs_a_pretrained_encoder(tmp_path: Path, data) -> None:
    pairs, _ = data
    with pytest.raises(BadInput, match="pretrained"):
        train(pairs[:8], tmp_path / "out", model=TINY, lock_text=True, epochs=1, batch_size=4)
    assert not (tmp_path / "out").exists()


def test_cli_refuses_to_lock_the_towers_of_an_untrained_encoder(tmp_path: Path, data) -> None:
    pairs, _ = data
    csv = tmp_path / "pairs.csv"
    csv.write_text("image,caption\n" + "".join(f"{p[0]},{p[1]}\n" for p in pairs[:4]))
    args = ["train", "--pairs", str(csv), "--out", str(tmp_path / "out"), "--lock-text"]
    done = subprocess.run(
        [sys.executable, "-c", "from search.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("photoseek: error: locking a tower freezes pretrained weights")
    assert not (tmp_path / "out").exists()


def test_itm_weight_zero_trains_a_plain_dual_encoder(tmp_path: Path, data) -> None:
    pairs, _ = data
    reports: list[TrainProgress] = []
    train(
        [(p[0], p[1]) for p in pairs[:128]],
        tmp_path / "plain",
        model=TINY,
        epochs=3,
        batch_size=32,
        options=TrainOptions(lr=2e-3, warmup_steps=2, itm_weight=0.0, head=OPTIONS.head),
        progress=reports.append,
    )
    assert all(r.itm_loss == 0.0 for r in reports)
    assert reports[-1].itc_loss < reports[0].itc_loss


def test_head_refuses_an_encoder_it_was_not_trained_with(trained_dir: Path) -> None:
    import open_clip

    from indexer.models.loading import register_configs

    register_configs()
    own = load_trained(trained_dir).model
    assert load_head(trained_dir, own) is not None
    with pytest.raises(ModelMismatch):
        load_head(trained_dir, open_clip.create_model(TINY))
    meta = json.loads((trained_dir / "itm_head.json").read_text())
    assert {"config", "alpha", "platt", "encoder_fingerprint"} <= meta.keys()


def test_local_dir_layout_loads_with_open_clip(trained_dir: Path) -> None:
    import open_clip

    model = open_clip.create_model(f"local-dir:{trained_dir}")
    assert model.visual.image_size == (64, 64)


@pytest.mark.parametrize(("pool", "expected"), [(1, (64 + 1) * 120 * 2), (2, (16 + 1) * 120 * 2)])
def test_stored_tokens_have_the_documented_size(pool: int, expected: int) -> None:
    import open_clip

    from indexer.models.itm_head import image_features_and_tokens
    from indexer.models.loading import register_configs

    register_configs()
    model = open_clip.create_model("photoseek-shapes").eval()
    config = head_config_for(model, pool=pool)
    head = ItmHead(config).eval()
    with torch.no_grad():
        embedding, patches = image_features_and_tokens(model, torch.zeros(3, 3, 64, 64))
        stored = head.compact_image_tokens(patches, embedding).to(torch.float16)
    assert stored.shape == (3, config.stored_tokens, config.store_dim)
    assert stored[0].numel() * stored.element_size() == compact_token_bytes(config) == expected
    assert expected <= 16 * 1024


def test_head_scores_one_image_against_many_texts_like_repeated_images() -> None:
    torch.manual_seed(0)
    head = ItmHead(
        ItmConfig(text_dim=32, image_dim=48, grid=4, width=32, store_dim=32, heads=2)
    ).eval()
    texts, mask = torch.randn(6, 9, 32), torch.ones(6, 9, dtype=torch.bool)
    mask[:, 6:] = False
    stored = head.compact_image_tokens(torch.randn(3, 16, 48))
    index = torch.tensor([0, 0, 1, 2, 2, 1])
    with torch.no_grad():
        shared = head(texts, mask, stored, index)
        repeated = head(texts, mask, stored[index])
        padded = head(texts.masked_fill(~mask[..., None], 9.0), mask, stored, index)
    torch.testing.assert_close(shared, repeated)
    torch.testing.assert_close(shared, padded)
    probability = head.probability(shared)
    assert ((probability > 0) & (probability < 1)).all()


def test_twin_listwise_loss_is_finite_and_trains_the_head() -> None:
    torch.manual_seed(0)
    head = ItmHead(ItmConfig(text_dim=16, image_dim=16, grid=2, width=16, store_dim=16, heads=2))
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2])  # the lone pair adds no listwise term
    captions = torch.tensor([0, 1, 2, 3, 4, 5, 6, 6, 7])  # images 6 and 7 share a caption
    texts, mask = torch.randn(9, 5, 16), torch.ones(9, 5, dtype=torch.bool)
    patches = torch.randn(9, 4, 16)
    same_group = groups[:, None] == groups[None, :]
    same_caption = captions[:, None] == captions[None, :]
    t, i = same_group.nonzero(as_tuple=True)
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        logits = head(texts[t], mask[t], head.compact_image_tokens(patches), i)
        grid = torch.zeros(9, 9).index_put((t, i), logits)
        loss = twin_listwise(grid, same_group, same_caption)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


class _Payload:
    """A pickle that runs code when loaded: what a crafted train_state.pt could hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        import os

        return os.mkdir, (str(self.marker),)


def test_resume_never_runs_code_from_a_crafted_train_state(tmp_path: Path) -> None:
    from indexer.training.checkpoints import resume

    marker = tmp_path / "code-ran"
    state = tmp_path / STATE_FILE
    torch.save({"setup": _Payload(marker), "epoch": 1}, state)
    clip, head = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(clip.parameters(), lr=0.1)
    with pytest.raises(BadInput, match="train_state.pt") as caught:
        resume(state, {"model": None}, clip, head, optimizer)
    assert not marker.exists()
    assert "\n" not in str(caught.value)


def test_calibration_fits_the_fused_score_of_a_default_rerank_pool(trained_dir: Path, data):
    """Platt's fit is of the fused score (what results are ordered by) over the ITC top
    RERANK_K (what a default query reranks), whatever pool the alpha search used: there its
    mean probability equals the share of true matches (the fit's first-order condition)."""
    from indexer.models.model_files import RERANK_K
    from indexer.training.calibration import calibrate
    from indexer.training.scoring import itm_logits

    pairs, _ = data
    trained = load_trained(trained_dir)
    held = pairs[-96:]
    pixels, _, _ = load_pixels([p[0] for p in held], trained.image_size)
    captions = [p[1] for p in held]
    alpha, (scale, bias) = calibrate(trained, pixels, captions, rerank_k=8, autocast=None)
    images = encode_images(trained, pixels)
    unique = list(dict.fromkeys(captions))
    texts = encode_texts(trained, unique)
    itc = texts.embeddings @ images.embeddings.T
    top = itc.argsort(dim=1, descending=True)[:, :RERANK_K]
    q = torch.arange(len(unique))[:, None].expand_as(top).reshape(-1)
    logits = itm_logits(trained.head, texts, q, images, top.reshape(-1)).view_as(top)
    fused = logits + alpha * float(trained.model.logit_scale.detach().exp()) * itc.gather(1, top)
    rows = zip(top.tolist(), unique, strict=True)
    labels = torch.tensor([[captions[i] == u for i in row] for row, u in rows])
    probability = torch.sigmoid(scale * fused.double() + bias)
    assert float(probability.mean()) == pytest.approx(float(labels.double().mean()), abs=2e-3)
