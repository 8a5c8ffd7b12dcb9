"""`search --html --explain`: each result's picture carries its map, hot where the map is."""

from __future__ import annotations

import base64
import html
import io
import re
import runpy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import REPO, assert_one_line_error, run
from indexer.datasets.shapes_world import Scene, render, sample_layout
from indexer.pipeline import IndexOptions, run_index
from search.tools.explain import explain, explain_blip, load_blip_explainer, load_explainer
from search.tools.heatmap import overlay

DEMO_MODEL = REPO / "data" / "demo-model"
TEXT = "a red circle"
SCENES = [
    Scene("red", "circle", "left of", "blue", "square"),
    Scene("blue", "circle", "above", "red", "triangle"),
    Scene("green", "square", "above", "red", "circle"),
]
_IMG = re.compile(r"<img src='data:image/jpeg;base64,([^']+)' alt='([^']*)'>")


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index of a few shapes-world photos built with the demo model (a folder with a head)."""
    root = tmp_path_factory.mktemp("explained")
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(3)
    for i, scene in enumerate(SCENES):
        render(scene, sample_layout(scene.relation, rng)).save(photos / f"scene {i}.png")
    run_index(root / "index", IndexOptions(roots=(photos,), model=str(DEMO_MODEL)))
    return root / "index"


def _pictures(page: Path) -> dict[str, np.ndarray]:
    """The page's pictures [h, w, 3] by the path each shows."""
    found = _IMG.findall(page.read_text(encoding="utf-8"))
    return {
        html.unescape(alt): np.asarray(Image.open(io.BytesIO(base64.b64decode(data))), float)
        for data, alt in found
    }


def test_each_picture_is_its_photo_with_its_map_over_it(index: Path, tmp_path: Path) -> None:
    plain_page, explained_page = tmp_path / "plain.html", tmp_path / "explained.html"
    for page, extra in ((plain_page, ()), (explained_page, ("--explain",))):
        result = run("search", TEXT, "--index", str(index), "--html", str(page), *extra)
        assert result.returncode == 0, result.stderr
    plain, explained = _pictures(plain_page), _pictures(explained_page)
    assert set(plain) == set(explained) and len(plain) == len(SCENES)
    loaded = load_explainer(str(DEMO_MODEL))
    for path, picture in explained.items():
        data = Path(path).read_bytes()
        explanation = explain(loaded, data, "png", TEXT, 0)
        grid = explanation.map_of()
        expected = overlay(Image.open(path), grid, explanation.geometry)
        error = np.abs(picture - np.asarray(expected, float)).mean()
        assert error < 6  # JPEG's error
        # It is this map: where a flat map of the same mean would differ from it, the picture
        # on the page is far closer to this map's overlay than to the flat one's.
        assert grid.max() - grid.min() > 0.5
        flat = overlay(Image.open(path), np.full_like(grid, grid.mean()), explanation.geometry)
        cells = np.kron(grid, np.ones((8, 8)))  # the 8 x 8 grid over the 64 px photo
        differ = np.abs(cells - grid.mean()) > 0.25
        near = np.abs(picture - np.asarray(expected, float))[differ].mean()
        far = np.abs(picture - np.asarray(flat, float))[differ].mean()
        assert far > near + 10, (path, near, far)
        assert np.abs(picture - plain[path]).mean() > 10  # and it is not the plain thumbnail


def test_explain_wants_a_page_and_one_text(index: Path, tmp_path: Path) -> None:
    page = str(tmp_path / "p.html")
    assert_one_line_error(
        run("search", TEXT, "--index", str(index), "--explain"), "--explain goes with --html"
    )
    photo = next((index.parent / "photos").glob("*.png"))
    result = run("search", str(photo), "--index", str(index), "--html", page, "--explain")
    assert_one_line_error(result, "--explain maps one text query")


def test_html_explain_overlays_a_blip_rerankers_maps(tiny_checkpoint, tmp_path) -> None:  # noqa: ANN001
    """`search --rerank --reranker BLIP --html --explain`: each picture is its photo with the
    BLIP map of the query over it (the index's own model has no head)."""
    pytest.importorskip("transformers")
    # the rerank tests' tiny random BLIP, saved with its processor
    folder = runpy.run_path(str(REPO / "tests" / "search" / "rerank" / "tiny_hf.py"))["build"](
        "blip", tmp_path / "blip"
    )
    scorer = load_blip_explainer(str(folder))
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(4)
    for i, scene in enumerate(SCENES):  # smooth pictures: JPEG keeps them close
        picture = render(scene, sample_layout(scene.relation, rng)).resize((64 + 16 * i, 48))
        picture.save(photos / f"photo {i}.png")
    index = tmp_path / "index"
    run_index(index, IndexOptions(roots=(photos,), model=tiny_checkpoint))
    page = tmp_path / "page.html"
    result = run("search", "a red circle", "--index", str(index), "--rerank", "--reranker",
                 str(folder), "--html", str(page), "--explain")  # fmt: skip
    assert result.returncode == 0, result.stderr
    pictures = _pictures(page)
    assert len(pictures) == 3
    for path, picture in pictures.items():
        explanation = explain_blip(scorer, Path(path).read_bytes(), "png", "a red circle")
        expected = np.asarray(overlay(Image.open(path), explanation.map_of(), explanation.geometry))
        assert picture.shape == expected.shape
        assert np.abs(picture - expected).mean() < 6  # JPEG's error
        assert np.abs(picture - np.asarray(Image.open(path), float)).mean() > 20
