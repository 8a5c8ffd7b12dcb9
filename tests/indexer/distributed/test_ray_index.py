"""`photoseek index --ray` on a real local Ray cluster: the same catalog and vectors as a local
run, resume after the driver is SIGKILLed, bad files recorded with their reason."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image

from helpers import PHOTOSEEK, REPO, assert_one_line_error, consistency, photo_folder, write_image
from indexer.errors import PhotoseekError
from indexer.pipeline import IndexOptions, IndexSummary, run_index
from indexer.store.catalog import Catalog
from indexer.store.index_dir import model_record

DEMO_MODEL = str(REPO / "data" / "demo-model")


class Cluster(NamedTuple):
    address: str  # for drivers in other processes
    cache: Path  # its workers' XDG_CACHE_HOME


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One real local cluster for the module (started in ~10 s). Its workers have a cache
    folder of their own, as on another node (they build their own ONNX engine there, which
    shows that they embedded), and no network."""
    pytest.importorskip("ray.data", reason="photoseek[ray] is not installed")
    import ray

    cache = tmp_path_factory.mktemp("ray-cache")
    env = {
        "XDG_CACHE_HOME": str(cache),
        "XDG_DATA_HOME": str(tmp_path_factory.mktemp("ray-xdg")),
        "HF_HUB_OFFLINE": "1",
        "RAY_AUTH_MODE": "disabled",  # else Ray writes a token into the home folder
    }
    with pytest.MonkeyPatch.context() as patch:  # the raylet, and so every worker, inherits it
        for name, value in env.items():
            patch.setenv(name, value)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield Cluster(ray.get_runtime_context().gcs_address, cache)
    finally:
        ray.shutdown()


def index(root: Path, idx: Path, model: str, ray_address: str | None, **options) -> IndexSummary:
    # int8, what auto picks on any CPU, named so that a GPU box runs it too: the ONNX engine,
    # which the actors build for themselves
    options = {"precision": "int8", **options}
    return run_index(idx, IndexOptions(roots=(root,), model=model, ray=ray_address, **options))


def camera_jpeg(path: Path, seed: int) -> None:
    exif = Image.Exif()
    exif.update({271: "Canon", 272: "EOS R5", 0x0112: 6})
    exif.get_ifd(0x8769)[36867] = "2021:07:04 15:30:45"
    write_image(path, seed=seed, size=(120, 80), exif=exif, quality=90)


def truncated_png(path: Path, seed: int) -> None:
    """A PNG whose header reads (so the driver hashes it and the cluster gets it) but whose
    pixels stop short: it fails in the actor's decode."""
    write_image(path, seed=seed)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def catalog_rows(idx: Path) -> dict[bytes, tuple[object, ...]]:
    catalog = Catalog.open(idx)
    try:
        rows = catalog.all_rows()
    finally:
        catalog.close()
    # indexed_at and the row id are when and in which order, not what
    return {r.path: (*(getattr(r, f) for f in FIELDS),) for r in rows}


FIELDS = (
    "size",
    "mtime_ns",
    "content_hash",
    "width",
    "height",
    "taken_at",
    "camera_make",
    "camera_model",
    "status",
    "error",
    "decoder",
)


def tokens_by_path(idx: Path) -> dict[bytes, np.ndarray]:
    catalog = Catalog.open(idx)
    try:
        ids = catalog.live_ids().tolist()
        rows, tokens = catalog.rows_by_id(ids), catalog.tokens_by_id(ids)
    finally:
        catalog.close()
    return {rows[i].path: t.astype(np.float32) for i, t in tokens.items()}


def vectors_by_path(idx: Path) -> dict[bytes, np.ndarray]:
    catalog, live = consistency(idx)
    try:
        record = model_record(catalog)
        assert record is not None
        rows = catalog.rows_by_id(live.tolist())
        stored = catalog.vectors(live, record.dim)
    finally:
        catalog.close()
    return {rows[int(i)].path: v for i, v in zip(live, stored, strict=True)}


def test_ray_run_equals_local_run_bad_files_included(cluster, tmp_path, photos):
    """With the shipped demo model, whose ITM head gives each image tokens to store too."""
    camera_jpeg(photos / "camera.jpg", seed=20)
    truncated_png(photos / "trip 2024" / "cut short.png", seed=21)
    local = index(photos, tmp_path / "local", DEMO_MODEL, None, batch_size=4)
    remote = index(photos, tmp_path / "ray", DEMO_MODEL, cluster.address, batch_size=4)

    assert remote.counts() | {"seconds": 0} == local.counts() | {"seconds": 0}
    assert remote.embedder == local.embedder == {"precision": "int8", "engine": "onnxruntime"}
    assert list(cluster.cache.rglob("image-engines/*")), "the actors did not load the model"
    assert (local.added, local.reused, local.errors) == (10, 1, 2)  # a copy; two bad files
    rows = catalog_rows(tmp_path / "ray")
    assert rows == catalog_rows(tmp_path / "local")
    here, there = vectors_by_path(tmp_path / "local"), vectors_by_path(tmp_path / "ray")
    assert here.keys() == there.keys() and len(here) == 10
    for path, vector in here.items():
        assert float(vector @ there[path]) >= 0.9999, path
    here_tokens, there_tokens = tokens_by_path(tmp_path / "local"), tokens_by_path(tmp_path / "ray")
    assert here_tokens.keys() == here.keys() == there_tokens.keys()
    for path, tokens in here_tokens.items():
        assert np.allclose(tokens, there_tokens[path], atol=2e-2), path
    camera = dict(zip(FIELDS, rows[os.fsencode(photos / "camera.jpg")], strict=True))
    assert (camera["width"], camera["height"]) == (80, 120)  # turned upright by its EXIF
    assert (camera["taken_at"], camera["camera_model"]) == ("2021-07-04T15:30:45", "EOS R5")
    # The truncated PNG failed inside an actor's batch of 4: recorded with its reason, while
    # its batch-mates were embedded (every other file has its vector).
    cut = dict(zip(FIELDS, rows[os.fsencode(photos / "trip 2024" / "cut short.png")], strict=True))
    assert cut["status"] == "error" and cut["error"] and cut["decoder"]


def test_an_actor_that_cannot_load_the_model_fails_the_run_in_one_line(
    cluster, tmp_path, tiny_checkpoint
):
    root = photo_folder(tmp_path, 2)
    with pytest.raises(PhotoseekError, match="a Ray actor could not load the model: ") as caught:
        # the driver never opens the model on a device; the actors cannot open one named so
        index(
            root,
            tmp_path / "idx",
            tiny_checkpoint,
            cluster.address,
            precision="fp32",
            device="no-such-device",
        )
    assert "\n" not in str(caught.value) and "no-such-device" in str(caught.value)
    catalog = Catalog.open(tmp_path / "idx")
    try:
        assert catalog.all_rows() == []  # nothing committed: a later run does it all
    finally:
        catalog.close()


# The driver SIGKILLs itself right after its Nth commit: a real kill at a known point (a kill
# between commits and one inside a commit are alike to SQLite: the transaction is all or nothing).
KILL_AFTER_COMMITS = """
import os, signal, sys
from indexer.store.catalog import Catalog
_write = Catalog.write_batch
_commits = [0]
def _write_then_die(self, *args, **kwargs):
    ids = _write(self, *args, **kwargs)
    _commits[0] += 1
    if _commits[0] == {n}:
        os.kill(os.getpid(), signal.SIGKILL)
    return ids
Catalog.write_batch = _write_then_die
from search.cli import main
sys.argv[0] = "photoseek"
main()
"""


def test_sigkill_of_the_driver_then_resume(cluster, tmp_path, tiny_checkpoint):
    total = 24
    root = photo_folder(tmp_path, total)
    idx = tmp_path / "idx"
    args = [str(root), "--index", str(idx), "--model", tiny_checkpoint, "--batch-size", "2"]
    # A cache of the driver's own: it exports the query towers there, and builds no image
    # engine (it never embeds: the actors do)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "driver-cache")}
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILL_AFTER_COMMITS.format(n=3),
            "index",
            *args,
            "--ray",
            cluster.address,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    catalog = Catalog.open(idx)
    try:
        survived = len(catalog.all_rows())
    finally:
        catalog.close()
    assert 0 < survived < total

    rerun = subprocess.run(
        [*PHOTOSEEK, "index", *args, "--ray", cluster.address, "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["added"] == total - survived  # nothing embedded twice, nothing lost
    assert (summary["unchanged"], summary["errors"]) == (survived, 0)
    assert len(vectors_by_path(idx)) == total
    assert not list((tmp_path / "driver-cache").rglob("image-engines"))


def test_without_ray_the_option_fails_in_one_line_naming_the_extra(tmp_path, tiny_checkpoint):
    shim = tmp_path / "no-ray"
    (shim / "ray").mkdir(parents=True)  # found first on the path: `import ray` fails as if absent
    (shim / "ray" / "__init__.py").write_text("raise ImportError('ray is not installed')\n")
    root = photo_folder(tmp_path, 1)
    result = subprocess.run(
        [*PHOTOSEEK, "index", str(root), "--index", str(tmp_path / "idx")]
        + ["--model", tiny_checkpoint, "--ray", "local"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(shim)},
    )
    assert_one_line_error(result, "pip install 'photoseek[ray]'")
    assert not (tmp_path / "idx" / "catalog.sqlite").exists()  # refused before any work
