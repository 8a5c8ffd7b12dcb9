"""`photoseek search/describe/duplicates/texts` on a real tiny-model index of odd file names."""

from __future__ import annotations

import json
import os
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from helpers import assert_one_line_error, run, write_image
from indexer.pipeline import IndexOptions, run_index
from search.engine import Engine

ODD_NAMES = [
    b"plain.png",
    b"with space.png",
    b"new\nline.png",
    b"caf\xe9 latin1.png",
    b"\xff\xfe.png",
]


def scene(seed: int) -> Image.Image:
    """A picture of coloured ellipses: different seeds look different to the model."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (320, 240), tuple(int(x) for x in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.integers(0, 260), rng.integers(0, 180)
        w, h = rng.integers(30, 120, 2)
        draw.ellipse([x, y, x + w, y + h], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image


@pytest.fixture(scope="module")
def odd_index(tmp_path_factory, tiny_checkpoint, towers_cache) -> tuple[Path, Path]:
    """(index dir, photo dir): odd names, distinct scenes, a resized and a re-encoded copy."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_CACHE_HOME", str(towers_cache))
        root = tmp_path_factory.mktemp("odd")
        for seed, name in enumerate(ODD_NAMES):
            scene(seed).save(os.fsencode(root) + b"/" + name, format="PNG")
        scene(0).resize((160, 120)).save(root / "plain small.jpg", quality=85)
        scene(0).save(root / "plain recompressed.jpg", quality=60)
        write_image(root / "noise.png", seed=9)
        index = tmp_path_factory.mktemp("idx")
        run_index(index, IndexOptions(roots=(root,), model=tiny_checkpoint))
        return index, root


def all_paths(root: Path) -> set[bytes]:
    return {os.fsencode(root) + b"/" + name for name in os.listdir(os.fsencode(root))}


def test_json_round_trips_every_path(odd_index):
    index, root = odd_index
    result = run("search", "a photo", "--index", str(index), "-k", "20", "--json")
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert {os.fsencode(h["path"]) for h in hits} == all_paths(root)
    assert [h["rank"] for h in hits] == list(range(1, 9))
    assert all(set(h) >= {"path", "score", "id", "width", "height", "taken_at"} for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_paths_nul_separated(odd_index):
    index, root = odd_index
    result = run_bytes("search", "a photo", "--index", str(index), "-k", "20", "--paths", "-0")
    assert set(result.split(b"\0")[:-1]) == all_paths(root)
    assert result.endswith(b"\0")


def run_bytes(*args: str) -> bytes:
    import subprocess

    from helpers import PHOTOSEEK

    done = subprocess.run([*PHOTOSEEK, *args], capture_output=True, timeout=120, check=True)
    return done.stdout


class _Figures(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images, self.links = [], []

    def handle_starttag(self, tag, attrs):  # noqa: ANN001, ANN201
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "a" and attrs.get("class") == "path":
            self.links.append(attrs["href"])


def test_html_page_is_self_contained(odd_index, tmp_path):
    index, root = odd_index
    page = tmp_path / "results.html"
    result = run("search", "a photo", "--index", str(index), "-k", "5", "--html", str(page))
    assert result.returncode == 0, result.stderr
    parser = _Figures()
    parser.feed(page.read_text(encoding="utf-8"))
    assert len(parser.images) == 5 and all(
        s.startswith("data:image/jpeg;base64,") for s in parser.images
    )
    from urllib.parse import unquote_to_bytes

    linked = {unquote_to_bytes(href.removeprefix("file://")) for href in parser.links}
    assert linked <= all_paths(root) and len(linked) == 5


def test_image_query_finds_itself_and_its_copies(odd_index):
    index, root = odd_index
    result = run(
        "search", str(root / "plain small.jpg"), "--index", str(index), "-k", "3", "--json"
    )
    hits = json.loads(result.stdout)
    assert {os.path.basename(os.fsencode(h["path"])) for h in hits} == {
        b"plain.png", b"plain small.jpg", b"plain recompressed.jpg"}  # fmt: skip
    assert hits[0]["score"] > 0.999
    plain = run("search", "--image", str(root / "noise.png"), "--index", str(index), "-k", "1")
    rank, score, path = plain.stdout.rstrip("\n").split("\t")
    assert (rank, path) == ("1", str(root / "noise.png")) and float(score) > 0.999


def test_duplicates_groups_resized_and_recompressed_copies(odd_index):
    index, root = odd_index
    result = run("duplicates", "--index", str(index), "--threshold", "0.99", "--json")
    groups = json.loads(result.stdout)
    assert len(groups) == 1 and not groups[0]["exact"]
    assert {os.path.basename(os.fsencode(p)) for p in groups[0]["paths"]} == {
        b"plain.png", b"plain small.jpg", b"plain recompressed.jpg"}  # fmt: skip


def test_describe_ranks_texts_by_their_match_with_the_image(odd_index, tmp_path):
    """`describe --texts` orders the texts by their cosine with the image, as the index's own
    encoders score them; a second run (its embeddings now cached in the index) answers alike."""
    index, root = odd_index
    texts = ["a red car", "the one true caption", "a dog", "mountains at dawn"]
    with Engine.open(index) as engine:
        image_vector = engine.encode_images([os.fsencode(root / "noise.png")])[0]
        scores = engine.encode_texts(texts) @ image_vector
    candidates = tmp_path / "texts.txt"
    candidates.write_text("\n".join(texts) + "\n")
    args = ("describe", str(root / "noise.png"), "--index", str(index), "--texts", str(candidates))
    ranked = json.loads(run(*args, "--json").stdout)
    assert [hit["text"] for hit in ranked] == [texts[i] for i in np.argsort(-scores)]
    assert [hit["score"] for hit in ranked] == pytest.approx(sorted(scores, reverse=True), abs=1e-5)
    assert json.loads(run(*args, "--json").stdout) == ranked
    vocab = json.loads(run("describe", str(root / "noise.png"), "--index", str(index), "-k", "7",
                           "--json").stdout)  # fmt: skip
    assert len(vocab) == 7 and all(isinstance(v["text"], str) for v in vocab)


def test_caption_corpus(odd_index, tmp_path):
    index, root = odd_index
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a cat\na boat\na cat\n\na tree\n")
    assert run("texts", "add", str(corpus), "--index", str(index)).returncode == 0
    result = run("describe", str(root / "plain.png"), "--index", str(index), "--corpus", "--json")
    assert sorted(h["text"] for h in json.loads(result.stdout)) == ["a boat", "a cat", "a tree"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("search",), "empty query"),
        (("search", "x", "--after", "2024-13-45"), "malformed date"),
        (("search", "x", "-k", "0"), "k must be at least 1"),
        (("search", "--image", "/nonexistent.jpg"), "not found"),
        (("search", "x", "--model", "ViT-B-32:openai"), "built with"),
        (("describe", "/nonexistent.jpg"), "not found"),
    ],
)
def test_query_errors(odd_index, args, fragment):
    index, _ = odd_index
    assert_one_line_error(run(*args, "--index", str(index)), fragment)


def test_undecodable_query_image_and_missing_index(odd_index, tmp_path):
    index, _ = odd_index
    fake = tmp_path / "fake.jpg"
    fake.write_text("not a picture")
    assert_one_line_error(run("search", str(fake), "--index", str(index)), "not an image")
    assert_one_line_error(
        run("search", "x", "--index", str(tmp_path / "none")), "no photoseek index"
    )
