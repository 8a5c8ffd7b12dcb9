"""`photoseek describe IMAGE --caption`: a caption written for a photo read through photoseek's
decoder, by a named captioner or the index's own CoCa; every mistake one line, exit 2."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import REPO, assert_one_line_error, photo_folder, run
from indexer.captioning import Generation, load_captioner
from indexer.pipeline import IndexOptions, run_index
from search.tools.caption import caption_file


@pytest.fixture(scope="module")
def coca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The captioning tests' tiny CoCa (their builders are a module, not a package)."""
    builders = runpy.run_path(str(REPO / "tests" / "indexer" / "captioning" / "tiny_captioners.py"))
    return builders["build_coca"](tmp_path_factory.mktemp("coca") / "coca")


@pytest.fixture(scope="module")
def captioner(coca: Path):  # noqa: ANN201
    return load_captioner(str(coca), Generation(max_tokens=6), device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60x40 noise photo (not square: photoseek's decoder makes it the CoCa's 32 px)."""
    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("photos") / "a photo é.png"
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(path)
    return path


def test_the_file_is_read_through_the_decoder(captioner, picture, tmp_path):
    written = caption_file(captioner, picture)
    assert written.captioner == captioner.spec
    with Image.open(picture) as image:
        upright = image.copy()
    assert written.caption == captioner.caption([upright])[0]
    # the same picture stored turned a quarter, with EXIF orientation 6 to stand it up again
    turned = tmp_path / "turned.png"
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(turned, exif=exif.tobytes())
    assert caption_file(captioner, turned).caption == written.caption


def test_the_cli_prints_the_caption(coca, picture, tmp_path):
    # the CLI's defaults: this machine's device and precision, greedy, 30 tokens
    expected = caption_file(load_captioner(str(coca)), picture).caption
    result = run("describe", str(picture), "--caption", "--captioner", str(coca), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"caption": expected, "captioner": str(coca)}
    # no --captioner: the index's own model, a CoCa here
    index = tmp_path / "index"
    run_index(index, IndexOptions(roots=(photo_folder(tmp_path, 2),), model=str(coca)))
    plain = run("describe", str(picture), "--caption", "--index", str(index))
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == expected


def test_without_a_captioner_the_index_model_must_be_a_coca(tiny_checkpoint, picture, tmp_path):
    index = tmp_path / "index"
    run_index(index, IndexOptions(roots=(photo_folder(tmp_path, 2),), model=tiny_checkpoint))
    result = run("describe", str(picture), "--caption", "--index", str(index))
    assert_one_line_error(result, "is not a CoCa and cannot caption; name one with --captioner")
    missing = run("describe", str(picture), "--caption", "--index", str(tmp_path / "none"))
    assert_one_line_error(missing, "no captioner:")


def test_mistakes_are_one_line(coca, picture, tmp_path):
    fake = tmp_path / "fake.jpg"
    fake.write_text("not a picture")
    assert_one_line_error(run("describe", str(fake), "--captioner", str(coca)), "fake.jpg")
    assert_one_line_error(run("describe", str(picture), "--captioner", "coca:x"), "want coca:")
    assert_one_line_error(
        run("describe", str(picture), "--caption", "--vocab", "photo"), "takes no --texts"
    )
    assert_one_line_error(
        run("describe", str(picture), "--captioner", str(REPO / "data" / "demo-model")),
        "not a CoCa",
    )
