"""`photoseek explain`: Grad-CAM maps of the shipped demo model, their geometry, JSON and errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import REPO, assert_one_line_error, run
from indexer.datasets.shapes_world import Scene, render, sample_layout
from indexer.media.decode import load_rgb
from indexer.models.itm_head import ItmConfig, ItmHead
from search.tools.explain import Explanation, explain, load_explainer
from search.tools.gradcam import cross_attention_gradcam

DEMO_MODEL = REPO / "data" / "demo-model"
SCENE = Scene("red", "circle", "left of", "blue", "square")
ORIENTATION = 0x0112
EPS = 1e-6  # finite-difference step, in float64


@pytest.fixture(scope="module")
def loaded():  # noqa: ANN201 - a LoadedModel
    return load_explainer(str(DEMO_MODEL))


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    render(SCENE, sample_layout(SCENE.relation, np.random.default_rng(5))).save(path)
    return path


def _explain(loaded, path: Path, text: str) -> Explanation:  # noqa: ANN001
    return explain(loaded, path.read_bytes(), "png", text, 0)


def test_maps_cover_the_patch_grid_and_peaks_lie_in_the_photo(loaded, scene_png: Path) -> None:
    explanation = _explain(loaded, scene_png, SCENE.caption())
    assert explanation.words == SCENE.caption().split()
    rows = [row for span in explanation.spans for row in span]
    assert rows == list(range(2, 2 + len(rows)))  # after [MATCH] and the start token
    assert explanation.maps.shape == (len(rows) + 3, 8, 8)  # + [MATCH], start, end
    for grid in (explanation.map_of(), *(explanation.map_of([i]) for i in range(7))):
        assert grid.shape == (8, 8) and grid.min() >= 0 and np.isclose(grid.max(), 1.0)
        x, y = explanation.peak(grid)
        assert 0 <= x < 64 and 0 <= y < 64
    assert np.isfinite(explanation.itm_logit)


def test_peaks_are_in_the_upright_photo_of_a_rotated_exif_file(loaded, scene_png, tmp_path):  # noqa: ANN001
    """The scene in the middle of a 128 x 64 picture, stored turned a quarter with orientation
    6: the model sees the scene alone (the centre crop), so the maps are the bare scene's and
    every peak moves 32 px right."""
    upright = Image.new("RGB", (128, 64), (90, 90, 90))
    upright.paste(Image.open(scene_png), (32, 0))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # orientation 6 turns it back
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    rotated = tmp_path / "rotated.png"
    stored.save(rotated, exif=exif)
    assert stored.size == (64, 128)
    seen = load_rgb(rotated.read_bytes(), "png")
    assert np.array_equal(np.asarray(seen), np.asarray(upright))  # the premise

    bare = _explain(loaded, scene_png, SCENE.caption())
    turned = _explain(loaded, rotated, SCENE.caption())
    g = turned.geometry
    assert (g.width, g.height) == (128, 64) and g.crop == (32.0, 0.0, 96.0, 64.0)
    np.testing.assert_allclose(turned.maps, bare.maps, atol=1e-5)
    for words in (None, [1], [2], [5], [6]):
        x, y = bare.peak(bare.map_of(words))
        assert turned.peak(turned.map_of(words)) == (x + 32, y)


def test_cli_writes_the_heatmap_and_the_documented_json(scene_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "heat.png"
    args = ("explain", str(scene_png), "a red circle", "--model", str(DEMO_MODEL))
    result = run(*args, "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc) == {
        "image", "out", "text", "itm_logit", "layer", "width", "height", "crop", "peak",
        "grid", "words",
    }  # fmt: skip
    assert doc["text"] == "a red circle" and doc["layer"] == 0
    assert (doc["width"], doc["height"], doc["crop"]) == (64, 64, [0.0, 0.0, 64.0, 64.0])
    assert [w["word"] for w in doc["words"]] == ["a", "red", "circle"]
    for entry in (doc, *doc["words"]):
        assert len(entry["grid"]) == 8 and all(len(row) == 8 for row in entry["grid"])
        assert all(0.0 <= v <= 1.0 for row in entry["grid"] for v in row)
        assert all(isinstance(v, int) for v in entry["peak"])
        assert 0 <= entry["peak"][0] < 64 and 0 <= entry["peak"][1] < 64
    assert Image.open(out).size == (64, 64)

    plain = run(*args, "--out", str(out))
    assert plain.returncode == 0 and re.fullmatch(
        r".*\tpeak \d+,\d+\titm_logit -?\d+\.\d+\n", plain.stdout
    )


def test_a_model_without_a_head_is_one_line(tiny_checkpoint: str, scene_png, tmp_path) -> None:  # noqa: ANN001
    out = str(tmp_path / "x.png")
    result = run(
        "explain", str(scene_png), "a red circle", "--model", tiny_checkpoint, "--out", out
    )
    assert_one_line_error(result, "has no ITM head to explain with")
    both = run("explain", str(scene_png), "red", "--model", str(DEMO_MODEL), "--index",
               str(tmp_path), "--out", out)  # fmt: skip
    assert_one_line_error(both, "give --index or --model, not both")
    assert_one_line_error(run("explain", str(scene_png), " ", "--model", str(DEMO_MODEL),
                              "--out", out), "explain needs some text")  # fmt: skip


def test_gradcam_gradient_equals_finite_differences() -> None:
    """Grad-CAM's gradient with respect to the attention probabilities, checked against
    central differences of the logit with each probability nudged through the same tap."""
    torch.manual_seed(0)
    config = ItmConfig(text_dim=8, image_dim=8, grid=2, width=8, heads=2, layers=2, embed_dim=4,
                       store_dim=6)  # fmt: skip
    head = ItmHead(config).double().eval()
    text = torch.randn(1, 3, 8, dtype=torch.float64)
    mask = torch.tensor([[True, True, False]])
    image = torch.randn(1, config.stored_tokens, 6, dtype=torch.float64)
    for layer in (0, 1):
        logits, cam = cross_attention_gradcam(head, text, mask, image, layer)
        recorded: list[torch.Tensor] = []

        def record(p: torch.Tensor, recorded: list[torch.Tensor] = recorded) -> torch.Tensor:
            recorded.append(p.detach())
            return p

        with torch.no_grad(), head.attention_tap(layer, record):
            head(text, mask, image)
        attention = recorded[0]
        grad = torch.zeros_like(attention)
        for index in np.ndindex(*attention.shape):
            ends = []
            for sign in (1.0, -1.0):

                def nudge(p: torch.Tensor, index=index, sign=sign) -> torch.Tensor:  # noqa: ANN001
                    p = p.clone()
                    p[index] += sign * EPS
                    return p

                with torch.no_grad(), head.attention_tap(layer, nudge):
                    ends.append(float(head(text, mask, image)[0]))
            grad[index] = (ends[0] - ends[1]) / (2 * EPS)
        expected = (grad.clamp(min=0) * attention).mean(dim=1)
        torch.testing.assert_close(cam, expected, rtol=1e-5, atol=1e-9)
        assert cam.abs().max() > 0
        with torch.no_grad():
            assert torch.allclose(logits, head(text, mask, image))


def test_the_tap_leaves_the_forward_bitwise_as_it_was() -> None:
    torch.manual_seed(1)
    head = ItmHead(ItmConfig(text_dim=8, image_dim=8, grid=2, width=8, heads=2)).eval()
    text, mask = torch.randn(2, 4, 8), torch.ones(2, 4, dtype=torch.bool)
    image = head.compact_image_tokens(torch.randn(2, 4, 8))
    with torch.no_grad():
        before = head(text, mask, image)
        with head.attention_tap(1, lambda p: p):
            tapped = head(text, mask, image)
        after = head(text, mask, image)
    assert torch.equal(before, after)
    torch.testing.assert_close(tapped, before)


def test_bench_pointing_game_runs_on_a_small_gallery() -> None:
    result = subprocess.run(
        [sys.executable, "bench/explain_bench.py", "--groups", "1", "--seed", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "4 images, 8 named objects" in result.stdout
    match = re.fullmatch(r"pointing game: (\d\.\d{4}) \(chance (\d\.\d{4})\)", lines[-1])
    assert match is not None, lines[-1]
    score, chance = (float(v) for v in match.groups())
    assert score * 8 == pytest.approx(round(score * 8))  # a count of the 8 objects
    assert 0.02 < chance < 0.3  # two boxes of 13-24 px sides in a 64 px image


def test_a_squash_model_is_explained_over_the_whole_photo(tmp_path: Path) -> None:
    """A model that squashes photos saw all of a wide photo: the map covers it whole, and the
    pixels explained are the squashed ones (a cropping model's map differs)."""
    wide = tmp_path / "wide.png"
    render(SCENE, sample_layout(SCENE.relation, np.random.default_rng(5))).resize((128, 64)).save(
        wide
    )
    cropping = load_explainer(str(DEMO_MODEL))
    squashing = load_explainer(str(DEMO_MODEL))
    squashing.model.visual.preprocess_cfg = {
        **squashing.model.visual.preprocess_cfg,
        "resize_mode": "squash",
    }
    cropped, squashed = (_explain(m, wide, SCENE.caption()) for m in (cropping, squashing))
    assert cropped.geometry.crop == (32.0, 0.0, 96.0, 64.0)
    assert squashed.geometry.crop == (0.0, 0.0, 128.0, 64.0)
    assert not np.allclose(cropped.maps, squashed.maps)
