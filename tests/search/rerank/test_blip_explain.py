"""`photoseek explain --reranker BLIP`: Grad-CAM on a tiny random BLIP's ITM cross-attention."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_hf import build

from helpers import assert_one_line_error, run
from indexer.datasets.shapes_world import Scene, render, sample_layout
from search.tools.explain import Explanation, explain_blip, load_blip_explainer

pytest.importorskip("transformers")

SCENE = Scene("red", "circle", "left of", "blue", "square")
ORIENTATION = 0x0112
GRID = 4  # the tiny BLIP: 32 px images in 8 px patches
EPS = 1e-6  # finite-difference step, in float64


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("blip", tmp_path_factory.mktemp("blip"))


@pytest.fixture(scope="module")
def scorer(folder: Path):  # noqa: ANN201 - a BlipScorer
    return load_blip_explainer(str(folder))


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 96 x 48 upright photo: a shapes-world scene on the left, grey on the right."""
    upright = Image.new("RGB", (96, 48), (90, 90, 90))
    scene = render(SCENE, sample_layout(SCENE.relation, np.random.default_rng(5)))
    upright.paste(scene.resize((48, 48)), (0, 0))
    path = tmp_path_factory.mktemp("photo") / "scene.png"
    upright.save(path)
    return path


def _explain(scorer, path: Path, text: str, layer: int | None = None) -> Explanation:  # noqa: ANN001
    return explain_blip(scorer, path.read_bytes(), "png", text, layer)


def test_maps_have_the_patch_grid_and_the_rerankers_logit(scorer, photo: Path) -> None:  # noqa: ANN001
    text = "a red circle"
    explanation = _explain(scorer, photo, text)
    assert explanation.words == ["a", "red", "circle"]
    assert explanation.spans == [range(1, 2), range(2, 3), range(3, 4)]  # after [CLS]
    assert explanation.maps.shape == (5, GRID, GRID)  # [CLS], three words, [SEP]
    assert explanation.layer == 0  # the last layer but one of two
    assert explanation.maps.min() >= 0 and explanation.maps.max() > 0
    reranked = scorer.logits(text, [Image.open(photo).convert("RGB")])
    assert explanation.itm_logit == pytest.approx(float(reranked[0]), abs=1e-4)
    g = explanation.geometry
    assert (g.width, g.height, g.crop) == (96, 48, (0.0, 0.0, 96.0, 48.0))
    for i in range(3):
        grid = explanation.map_of([i])
        row, col = np.unravel_index(int(np.argmax(grid)), grid.shape)
        # a cell of the 4 x 4 grid over the squashed photo is 24 x 12 px
        assert explanation.peak(grid) == (int((col + 0.5) * 24), int((row + 0.5) * 12))


def test_maps_respond_to_the_text(scorer, photo: Path) -> None:  # noqa: ANN001
    explanation = _explain(scorer, photo, "a red circle left of a blue square")
    words = [explanation.map_of([i]) for i in (1, 2, 6, 7)]  # red circle blue square
    for i, a in enumerate(words):
        for b in words[i + 1 :]:
            assert not np.allclose(a, b, atol=1e-3)
    other = _explain(scorer, photo, "a green triangle")
    assert not np.allclose(other.map_of(), explanation.map_of(), atol=1e-3)


def _nudging(index: tuple[int, ...], delta: float):  # noqa: ANN202 - a forward hook
    """A hook on BLIP's cross-attention that adds `delta` to one probability and recomputes
    the context from the nudged probabilities (the module's last step: probabilities @ V)."""

    def hook(module, args, kwargs, output):  # noqa: ANN001, ANN202
        p = output[1].clone()
        p[index] += delta
        states = kwargs["encoder_hidden_states"]
        v = module.value(states).view(*states.shape[:-1], -1, module.attention_head_size)
        context = (p @ v.transpose(1, 2)).permute(0, 2, 1, 3).flatten(2)
        return context, p

    return hook


def test_gradcam_gradient_equals_finite_differences(folder: Path, photo: Path) -> None:
    """Grad-CAM's gradient with respect to the cross-attention probabilities, checked against
    central differences of the log-odds with each probability nudged inside the module."""
    import torch

    scorer = load_blip_explainer(str(folder))
    scorer.model.double()
    explanation = _explain(scorer, photo, "red circle", layer=0)
    inputs = scorer.inputs("red circle", [Image.open(photo).convert("RGB")])
    inputs["pixel_values"] = inputs["pixel_values"].double()
    attention = scorer.model.text_encoder.encoder.layer[0].crossattention.self
    with torch.no_grad():
        handle = attention.register_forward_hook(_nudging((0,), 0.0), with_kwargs=True)
        same = scorer.pair_logits(inputs)  # the hook's recomputation changes nothing
        handle.remove()
        recorded: list[torch.Tensor] = []
        handle = attention.register_forward_hook(lambda m, i, out: recorded.append(out[1]))
        plain = scorer.pair_logits(inputs)
        handle.remove()
    torch.testing.assert_close(same, plain)
    assert float(plain[0]) == pytest.approx(explanation.itm_logit, abs=1e-9)
    probabilities = recorded[0]
    grad = torch.zeros_like(probabilities)
    for index in np.ndindex(*probabilities.shape):
        ends = []
        for sign in (1.0, -1.0):
            hook = _nudging(index, sign * EPS)
            handle = attention.register_forward_hook(hook, with_kwargs=True)
            with torch.no_grad():
                ends.append(float(scorer.pair_logits(inputs)[0]))
            handle.remove()
        grad[index] = (ends[0] - ends[1]) / (2 * EPS)
    cam = (grad.clamp(min=0) * probabilities).mean(dim=1)[0, :, 1:]
    np.testing.assert_allclose(explanation.maps, cam.reshape(-1, GRID, GRID), rtol=1e-5, atol=1e-9)
    assert explanation.maps.max() > 0


def test_peaks_are_in_the_upright_photo_of_a_rotated_exif_file(scorer, photo, tmp_path) -> None:  # noqa: ANN001
    """The photo stored turned a quarter with orientation 6: the model sees it upright, so the
    maps are the upright photo's and the peaks are in its 96 x 48 pixels."""
    stored = Image.open(photo).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    rotated = tmp_path / "rotated.png"
    stored.save(rotated, exif=exif)
    assert stored.size == (48, 96)
    text = SCENE.caption()
    upright, turned = _explain(scorer, photo, text), _explain(scorer, rotated, text)
    assert (turned.geometry.width, turned.geometry.height) == (96, 48)
    np.testing.assert_allclose(turned.maps, upright.maps, atol=1e-5)
    plain = tmp_path / "plain.png"
    stored.save(plain)  # the same pixels without the orientation: another picture to the model
    assert not np.allclose(_explain(scorer, plain, text).maps, upright.maps, atol=1e-3)
    for words in (None, [1], [2], [5], [6]):
        assert turned.peak(turned.map_of(words)) == upright.peak(upright.map_of(words))


def test_cli_explains_with_a_blip_folder(folder: Path, photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "heat.png"
    args = ("explain", str(photo), "a red circle", "--reranker", str(folder), "--out", str(out))
    result = run(*args, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["layer"] == 0 and [w["word"] for w in doc["words"]] == ["a", "red", "circle"]
    assert (doc["width"], doc["height"], doc["crop"]) == (96, 48, [0.0, 0.0, 96.0, 48.0])
    for entry in (doc, *doc["words"]):
        assert len(entry["grid"]) == GRID and all(len(row) == GRID for row in entry["grid"])
        assert 0 <= entry["peak"][0] < 96 and 0 <= entry["peak"][1] < 48
    picture = Image.open(out)
    assert picture.size == (96, 48)
    assert not np.array_equal(np.asarray(picture.convert("RGB")), np.asarray(Image.open(photo)))
    # transformers draws a progress bar on stderr while it loads weights: not photoseek's line
    bad_layer = run(*args, "--layer", "2", env={"HF_HUB_DISABLE_PROGRESS_BARS": "1"})
    assert_one_line_error(bad_layer, "the BLIP text encoder has layers 0..1, not 2")


def test_a_reranker_explain_cannot_use_is_one_line(photo: Path, tmp_path: Path) -> None:
    vilt = build("vilt", tmp_path / "vilt")
    out = str(tmp_path / "x.png")
    result = run("explain", str(photo), "red", "--reranker", str(vilt), "--out", out)
    assert_one_line_error(result, "explain knows the photoseek head and BLIP, not vilt")
