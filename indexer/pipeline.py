"""One indexing run: walk the roots, embed what is new or changed, drop what is gone.

Unchanged files cost one stat. New and changed files are read once: hashed, and either given the
vector of a byte-identical file already indexed (a rename, move or copy: no model call) or decoded
in worker threads (Pillow releases the GIL) while the model embeds the previous batch. Each batch
is committed to the catalog with its vectors; the FAISS index is synced and saved atomically at
the end. A run killed at any moment resumes where its last commit left off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexer.captioning import load_captioner
from indexer.distributed.ray_run import RaySettings, embed_on_ray, require_ray
from indexer.distributed.worker import Embedded, WorkerModel
from indexer.errors import BadInput, UnreadableImage, WeightsUnavailable
from indexer.media import decode as decoding
from indexer.media.decoder_version import decoder_version
from indexer.media.discovery import FoundFile, WalkOptions, extension
from indexer.media.exif import PhotoInfo
from indexer.models.embedder import Embedder
from indexer.models.loading import DEFAULT_MODEL, PRECISIONS, ModelSpec
from indexer.plan import Plan, Root, plan_run, resolve_roots
from indexer.progress import Progress
from indexer.store import vector_store
from indexer.store.caption_run import CaptionOptions, update_keywords
from indexer.store.catalog import OFFLINE, Catalog, NewImage
from indexer.store.index_dir import ModelRecord, check_model, model_record, writer_lock
from indexer.towers.image_engine import open_image_embedder
from indexer.towers.install import install_towers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexOptions:
    """What one `photoseek index` run does."""

    roots: tuple[str | os.PathLike[str], ...] = ()  # none: every root the index knows
    model: str | None = None  # none: the index's own model, or DEFAULT_MODEL for a new index
    precision: str = "auto"
    device: str | None = None
    walk: WalkOptions | None = None  # none: each root's stored options (defaults for a new one)
    batch_size: int = 32
    workers: int = max(1, os.cpu_count() or 1)
    dry_run: bool = False
    retry_errors: bool = False  # retry every failed file, not only those of another decoder
    prune: bool = False  # delete the rows left offline under these roots
    max_index_memory: int | None = None  # bytes the vector index may take (none: a share of RAM)
    ray: str | None = None  # decode + embed on a Ray cluster: "local", "auto" or its address
    captions: bool = False  # caption the photos (with `captioner`, else the recorded one)
    captioner: str | None = None  # a --captioner SPEC (`indexer.captioning.spec`)


@dataclass
class IndexSummary:
    """What a run did (or, with dry_run, would do). Paths are raw bytes."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    reused: int = 0
    errors: int = 0
    unchanged: int = 0
    offline: int = 0  # live rows whose folder could not be reached: kept, out of searches
    captioned: int = 0  # images captioned (or failed to be) by the captions stage
    seconds: float = 0.0
    dry_run: bool = False
    to_add: list[bytes] = field(default_factory=list)
    to_update: list[bytes] = field(default_factory=list)
    to_remove: list[bytes] = field(default_factory=list)
    embedder: dict[str, str] | None = None  # {"precision", "engine"} when a file was embedded

    def counts(self) -> dict[str, int | float]:
        return {
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "reused": self.reused,
            "errors": self.errors,
            "unchanged": self.unchanged,
            "offline": self.offline,
            "captioned": self.captioned,
            "seconds": round(self.seconds, 3),
        }


# What embedding one file yields: its vector and, with an ITM head, its tokens.
_Output = tuple[np.ndarray, np.ndarray | None]


@dataclass
class _Job:
    found: FoundFile
    replaces: int | None  # the row id of the old version of a changed file
    content_hash: bytes | None = None
    decoded: decoding.Decoded | None = None
    error: str | None = None
    reuse: bool = False  # the vector comes from a byte-identical file
    output: _Output | None = None  # embedded on a Ray actor, which read `info` too
    info: PhotoInfo | None = None

    def output_in(self, found: dict[bytes, _Output]) -> _Output | None:
        """The vector and tokens `found` holds for this file's bytes, if any."""
        return None if self.content_hash is None else found.get(self.content_hash)


def run_index(
    directory: Path, options: IndexOptions, progress: Callable[[Progress], None] | None = None
) -> IndexSummary:
    """Bring the index in `directory` up to date with its roots (creating it if needed)."""
    started = time.perf_counter()
    if options.batch_size < 1 or options.workers < 1:
        raise BadInput("--batch-size and --workers must be at least 1")
    if options.precision not in PRECISIONS:
        raise BadInput(f"unknown precision {options.precision!r}; use {', '.join(PRECISIONS)}")
    if options.ray is not None:
        require_ray()  # at once, not after the walk: without the extra, --ray cannot work
    with writer_lock(directory):
        catalog = Catalog.open(directory)
        try:
            summary = _run(directory, catalog, options, progress)
        finally:
            catalog.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _run(
    directory: Path,
    catalog: Catalog,
    options: IndexOptions,
    progress: Callable[[Progress], None] | None,
) -> IndexSummary:
    record = model_record(catalog)
    if options.model:
        spec = ModelSpec.parse(options.model)
        check_model(catalog, spec.identity())
    else:
        spec = ModelSpec.parse(record.identity.spec if record else DEFAULT_MODEL)
    roots = resolve_roots(options.roots, options.walk, catalog)
    plan = plan_run(catalog, roots, options.retry_errors, progress)
    summary = IndexSummary(unchanged=plan.unchanged, dry_run=options.dry_run)
    summary.offline = len(plan.offline)
    if options.dry_run:
        summary.to_add = [f.path for f in plan.new]
        summary.to_update = [f.path for f, _ in plan.changed]
        summary.to_remove = [row.path for row in plan.gone]
        summary.added, summary.updated = len(plan.new), len(plan.changed)
        summary.removed = len(plan.gone)
        return summary
    for root in roots:  # with the options it was walked with: a plain re-index reuses them
        catalog.add_roots([root.path], root.walk)
    jobs = [_Job(f, None) for f in plan.new] + [_Job(f, row.id) for f, row in plan.changed]
    if jobs or record is not None:
        # The query towers before the first batch: searches work from the first commit on.
        identity = record.identity if record else spec.identity()
        install_towers(directory, identity, progress=progress)  # exported in a child process
    if jobs:
        _Embedding(catalog, spec, record, options, summary, progress).process(jobs)
    _settle(catalog, plan, options.prune, roots, summary)
    captioning = CaptionOptions(
        options.captions, options.captioner, options.batch_size, options.workers
    )
    summary.captioned = update_keywords(catalog, captioning, load_captioner, progress)
    record = model_record(catalog)
    if record is not None:
        vector_store.refresh(directory, catalog, record.dim, budget=options.max_index_memory)
    catalog.checkpoint()
    return summary


def _settle(
    catalog: Catalog, plan: Plan, prune: bool, roots: list[Root], summary: IndexSummary
) -> None:
    """Drop what is gone; take out of reach what could not be listed (or, pruning, drop it
    too); bring back what was found again."""
    summary.removed = catalog.delete_ids(row.id for row in plan.gone)
    catalog.set_offline((row.id for row in plan.offline), offline=True)
    catalog.set_offline((row.id for row in plan.back), offline=False)
    if prune:
        summary.removed += catalog.delete_under((root.path for root in roots), OFFLINE)
        summary.offline = 0


class _Embedding:
    """Reads, hashes, decodes and embeds jobs; commits them batch by batch."""

    def __init__(
        self,
        catalog: Catalog,
        spec: ModelSpec,
        record: ModelRecord | None,
        options: IndexOptions,
        summary: IndexSummary,
        progress: Callable[[Progress], None] | None,
    ) -> None:
        self.catalog = catalog
        self.spec = spec
        self.record = record
        self.options = options
        self.summary = summary
        self.progress = progress
        # Cropped or squashed as the model's own preprocess says; a hub model not in the cache
        # yet is only known once loaded, and its photos wait for it (`_resize`).
        self.image_input = spec.image_input()
        known = self.image_input.size if self.image_input else _image_size(spec)
        self.image_size = record.image_size if record else known
        self.known_hashes = catalog.live_hashes()
        self.claimed: set[bytes] = set()
        self.lock = threading.Lock()
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="model")
        self._model: Future[Embedder] | None = None
        self._embedder: Embedder | None = None

    def process(self, jobs: list[_Job]) -> None:
        if self.options.ray is not None:
            self._process_on_ray(jobs, self.options.ray)
            return
        pending: list[_Job] = []  # decoded, waiting for the model
        ready: list[_Job] = []  # reused or failed: written with the next commit
        waiting: list[_Job] = []  # same bytes as a file still being embedded this run
        done = 0
        with (
            self._loader,
            ThreadPoolExecutor(self.options.workers, thread_name_prefix="decode") as pool,
        ):
            for job in self._prepared(pool, jobs):
                if job.decoded is not None:
                    pending.append(job)
                elif job.reuse and job.content_hash in self.claimed:
                    waiting.append(job)
                else:
                    ready.append(job)
                if (
                    len(pending) >= self.options.batch_size
                    or len(ready) >= 4 * self.options.batch_size
                ):
                    done += self._commit(pending, ready)
                    pending, ready = [], []
                    if self.progress:
                        self.progress(Progress("embedding", done, len(jobs), "img"))
            done += self._commit(pending, ready)
            done += self._commit([], waiting)  # their originals are committed now
        if self.progress:
            self.progress(Progress("embedding", done, len(jobs), "img"))

    def _process_on_ray(self, jobs: list[_Job], address: str) -> None:
        """`process`, with decoding and embedding on a Ray cluster. Files are read and hashed
        here first, so that reuse by content stays the driver's; what the cluster embeds
        streams back and is committed batch by batch, as a local run commits it."""
        with ThreadPoolExecutor(self.options.workers, thread_name_prefix="hash") as pool:
            prepared = list(pool.map(self._prepare, jobs))
        remote: list[_Job] = []  # to embed on the cluster
        ready: list[_Job] = []  # reused or failed
        waiting: list[_Job] = []  # same bytes as a file the cluster embeds
        for job in prepared:
            if job.error is None and not job.reuse:
                remote.append(job)
            elif job.reuse and job.content_hash in self.claimed:
                waiting.append(job)
            else:
                ready.append(job)
        step = 4 * self.options.batch_size
        done = sum(self._commit([], ready[i : i + step]) for i in range(0, len(ready), step))
        o = self.options
        settings = RaySettings(address, self.spec, o.precision, o.device, self.image_size)
        for model, batch in embed_on_ray([j.found.path for j in remote], settings, o.batch_size):
            if self.summary.embedder is None:  # the first batch: the model the actors loaded
                self._adopt(model)
            embedded, failed = self._answered(remote, batch)
            done += self._commit(embedded, failed)
            for job in embedded:
                job.output = None  # committed: the vectors can go
            if self.progress:
                self.progress(Progress("embedding", done, len(jobs), "img"))
        done += self._commit([], waiting)  # their originals are committed now
        if self.progress:
            self.progress(Progress("embedding", done, len(jobs), "img"))

    def _answered(self, remote: list[_Job], batch: list[Embedded]) -> tuple[list[_Job], list[_Job]]:
        """The jobs a batch back from Ray answers: those embedded, and those that failed."""
        embedded, failed = [], []
        for result in batch:
            job = remote[result.index]
            if result.vector is None:
                job.error = result.error
                with self.lock:  # as `_decode`: files with these bytes must decode themselves
                    self.claimed.discard(job.content_hash)
                failed.append(job)
            else:
                job.output, job.info = (result.vector, result.tokens), result.info
                embedded.append(job)
        return embedded, failed

    def _prepared(self, pool: ThreadPoolExecutor, jobs: list[_Job]) -> Iterator[_Job]:
        """Jobs read, hashed and decoded by the pool, a bounded window ahead of the caller."""
        window = 4 * self.options.workers + self.options.batch_size
        futures: list[Future[_Job]] = []
        for job in jobs:
            futures.append(pool.submit(self._prepare, job))
            if len(futures) >= window:
                yield futures.pop(0).result()
        for future in futures:
            yield future.result()

    def _prepare(self, job: _Job) -> _Job:
        data = self._read(job)
        if data is None:
            return job
        job.content_hash = hashlib.blake2b(data, digest_size=16).digest()
        with self.lock:
            if job.content_hash in self.known_hashes or job.content_hash in self.claimed:
                job.reuse = True
                return job
            self.claimed.add(job.content_hash)
            if self.options.ray is not None:
                return job  # decoded and embedded on the cluster
            if self._model is None:  # the first file to embed: load the model meanwhile
                self._model = self._loader.submit(self._load_model)
        self._decode(job, data)
        return job

    @staticmethod
    def _read(job: _Job) -> bytes | None:
        try:
            return decoding.read_image(job.found.path, extension(job.found.path))
        except OSError as e:
            job.error = f"unreadable: {e.strerror or e}"
            return None
        except UnreadableImage as e:  # refused from its header, before the rest was read
            job.error = str(e)
            return None

    def _decode(self, job: _Job, data: bytes) -> None:
        try:
            job.decoded = decoding.decode(data, extension(job.found.path), self._resize())
        except UnreadableImage as e:
            job.error = str(e)
            with self.lock:
                self.claimed.discard(job.content_hash)

    def _resize(self) -> decoding.ImageInput:
        if self.image_input is None:
            self.loaded_model()  # a hub model's config is in the cache once it has loaded
            self.image_input = self.spec.image_input() or decoding.ImageInput(self.image_size)
        return self.image_input

    def _orphans(
        self, other: list[_Job], reusable: dict[bytes, _Output], embedded: list[_Job]
    ) -> list[_Job]:
        """Jobs that counted on a vector no live row holds any more (its row was replaced or
        removed earlier in this run, or the file with those bytes failed): decoded now, to be
        embedded themselves (or to record their own reason)."""
        fresh = {job.content_hash for job in embedded}
        orphans = [
            job
            for job in other
            if job.reuse and job.content_hash not in reusable and job.content_hash not in fresh
        ]
        for job in orphans:
            job.reuse = False
            data = self._read(job)
            if data is not None:
                self._decode(job, data)
        return [job for job in orphans if job.decoded is not None]

    def loaded_model(self) -> Embedder:
        """The model, loading it now if no file needed it yet."""
        if self._model is None:
            self._model = Future()
            self._model.set_result(self._load_model())
        return self._model.result()

    def _load_model(self) -> Embedder:
        # Indexing reads the image tower alone; exporting the query towers (once per model and
        # user) loads the whole model in fp32, in a child process (`install_towers`).
        embedder = open_image_embedder(self.spec, self.options.precision, self.options.device)
        if self.record is not None:
            check_model(self.catalog, embedder.identity)
        return embedder

    def _adopt(self, model: Embedder | WorkerModel) -> None:
        """Check and record the model the first batch is embedded with (here or on Ray)."""
        check_model(self.catalog, model.identity)  # a model loaded on Ray is not checked yet
        if model.image_size != self.image_size:
            raise WeightsUnavailable(
                f"{self.spec} takes {model.image_size}px input, its config said {self.image_size}px"
            )
        loaded = getattr(model, "loaded", None)  # a torch model here (not one on Ray)
        if loaded is not None and loaded.image_input != self._resize():
            raise WeightsUnavailable(
                f"{self.spec} resizes photos as {loaded.image_input}, its config said "
                f"{self._resize()}"
            )
        self.summary.embedder = {"precision": model.precision, "engine": model.engine}
        self.catalog.set_meta("embedder", json.dumps(self.summary.embedder))
        if self.record is None:
            self.record = ModelRecord(model.identity, model.dim, model.image_size)
            self.catalog.set_meta("model", self.record.to_json())

    def _embed(self, jobs: list[_Job]) -> list[_Output]:
        here = [job for job in jobs if job.output is None]  # the others came back from Ray
        outputs = iter(self._embed_here(here) if here else [])
        return [job.output or next(outputs) for job in jobs]

    def _embed_here(self, jobs: list[_Job]) -> list[_Output]:
        if self._embedder is None:
            self._embedder = self.loaded_model()
            self._adopt(self._embedder)
        pixels = [j.decoded.pixels for j in jobs if j.decoded is not None]  # all, by the caller
        vectors, tokens = self._embedder.with_tokens(np.stack(pixels))
        return [(v, None if tokens is None else tokens[i]) for i, v in enumerate(vectors)]

    def _commit(self, embedded: list[_Job], other: list[_Job]) -> int:
        if not embedded and not other:
            return 0
        # Only an unreadable file has no hash: every embedded or reused job has one.
        hashes = {job.content_hash for job in other if job.reuse and job.content_hash is not None}
        reusable = self.catalog.vectors_by_hash(hashes)
        orphans = self._orphans(other, reusable, embedded)
        embedded = embedded + orphans
        other = [job for job in other if all(job is not o for o in orphans)]
        outputs = self._embed(embedded) if embedded else []
        for job, output in zip(embedded, outputs, strict=True):
            if job.content_hash is not None:
                reusable.setdefault(job.content_hash, output)
        rows = [self._row(job, output) for job, output in zip(embedded, outputs, strict=True)]
        rows += [self._row(job, job.output_in(reusable)) for job in other]
        self.catalog.write_batch(rows, [j.replaces for j in embedded + other if j.replaces])
        for job in embedded:
            job.decoded = None  # committed: its pixels can go (a run holds every job to its end)
        with self.lock:
            self.known_hashes.update(reusable)
            self.claimed.difference_update(reusable)
        for job, row in zip(embedded + other, rows, strict=True):
            if row.error:
                self.summary.errors += 1
                continue
            self.summary.reused += job.reuse
            if job.replaces:
                self.summary.updated += 1
            else:
                self.summary.added += 1
        return len(rows)

    def _row(self, job: _Job, output: _Output | None) -> NewImage:
        found, decoded = job.found, job.decoded
        vector, tokens = output if output is not None else (None, None)
        error = job.error
        info = decoded.info if decoded else job.info
        if job.reuse and vector is not None and job.content_hash is not None:
            info = self._reused_info(job.content_hash)
        return NewImage(
            path=found.path,
            size=found.size,
            mtime_ns=found.mtime_ns,
            content_hash=job.content_hash,
            vector=vector if error is None else None,
            tokens=tokens,
            width=info.width if info else None,
            height=info.height if info else None,
            taken_at=info.taken_at if info else None,
            camera_make=info.camera_make if info else None,
            camera_model=info.camera_model if info else None,
            error=error,
            decoder=decoder_version() if vector is None else None,
        )

    def _reused_info(self, content_hash: bytes) -> PhotoInfo | None:
        row = self.catalog.row_by_hash(content_hash)
        if row is None:
            return None
        return PhotoInfo(
            row.width or 0, row.height or 0, row.taken_at, row.camera_make, row.camera_model
        )


def _image_size(spec: ModelSpec) -> int:
    config = spec.config()
    if config is None:
        return 224  # hf-hub configs are only known after loading; checked in _embed
    size = config["vision_cfg"].get("image_size", 224)
    return size if isinstance(size, int) else int(size[0])
