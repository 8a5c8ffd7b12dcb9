"""Installing towers from the per-user export cache: concurrent exporters, damaged caches and
killed installs must never leave an index with broken or missing towers."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO
from indexer.locations import TOWERS_DIR
from indexer.models.embedder import embed_texts
from indexer.models.loading import LoadedModel, ModelSpec, load_model
from indexer.towers.install import cache_root, install_towers
from indexer.towers.spec import TOWERS_FILE, TowersSpec
from search.encoders.towers import TextEncoder

TEXTS = ["a photo of a dog", "a red car at night", ""]


@pytest.fixture(scope="module")
def tiny_loaded(tiny_checkpoint: str) -> LoadedModel:
    return load_model(ModelSpec.parse(tiny_checkpoint), "fp32", "cpu")


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user cache with no exports in it, so that the first install exports."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def assert_towers_embed_like(folder: Path, loaded: LoadedModel) -> None:
    """The towers in `folder` load and embed as the torch model they were exported from."""
    got = TextEncoder(folder).encode(TEXTS)
    expected = embed_texts(loaded, TEXTS)
    assert np.min(np.sum(got * expected, axis=1)) >= 0.999


def leftovers(folder: Path) -> list[str]:
    """Names of half-made exports or copies left in `folder` (the cache or an index)."""
    return sorted(p.name for p in folder.iterdir() if ".new-" in p.name or ".old-" in p.name
                  or ".tmp-" in p.name)  # fmt: skip


INSTALL_SCRIPT = """
import os, sys, time
from pathlib import Path
from indexer.models.loading import ModelSpec, load_model
from indexer.towers.install import install_towers

spec, index, go = ModelSpec.parse(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
loaded = load_model(spec, "fp32", "cpu")
Path(sys.argv[4]).touch()  # ready
while not go.exists():
    time.sleep(0.005)
for _ in range(int(sys.argv[5])):
    install_towers(index, spec.identity(), lambda: loaded)
    if int(sys.argv[5]) > 1:  # outdate the towers (a new file: the old is the cache's too)
        spec_file, tmp = index / "towers" / "towers.json", index / "towers" / "outdated"
        tmp.write_text(spec_file.read_text().replace('"version": ', '"version": -'))
        os.replace(tmp, spec_file)
"""


def start_installers(
    checkpoint: str, indexes: list[Path], go: Path, rounds: int = 1
) -> list[subprocess.Popen[str]]:
    """One real process per index, each loading the model and then waiting for `go`."""
    procs = []
    for index in indexes:
        ready = index.with_name(index.name + ".ready")
        args = [checkpoint, str(index), str(go), str(ready), str(rounds)]
        procs.append(subprocess.Popen(
            [sys.executable, "-c", INSTALL_SCRIPT, *args], cwd=REPO, env=dict(os.environ),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))  # fmt: skip
    for index in indexes:
        ready = index.with_name(index.name + ".ready")
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.05)
    return procs


def test_two_processes_exporting_the_same_model_at_once(
    tiny_checkpoint, tiny_loaded, empty_cache, tmp_path
):
    """Two first indexes of one model started together: one exports while the other waits,
    and both end with complete towers (neither deletes the other's files)."""
    indexes = [tmp_path / "index-a", tmp_path / "index-b", tmp_path / "index-c"]
    go = tmp_path / "go"
    procs = start_installers(tiny_checkpoint, indexes, go)
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    for index in indexes:
        assert_towers_embed_like(index / TOWERS_DIR, tiny_loaded)
        assert leftovers(index) == []
    entries = [p for p in cache_root().iterdir() if p.is_dir()]
    assert len(entries) == 1 and leftovers(cache_root()) == []


def damage(path: Path, how: str) -> None:
    """Damage a cached file in place, as a full disk, a crash or a bad sector would."""
    if how == "truncated":
        with path.open("r+b") as f:
            f.truncate(path.stat().st_size // 2)
    elif how == "flipped":  # same size: only a checksum tells
        data = bytearray(path.read_bytes())
        for i in range(0, len(data), 97):
            data[i] ^= 0x5A
        with path.open("r+b") as f:
            f.write(data)
    else:
        path.unlink()


@pytest.mark.parametrize("how", ["truncated", "flipped", "missing"])
def test_a_damaged_cached_export_is_exported_again(tiny_loaded, empty_cache, tmp_path, how):
    calls = []

    def load() -> LoadedModel:
        calls.append(1)
        return tiny_loaded

    identity = tiny_loaded.identity
    assert install_towers(tmp_path / "first", identity, load)
    (entry,) = [p for p in cache_root().iterdir() if p.is_dir()]
    spec = TowersSpec.read(entry)
    damaged = entry / spec.text_file
    if damaged.with_name(damaged.name + ".data").is_file():  # weights beside the graph
        damaged = damaged.with_name(damaged.name + ".data")
    # The first index's copy is a hard link to the same bytes: give it its own first.
    first = tmp_path / "first" / TOWERS_DIR / damaged.name
    shutil.copyfile(first, tmp_path / "own")
    os.replace(tmp_path / "own", first)
    damage(damaged, how)

    assert install_towers(tmp_path / "second", identity, load)
    assert len(calls) == 2  # the damage was seen: exported again, not copied
    assert_towers_embed_like(tmp_path / "second" / TOWERS_DIR, tiny_loaded)
    assert_towers_embed_like(entry, tiny_loaded)  # the cache is repaired too
    assert not install_towers(tmp_path / "first", identity, load)  # intact: left as it is


def test_a_killed_install_never_leaves_an_index_without_towers(
    tiny_checkpoint, tiny_loaded, tmp_path
):
    """Installs that replace an index's (outdated) towers, over and over, watched by a reader
    and killed at random moments: the reader never finds the towers missing, and after a kill
    the next install completes and tidies up."""
    index = tmp_path / "index"
    install_towers(index, tiny_loaded.identity, lambda: tiny_loaded)
    towers_file = index / TOWERS_DIR / TOWERS_FILE
    rng = random.Random(11)
    for attempt in range(4):
        go = tmp_path / f"go-{attempt}"
        (ready := index.with_name(index.name + ".ready")).unlink(missing_ok=True)
        (proc,) = start_installers(tiny_checkpoint, [index], go, rounds=100_000)
        go.touch()
        until, looks = time.monotonic() + rng.uniform(0.5, 1.5), 0
        while time.monotonic() < until:  # what a search sees meanwhile
            assert towers_file.is_file(), f"no towers after {looks} looks"
            looks += 1
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        ready.unlink()
        assert towers_file.is_file(), os.listdir(index)
        json.loads(towers_file.read_text())  # whole, old or new
        install_towers(index, tiny_loaded.identity, lambda: tiny_loaded)
        assert_towers_embed_like(index / TOWERS_DIR, tiny_loaded)
        assert leftovers(index) == [] and leftovers(cache_root()) == []
