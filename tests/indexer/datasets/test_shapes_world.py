"""Tests for the shapes-world benchmark generator: captions, twins, placement, split, files."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexer.datasets.shapes_world import (
    COLOURS,
    HARD_NEGATIVES,
    RELATIONS,
    Scene,
    all_scenes,
    group_key,
    held_out,
    held_out_groups,
    listings,
    read_test,
    read_train,
    render,
    sample_layout,
    write_dataset,
)
from indexer.errors import BadInput

SCENES = list(all_scenes())
BY_CAPTION = {scene.caption(): scene for scene in SCENES}


def some_scenes(count: int, seed: int) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [SCENES[int(i)] for i in rng.choice(len(SCENES), size=count, replace=False)]


def slots_changed(a: Scene, b: Scene) -> list[str]:
    return [f.name for f in fields(Scene) if getattr(a, f.name) != getattr(b, f.name)]


def colour_centre(pixels: np.ndarray, colour: str) -> tuple[float, float, int]:
    """Mean (x, y) and count of the pixels within a few levels of a palette colour."""
    distance = np.abs(pixels.astype(int) - np.array(COLOURS[colour])).max(axis=2)
    ys, xs = np.nonzero(distance <= 8)
    return float(xs.mean()) if xs.size else np.nan, float(ys.mean()) if ys.size else np.nan, xs.size


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    write_dataset(root, train_groups=10, test_groups=8, seed=11)
    return root


def test_caption_follows_grammar() -> None:
    scene = Scene("red", "circle", "left of", "blue", "square")
    assert scene.caption() == "a red circle left of a blue square"


def test_captions_parse_back_to_their_scene() -> None:
    for scene in SCENES:
        assert Scene.parse(scene.caption()) == scene
    for caption in ("a red circle right of a blue square", "a red circle left of a red square"):
        with pytest.raises(BadInput):
            Scene.parse(caption)


def test_listings_name_both_objects_and_no_relation() -> None:
    scene = Scene("red", "circle", "above", "blue", "square")
    assert scene.listing() == "a red circle and a blue square"
    assert scene.listing(subject_first=False) == "a blue square and a red circle"
    # Objects swapped: the same listing, which is what a listing-trained encoder cannot tell.
    assert scene.twins()[1].listing(subject_first=False) == scene.listing()
    scenes = SCENES[:200]
    listed = listings([s.caption() for s in scenes], seed=3)
    assert listed == listings([s.caption() for s in scenes], seed=3)
    subject_first = 0
    for scene, text in zip(scenes, listed, strict=True):
        first, second = f"a {scene.colour1} {scene.shape1}", f"a {scene.colour2} {scene.shape2}"
        assert text in (f"{first} and {second}", f"{second} and {first}")
        subject_first += text.startswith(first)
    assert 60 < subject_first < 140


@pytest.mark.parametrize(
    "args",
    [
        ("red", "circle", "left of", "red", "square"),
        ("red", "circle", "above", "blue", "circle"),
        ("mauve", "circle", "above", "blue", "square"),
        ("red", "blob", "above", "blue", "square"),
        ("red", "circle", "right of", "blue", "square"),
    ],
)
def test_invalid_scenes_are_rejected(args: tuple[str, ...]) -> None:
    with pytest.raises(BadInput):
        Scene(*args)


def test_twin_captions_share_words_and_differ() -> None:
    for scene in SCENES:
        captions = [s.caption() for s in scene.group()]
        assert len(set(captions)) == 4
        bags = [Counter(c.split()) for c in captions]
        assert all(bag == bags[0] for bag in bags)


def test_twins_form_closed_groups() -> None:
    for scene in some_scenes(200, seed=1):
        group = {s.caption() for s in scene.group()}
        for twin in scene.twins():
            assert {s.caption() for s in twin.group()} == group
            assert group_key(twin) == group_key(scene)


def test_twin_images_differ() -> None:
    rng = np.random.default_rng(2)
    for scene in some_scenes(50, seed=2):
        layout = sample_layout(scene.relation, rng)
        images = [np.asarray(render(s, layout, 64)) for s in scene.group()]
        for a, b in itertools.combinations(images, 2):
            # Circle vs square in the smallest slots is the closest pair: ~70 pixels differ.
            changed = (np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 40).sum()
            assert changed >= 40


def test_objects_sit_where_the_relation_says() -> None:
    rng = np.random.default_rng(3)
    for base in some_scenes(60, seed=3):
        layout = sample_layout(base.relation, rng)
        for scene in base.group():
            pixels = np.asarray(render(scene, layout, 64, noise=False))
            x1, y1, n1 = colour_centre(pixels, scene.colour1)
            x2, y2, n2 = colour_centre(pixels, scene.colour2)
            assert n1 > 20 and n2 > 20, scene.caption()
            along, across = (
                (x2 - x1, y2 - y1) if scene.relation == "left of" else (y2 - y1, x2 - x1)
            )
            # Object 1 is clearly before object 2 on the relation's axis, and not far off it.
            assert along > 10, scene.caption()
            assert abs(across) < along / 2, scene.caption()


@pytest.mark.parametrize("size", [64, 96, 128])
def test_layouts_keep_objects_inside_and_apart(size: int) -> None:
    rng = np.random.default_rng(4)
    for relation in RELATIONS * 100:
        layout = sample_layout(relation, rng)
        (l1, t1, r1, b1), (l2, t2, r2, b2) = layout.subject.box(size), layout.reference.box(size)
        for box in ((l1, t1, r1, b1), (l2, t2, r2, b2)):
            assert min(box) >= 0 and max(box) <= size
        if relation == "left of":
            assert r1 + 0.05 * size <= l2
        else:
            assert b1 + 0.05 * size <= t2


def test_render_has_requested_size_and_depends_only_on_arguments() -> None:
    scene = Scene("yellow", "star", "above", "purple", "heart")
    layout = sample_layout(scene.relation, np.random.default_rng(5))
    for size in (64, 96, 128):
        image = render(scene, layout, size)
        assert image.size == (size, size) and image.mode == "RGB"
        assert np.array_equal(np.asarray(image), np.asarray(render(scene, layout, size)))


def test_backgrounds_stay_far_from_every_object_colour() -> None:
    rng = np.random.default_rng(6)
    palette = np.array(list(COLOURS.values()))
    for _ in range(500):
        for colour in sample_layout("above", rng).background:
            assert np.linalg.norm(palette - np.array(colour), axis=1).min() > 60


def test_medium_negatives_change_exactly_one_slot() -> None:
    rng = np.random.default_rng(7)
    for scene in some_scenes(300, seed=7):
        negatives = scene.medium_negatives(rng, 3)
        assert len(negatives) == 3
        changed = [slots_changed(scene, n) for n in negatives]
        assert all(len(c) == 1 for c in changed)
        assert len({c[0] for c in changed}) == 3
        assert not {n.caption() for n in negatives} & {t.caption() for t in scene.twins()}


def test_medium_negatives_respect_keep() -> None:
    rng = np.random.default_rng(8)
    for scene in some_scenes(100, seed=8):
        for negative in scene.medium_negatives(rng, 5, keep=lambda s: s.relation == "above"):
            assert negative.relation == "above"


def test_split_holds_out_whole_groups() -> None:
    for scene in SCENES:
        assert all(held_out(twin) == held_out(scene) for twin in scene.twins())
    groups = held_out_groups()
    assert 0.1 < len(groups) / (len(SCENES) / 4) < 0.3
    assert all(held_out(member) for group in groups for member in group)


def test_rows_point_at_existing_images(dataset: Path) -> None:
    for rows in (read_train(dataset / "train.jsonl"), read_test(dataset / "test.jsonl")):
        assert rows
        for row in rows:
            assert not Path(row.image).is_absolute()
            with Image.open(dataset / row.image) as image:
                assert image.size == (64, 64)


def test_no_test_caption_reaches_train(dataset: Path) -> None:
    train_rows = read_train(dataset / "train.jsonl")
    test_captions = {row.caption for row in read_test(dataset / "test.jsonl")}
    train_text = {row.caption for row in train_rows}
    train_text |= {n for row in train_rows for n in row.negatives}
    assert not test_captions & train_text
    assert all(not held_out(BY_CAPTION[row.caption]) for row in train_rows)


def test_train_rows_list_twins_first(dataset: Path) -> None:
    for row in read_train(dataset / "train.jsonl"):
        scene = BY_CAPTION[row.caption]
        assert row.negatives[:HARD_NEGATIVES] == [t.caption() for t in scene.twins()]
        for negative in row.negatives[HARD_NEGATIVES:]:
            assert len(slots_changed(scene, BY_CAPTION[negative])) == 1


def test_train_rows_form_twin_groups(dataset: Path) -> None:
    """Each train group is one base scene rendered as its four twins with one layout."""
    rows = read_train(dataset / "train.jsonl")
    assert len(rows) == 10 * 4
    for g in range(10):
        members = [r for r in rows if r.group == g]
        base = BY_CAPTION[members[0].caption]
        assert [r.caption for r in members] == [s.caption() for s in base.group()]
        images = [np.asarray(Image.open(dataset / r.image)) for r in members]
        assert all((a != images[0]).any() for a in images[1:])  # composition differs


def test_test_rows_form_twin_groups(dataset: Path) -> None:
    rows = read_test(dataset / "test.jsonl")
    assert len(rows) == 8 * 4
    for g in range(8):
        members = sorted((r for r in rows if r.group == g), key=lambda r: r.twin)
        assert [r.twin for r in members] == [0, 1, 2, 3]
        base = BY_CAPTION[members[0].caption]
        assert [r.caption for r in members] == [s.caption() for s in base.group()]
    assert len({group_key(BY_CAPTION[r.caption]) for r in rows}) == 8


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_dataset(tmp_path / name, train_groups=2, test_groups=2, seed=seed)
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys()
    assert a["train.jsonl"] != c["train.jsonl"] and a["test.jsonl"] != c["test.jsonl"]


def test_too_many_test_groups_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BadInput):
        write_dataset(tmp_path, train_groups=0, test_groups=len(held_out_groups()) + 1)
