"""A CoCa trained by photoseek in the shapes world: saved in open_clip's local-dir layout, loaded
back through `load_captioner`, and read with the grammar's own vocabulary."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from PIL import Image

from indexer.captioning import load_captioner
from indexer.datasets import shapes_world as sw
from indexer.errors import BadInput
from indexer.pipeline import IndexOptions, run_index
from indexer.training.coca_metrics import caption_accuracy, caption_slots, held_out_caption_loss
from indexer.training.coca_train import CocaOptions, train_captioner
from indexer.training.options import TrainOptions
from search.query import Term
from search.wiring import build_engine

WORDS = {"a", *sw.COLOURS, *sw.SHAPES, *(w for r in sw.RELATIONS for w in r.split())}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> sw.DatasetFiles:
    return sw.write_dataset(tmp_path_factory.mktemp("shapes"), train_groups=40, test_groups=2)


@pytest.fixture(scope="module")
def trained(shapes: sw.DatasetFiles, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Forty small steps: enough to learn the caption's words, not yet the images."""
    rows = sw.read_train(shapes.train_jsonl)
    options = CocaOptions(train=TrainOptions(lr=1e-2, warmup_steps=5))
    result = train_captioner(
        [(shapes.root / r.image, r.caption) for r in rows],
        tmp_path_factory.mktemp("coca"),
        epochs=2,
        batch_size=8,
        groups=[r.group for r in rows],
        options=options,
        device="cpu",
    )
    assert result.steps == 2 * len(rows) // 8
    assert (result.out_dir / "open_clip_config.json").is_file()
    return result.out_dir


def gallery(shapes: sw.DatasetFiles) -> list[tuple[Path, str]]:
    return [(shapes.root / r.image, r.caption) for r in sw.read_test(shapes.test_jsonl)]


def test_trained_folder_captions_gallery_images_through_load_captioner(
    trained: Path, shapes: sw.DatasetFiles
) -> None:
    captioner = load_captioner(str(trained), device="cpu")
    images = [Image.open(path) for path, _ in gallery(shapes)[:4]]
    captions = captioner.caption(images)
    assert len(captions) == 4
    for caption in captions:
        assert caption.split(), "an empty caption"
        assert set(caption.split()) <= WORDS, caption
    assert captioner.caption(images[:1]) == captions[:1]  # greedy: the same image, same caption


def test_index_stores_the_trained_captioners_captions_for_text_match(
    trained: Path, shapes: sw.DatasetFiles, tmp_path: Path, tiny_checkpoint: str
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for path, _ in gallery(shapes)[:3]:
        shutil.copy(path, photos / path.name)
    options = IndexOptions(
        roots=(photos,), model=tiny_checkpoint, captions=True, captioner=str(trained)
    )
    assert run_index(tmp_path / "idx", options).captioned == 3
    names = sorted(photos.iterdir())
    expected = load_captioner(str(trained), device="cpu").caption([Image.open(p) for p in names])
    with build_engine(tmp_path / "idx") as engine:
        word = expected[0].split()[0]
        hits = engine.search([Term(word)], k=10, text_match=True)
        stored = {Path(h.path.decode()).name: h.caption for h in hits}
        assert stored == {p.name: c for p, c in zip(names, expected, strict=True)}
        # the vector ranking brings every photo; the keyword one those whose caption has `word`
        assert all(("text_rank" in h.extra) == (word in str(h.caption).split()) for h in hits)


def test_training_lowers_the_caption_loss(
    trained: Path, shapes: sw.DatasetFiles, tmp_path: Path
) -> None:
    rows = sw.read_train(shapes.train_jsonl)[:16]
    untrained = train_captioner(  # learning rate 0: the weights as initialised, saved
        [(shapes.root / r.image, r.caption) for r in rows],
        tmp_path / "untrained",
        epochs=1,
        batch_size=8,
        options=CocaOptions(train=TrainOptions(lr=0.0)),
        device="cpu",
    )
    held_out = gallery(shapes)
    before = held_out_caption_loss(untrained.out_dir, held_out)
    after = held_out_caption_loss(trained, held_out)
    # untrained, every one of the 49,408 tokens is about as likely: ln(49408) = 10.8 nats
    assert before > 0.9 * math.log(49408)
    assert after < 6.0 < before


def test_mismatched_caption_loss_pairs_each_caption_with_the_image_half_the_list_away(
    trained: Path, shapes: sw.DatasetFiles
) -> None:
    held_out = gallery(shapes)
    matched = held_out_caption_loss(trained, held_out)
    # the decoder cross-attends to the image: other images, another loss
    assert held_out_caption_loss(trained, held_out, mismatched=True) != pytest.approx(matched)
    # the list twice over: half the list away is each pair's own copy
    doubled = held_out_caption_loss(trained, held_out + held_out, mismatched=True)
    assert doubled == pytest.approx(matched, rel=1e-5)


def test_an_architecture_without_a_decoder_is_refused(shapes: sw.DatasetFiles, tmp_path: Path):
    rows = sw.read_train(shapes.train_jsonl)[:4]
    with pytest.raises(BadInput, match="not a CoCa"):
        train_captioner(
            [(shapes.root / r.image, r.caption) for r in rows],
            tmp_path,
            model="photoseek-shapes",
            device="cpu",
        )
    assert not (tmp_path / "open_clip_model.safetensors").exists()


def test_caption_slots_read_the_grammar_position_by_position() -> None:
    full = {
        "colour1": "cyan",
        "shape1": "star",
        "relation": "left of",
        "colour2": "red",
        "shape2": "heart",
    }
    assert caption_slots("a cyan star left of a red heart") == full
    # a caption cut short lacks its last slots; an unknown word fills none
    assert caption_slots("a cyan star left of a") == {**full, "colour2": None, "shape2": None}
    assert caption_slots("a cyan blob above a red heart") == {
        **full,
        "shape1": None,
        "relation": "above",
    }
    # without its first article everything after it is out of place
    assert set(caption_slots("cyan star left of a red heart").values()) == {None}
    assert set(caption_slots("").values()) == {None}


def test_caption_accuracy_counts_exact_captions_and_each_slot() -> None:
    truth = ["a red circle left of a blue square", "a green star above a white heart"]
    predicted = ["a red circle left  of a blue square ", "a green heart above a"]
    scores = caption_accuracy(predicted, truth)
    assert scores == {"exact": 50.0, "colour": 75.0, "shape": 50.0, "relation": 100.0}
    with pytest.raises(BadInput):
        caption_accuracy(predicted[:1], truth)


def test_same_seed_same_weights_even_after_other_work(shapes: sw.DatasetFiles, tmp_path: Path):
    """open_clip 3.3 leaves a fresh CoCa decoder's output projection as torch.empty made it:
    zeros in a new process, whatever freed memory held (even inf) later on."""
    from safetensors.torch import load_file

    rows = sw.read_train(shapes.train_jsonl)[:16]
    pairs = [(shapes.root / r.image, r.caption) for r in rows]
    runs = [
        train_captioner(pairs, tmp_path / name, epochs=1, batch_size=8, device="cpu")
        for name in ("first", "second")
    ]
    first, second = (load_file(str(r.out_dir / "open_clip_model.safetensors")) for r in runs)
    assert all(math.isfinite(r.caption_loss) for r in runs)
    assert first.keys() == second.keys()
    assert all(first[k].equal(second[k]) for k in first)


def test_both_trainers_refuse_bad_run_arguments_alike(tmp_path):
    from indexer.errors import BadInput
    from indexer.training.coca_train import train_captioner
    from indexer.training.loop import train

    pairs = [("a.png", "a red circle"), ("b.png", "a blue square")]
    for trainer in (train, train_captioner):
        with pytest.raises(BadInput, match="no training pairs"):
            trainer([], tmp_path / "out")
        with pytest.raises(BadInput, match="epochs must be >= 1"):
            trainer(pairs, tmp_path / "out", epochs=0)
        with pytest.raises(BadInput, match="1 group ids for 2 pairs"):
            trainer(pairs, tmp_path / "out", groups=[0])
    assert not (tmp_path / "out").exists()
