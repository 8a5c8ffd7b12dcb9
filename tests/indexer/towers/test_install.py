"""Installing towers from the per-user export cache: concurrent exporters, damaged caches and
killed installs must never leave an index with broken or missing towers. Exports run in a
child process: the indexer never holds an export's peak, and a child that fails or dies is
one line and leaves nothing half-installed behind."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO, TINY
from indexer.errors import WeightsUnavailable
from indexer.locations import TOWERS_DIR
from indexer.models.embedder import embed_texts
from indexer.models.loading import LoadedModel, ModelSpec, load_model
from indexer.progress import Progress
from indexer.towers.child_export import ExportFailed
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


def test_an_install_killed_after_its_swap_is_tidied_by_the_next(tiny_loaded, tmp_path):
    """Killed between swapping the folders and deleting the old towers: the index's towers
    are whole, and the next install (which has nothing to install) drops the old ones."""
    index = tmp_path / "index"
    install_towers(index, tiny_loaded.identity, lambda: tiny_loaded)
    shutil.copytree(index / TOWERS_DIR, index / f"{TOWERS_DIR}.new-0123456789abcdef")
    assert not install_towers(index, tiny_loaded.identity, lambda: tiny_loaded)
    assert leftovers(index) == []


# Both exports of a first index with the int8 engine, in a fresh interpreter; it reports how
# far its own peak RSS grew (Linux: KiB) and whether it ever imported torch.
PARENT_SCRIPT = """
import resource, sys
from pathlib import Path
import onnxruntime  # the engine's own runtime: part of any int8 indexer
from indexer.models.loading import ModelSpec
from indexer.towers.image_engine import open_onnx_engine
from indexer.towers.install import install_towers

spec = ModelSpec.parse(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert install_towers(Path(sys.argv[2]), spec.identity())
engine = open_onnx_engine(spec, "int8")
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "open_clip", "onnx"))
print(grown, heavy[:3], engine.dim)
"""


def test_towers_exported_in_a_child_embed_as_the_model(tiny_loaded, empty_cache, tmp_path):
    steps: list[Progress] = []
    assert install_towers(tmp_path / "index", tiny_loaded.identity, progress=steps.append)
    assert_towers_embed_like(tmp_path / "index" / TOWERS_DIR, tiny_loaded)
    assert [(s.stage, s.done, s.total) for s in steps] == [("exporting", i, 2) for i in range(3)]
    assert leftovers(cache_root()) == [] and leftovers(tmp_path) == []


def test_the_parent_never_holds_the_export(tiny_checkpoint, empty_cache, tmp_path):
    """An in-process export imports torch, open_clip and onnx (~900 MB of RSS on their own)
    before any weights: the parent of a child export grows by the engine's session alone."""
    result = subprocess.run(
        [sys.executable, "-c", PARENT_SCRIPT, tiny_checkpoint, str(tmp_path / "index")],
        cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    grown, heavy, _ = result.stdout.split(" ", 2)
    assert heavy == "[]", result.stdout
    assert int(grown) < 150 * 1024, f"the parent's peak RSS grew by {grown} KiB"


def test_a_child_error_is_typed_and_installs_nothing(empty_cache, tmp_path):
    checkpoint = tmp_path / "broken.pt"
    checkpoint.write_bytes(b"not a checkpoint" * 64)
    spec = ModelSpec.parse(f"{TINY}:{checkpoint}")
    with pytest.raises(WeightsUnavailable) as caught:
        install_towers(tmp_path / "index", spec.identity())
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "index" / TOWERS_DIR).exists()
    assert [p.name for p in cache_root().iterdir() if p.is_dir()] == []


def _export_children() -> list[int]:
    """This process's children that run an export."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"indexer.towers.export_job" in command:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_child_is_one_line_and_leaves_no_half_installed_cache(
    tiny_loaded, empty_cache, tmp_path
):
    errors: list[BaseException] = []

    def install() -> None:
        try:
            install_towers(tmp_path / "index", tiny_loaded.identity)
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread
            errors.append(e)

    worker = threading.Thread(target=install)
    worker.start()
    deadline = time.monotonic() + 120
    while not (children := _export_children()):
        assert worker.is_alive() and time.monotonic() < deadline, "no export child seen"
        time.sleep(0.01)
    os.kill(children[0], signal.SIGKILL)  # as the kernel's OOM killer would
    worker.join(timeout=120)
    (error,) = errors
    assert isinstance(error, ExportFailed), error
    assert "killed by SIGKILL" in str(error) and "\n" not in str(error)
    assert not (tmp_path / "index" / TOWERS_DIR).exists()
    assert [p.name for p in cache_root().iterdir() if p.is_dir()] == []
    # the next install exports whole
    assert install_towers(tmp_path / "index", tiny_loaded.identity)
    assert_towers_embed_like(tmp_path / "index" / TOWERS_DIR, tiny_loaded)
