"""search --text-match: RRF by hand, names and captions found through a real index, a real tiny
CoCa writing the captions, and the CLI's JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import assert_one_line_error, run, write_image
from indexer.pipeline import IndexOptions, run_index
from indexer.store.catalog import Catalog
from search.filters import Filters
from search.query import Term
from search.text_match import RRF_K, rrf
from search.wiring import build_engine


def test_rrf_by_hand():
    # a: 1/(60+1) + 1/(60+3); b: 1/(60+2); c: 1/(60+3) + 1/(60+1); d: 1/(60+2)
    fused = rrf([["a", "b", "c"], ["c", "d", "a"]])  # type: ignore[list-item]
    assert [item for item, _ in fused] == ["a", "c", "b", "d"]  # ties: first seen first
    assert fused[0][1] == pytest.approx(1 / (RRF_K + 1) + 1 / (RRF_K + 3))
    assert rrf([[], []]) == []


def _coca(tmp_path: Path, word: str) -> str:
    """A tiny CoCa whose decoder always says `word`: its last norm outputs a constant and the
    output projection maps that to `word`'s token (a real open_clip CoCa, real generation)."""
    import open_clip
    import torch

    from indexer.models.loading import register_configs

    register_configs()
    torch.manual_seed(0)
    model = open_clip.create_model("photoseek-shapes-coca")
    token = open_clip.get_tokenizer("photoseek-shapes-coca").encoder[f"{word}</w>"]
    with torch.no_grad():
        model.text_decoder.ln_final.weight.zero_()
        model.text_decoder.ln_final.bias.fill_(1.0)
        model.text_decoder.text_projection.zero_()
        model.text_decoder.text_projection[:, token] = 1.0
    path = tmp_path / f"coca-{word}.pt"
    torch.save(model.state_dict(), path)
    return f"coca:photoseek-shapes-coca:{path}"


@pytest.fixture
def gallery(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "beach trip").mkdir(parents=True)
    (root / "pets").mkdir()
    write_image(root / "beach trip" / "sunset.jpg", seed=1)
    write_image(root / "pets" / "cat_sofa.png", seed=2)
    write_image(root / "pets" / "IMG_0003.jpg", seed=3)
    (root / "pets" / "broken.jpg").write_bytes(b"not a picture")
    return root


def test_names_are_found_and_fused_under_filters(tmp_path, gallery, tiny_checkpoint):
    idx = tmp_path / "idx"
    run_index(idx, IndexOptions(roots=(gallery,), model=tiny_checkpoint))
    with build_engine(idx) as engine:
        hits = engine.search([Term("beach")], k=3, text_match=True)
        assert hits[0].path.endswith(b"beach trip/sunset.jpg")
        assert hits[0].extra["text_rank"] == 1 and "vector_rank" in hits[0].extra
        assert hits[0].score == pytest.approx(
            1 / (RRF_K + 1) + 1 / (RRF_K + hits[0].extra["vector_rank"])
        )
        assert all("text_rank" not in h.extra for h in hits[1:])
        under_pets = Filters(under=(str(gallery / "pets"),))
        hits = engine.search([Term("beach cat")], k=3, filters=under_pets, text_match=True)
        assert hits[0].path.endswith(b"cat_sofa.png") and len(hits) == 2
        assert all(b"/pets/" in h.path for h in hits)
        plain = engine.search([Term("beach")], k=3)
        assert all(not h.extra for h in plain)  # without --text-match: as before


def test_captions_are_stored_searched_and_kept_per_captioner(tmp_path, gallery, tiny_checkpoint):
    idx = tmp_path / "idx"
    lighthouse = _coca(tmp_path, "lighthouse")
    options = IndexOptions(roots=(gallery,), model=tiny_checkpoint, captions=True,
                           captioner=lighthouse, batch_size=2)  # fmt: skip
    assert run_index(idx, options).captioned == 3  # the three pictures; the bad file has no row
    assert run_index(idx, IndexOptions(model=tiny_checkpoint)).captioned == 0  # the same one
    write_image(gallery / "pets" / "dog.png", seed=4)
    assert run_index(idx, IndexOptions()).captioned == 1  # recorded: new photos get captions
    with build_engine(idx) as engine:
        hits = engine.search([Term("lighthouse")], k=10, text_match=True)
        assert len(hits) == 4 and all(h.caption and "lighthouse" in h.caption for h in hits)
        assert all("text_rank" in h.extra for h in hits)
    other = IndexOptions(captions=True, captioner=_coca(tmp_path, "volcano"))
    assert run_index(idx, other).captioned == 4  # another captioner: every photo again
    with build_engine(idx) as engine:
        assert engine.search([Term("lighthouse")], k=10, text_match=True)[0].extra.get(
            "text_rank") is None  # fmt: skip
        assert len([h for h in engine.search([Term("volcano")], k=10, text_match=True)
                    if "text_rank" in h.extra]) == 4  # fmt: skip
    catalog = Catalog.open(idx, read_only=True)
    assert len(catalog.captions_by_id(catalog.live_ids().tolist())) == 4
    catalog.close()


def test_cli_json_and_one_line_errors(tmp_path, gallery, tiny_checkpoint):
    idx = tmp_path / "idx"
    coca = _coca(tmp_path, "lighthouse")
    indexed = run("index", str(gallery), "--index", str(idx), "--model", tiny_checkpoint,
                  "--captions", "--captioner", coca, "-q", "--json")  # fmt: skip
    assert indexed.returncode == 0, indexed.stderr
    assert json.loads(indexed.stdout)["captioned"] == 3
    found = run("search", "sunset", "--index", str(idx), "--text-match", "--json", "-k", "2")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert hits[0]["path"].endswith("sunset.jpg") and hits[0]["text_rank"] == 1
    assert hits[0]["caption"].startswith("lighthouse") and "vector_rank" in hits[0]
    plain = json.loads(run("search", "sunset", "--index", str(idx), "--json").stdout)
    assert plain[0]["caption"].startswith("lighthouse")  # the cold path shows captions too
    for query in ('"', "NEAR(", "a -x*", 'say "cheese'):
        odd = run("search", query, "--index", str(idx), "--text-match", "--json")
        assert odd.returncode == 0, odd.stderr
    both = run("search", "x", "--index", str(idx), "--text-match", "--threshold", "0.1")
    assert_one_line_error(both, "--text-match")
    none = run("index", str(gallery), "--index", str(tmp_path / "other"), "--model",
               tiny_checkpoint, "--captions", "-q")  # fmt: skip
    assert_one_line_error(none, "--captioner")
    bad = run("index", str(gallery), "--index", str(tmp_path / "bad"), "--captioner", "coca:x")
    assert_one_line_error(bad, "--captioner")
    assert not (tmp_path / "bad").exists()  # refused before any work


def test_a_run_killed_mid_captioning_resumes(tmp_path, tiny_checkpoint):
    import os
    import signal
    import sqlite3
    import subprocess
    import time

    from helpers import PHOTOSEEK, photo_folder

    photos = 24
    root, idx = photo_folder(tmp_path, photos), tmp_path / "idx"
    args = [*PHOTOSEEK, "index", str(root), "--index", str(idx), "--model", tiny_checkpoint,
            "--captioner", _coca(tmp_path, "lighthouse"), "--batch-size", "1", "-q"]  # fmt: skip
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    query = "SELECT count(*) FROM image_text WHERE captioner IS NOT NULL"
    captioned, deadline = 0, time.monotonic() + 240
    try:
        # The indexer runs in short slices and is stopped while the catalog is read, so the
        # kill lands a few batches into captioning however fast this machine is.
        while captioned < 1 and child.poll() is None and time.monotonic() < deadline:
            os.kill(child.pid, signal.SIGCONT)
            time.sleep(0.02)
            os.kill(child.pid, signal.SIGSTOP)
            try:
                with sqlite3.connect(f"file:{idx / 'catalog.sqlite'}?mode=ro", uri=True) as conn:
                    captioned = conn.execute(query).fetchone()[0]
            except sqlite3.OperationalError:  # not created yet
                continue
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    with sqlite3.connect(idx / "catalog.sqlite") as conn:  # what committed before the kill
        captioned = conn.execute(query).fetchone()[0]
    assert 1 <= captioned < photos, "the kill came before the first or after the last batch"
    # what was committed survives; the next plain run captions exactly the rest
    assert run_index(idx, IndexOptions()).captioned == photos - captioned
    with build_engine(idx) as engine:
        hits = engine.search([Term("lighthouse")], k=photos, text_match=True)
        assert len([h for h in hits if "text_rank" in h.extra]) == photos


def test_a_file_that_fails_captioning_is_recorded_and_its_batch_goes_on(
    tmp_path, gallery, tiny_checkpoint
):
    import os
    import sqlite3

    idx = tmp_path / "idx"
    run_index(idx, IndexOptions(roots=(gallery,), model=tiny_checkpoint))
    spoilt = gallery / "pets" / "cat_sofa.png"  # broken since, with its size and time kept
    stat = spoilt.stat()
    spoilt.write_bytes(b"\0" * stat.st_size)
    os.utime(spoilt, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    options = IndexOptions(captioner=_coca(tmp_path, "lighthouse"), batch_size=3)
    assert run_index(idx, options).captioned == 3
    with sqlite3.connect(idx / "catalog.sqlite") as conn:
        rows = conn.execute(
            "SELECT i.path, t.caption, t.caption_error FROM image_text t "
            "JOIN images i ON i.id = t.image_id WHERE i.status = 'ok' ORDER BY i.path"
        ).fetchall()
    by_name = {os.path.basename(path): (caption, error) for path, caption, error in rows}
    assert by_name[b"cat_sofa.png"][0] is None and by_name[b"cat_sofa.png"][1]
    assert all(caption for name, (caption, _) in by_name.items() if name != b"cat_sofa.png")
    assert run_index(idx, IndexOptions()).captioned == 0  # not retried by the same captioner
    listed = run("errors", "--index", str(idx), "--json")  # and `photoseek errors` says why
    assert listed.returncode == 0, listed.stderr
    reasons = {os.path.basename(f["path"]): f["reason"] for f in json.loads(listed.stdout)}
    assert reasons["cat_sofa.png"].startswith("captioning: ")
    assert reasons["broken.jpg"] and not reasons["broken.jpg"].startswith("captioning")
