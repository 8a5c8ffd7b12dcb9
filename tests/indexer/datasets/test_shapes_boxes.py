"""Each object's box in the shapes world: it holds the drawn object, and test rows carry it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indexer.datasets.shapes_world import (
    COLOURS,
    SHAPES,
    Scene,
    object_boxes,
    read_test,
    render,
    sample_layout,
    write_dataset,
)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [64, 96])
def test_the_box_is_tight_around_the_drawn_object(shape: str, size: int) -> None:
    other = "square" if shape != "square" else "circle"
    scene = Scene("red", shape, "above", "blue", other)
    layout = sample_layout(scene.relation, np.random.default_rng(len(shape) + size))
    pixels = np.asarray(render(scene, layout, size, noise=False)).astype(int)
    boxes = object_boxes(scene, layout, size)
    assert list(boxes) == [f"red {shape}", f"blue {other}"]
    for words, box in boxes.items():
        colour = COLOURS[words.split()[0]]
        # Pixels at least half covered by the object (its colour dominates the blend).
        near = np.abs(pixels - np.array(colour)).max(axis=2) <= 60
        ys, xs = np.nonzero(near)
        left, top, right, bottom = box
        assert left - 1 <= xs.min() and xs.max() + 1 <= right + 1
        assert top - 1 <= ys.min() and ys.max() + 1 <= bottom + 1
        # Tight: the drawn pixels reach within a pixel and a half of every side.
        assert xs.min() <= left + 1.5 and xs.max() + 1 >= right - 1.5
        assert ys.min() <= top + 1.5 and ys.max() + 1 >= bottom - 1.5


def test_test_rows_carry_both_boxes_and_old_rows_read_without(tmp_path: Path) -> None:
    files = write_dataset(tmp_path, train_groups=1, test_groups=2, seed=4)
    rows = read_test(files.test_jsonl)
    for row in rows:
        scene = Scene.parse(row.caption)
        assert list(row.boxes) == [
            f"{scene.colour1} {scene.shape1}",
            f"{scene.colour2} {scene.shape2}",
        ]
        assert all(0 <= v <= 64 for box in row.boxes.values() for v in box)
    old = tmp_path / "old.jsonl"
    lines = files.test_jsonl.read_text().splitlines()
    old.write_text("".join(
        json.dumps({k: v for k, v in json.loads(line).items() if k != "boxes"}) + "\n"
        for line in lines
    ))  # fmt: skip
    assert [row.boxes for row in read_test(old)] == [{}] * len(lines)
    assert [row.caption for row in read_test(old)] == [row.caption for row in rows]
