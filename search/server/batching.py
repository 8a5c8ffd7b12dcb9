"""Concurrent text queries share one tower run: the server's text encoder coalesces them.

A text tower run of a few texts costs little more than of one (a 2-core CPU embeds four texts
in under twice the time of one), and concurrent runs only fight over the same cores. So while
one run is in flight, the queries that arrive wait for it to end and then go as one batch, led
by the first of them; a query arriving at an idle encoder runs at once. Nothing waits on a
timer: a lone query never pays for batching, and under load the batches grow by themselves.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

import numpy as np

from search.encoders.towers import TextEncoder

MAX_BATCH = 32  # texts per tower run: beyond this a batch's wait outgrows what it saves


class _Job:
    """One caller's texts, and what came of them."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.done = threading.Event()
        self.lead = False  # set instead of a result: this caller runs the next batch
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None

    def outcome(self) -> np.ndarray:
        if self.error is not None:
            raise self.error
        assert self.result is not None  # set with done, unless an error was
        return self.result


class Coalescer:
    """Runs `run(texts) -> rows` for concurrent callers, one batch at a time."""

    def __init__(self, run: Callable[[list[str]], np.ndarray], max_batch: int = MAX_BATCH) -> None:
        self._run = run
        self._max = max_batch
        self._lock = threading.Lock()
        self._waiting: list[_Job] = []
        self._busy = False
        self.batches = 0  # tower runs so far (the tests check that queries did share them)

    def __call__(self, texts: list[str]) -> np.ndarray:
        job = _Job(texts)
        with self._lock:
            self._waiting.append(job)
            leads, self._busy = not self._busy, True
        if not leads:
            job.done.wait()
            if not job.lead:
                return job.outcome()
        self._lead(job)
        return job.outcome()

    def _lead(self, own: _Job) -> None:
        """Run one batch (holding `own`), then hand the lead to the first still waiting."""
        with self._lock:
            batch = self._take()
        try:
            rows = self._run([text for job in batch for text in job.texts])
            start = 0
            for job in batch:
                job.result, start = rows[start : start + len(job.texts)], start + len(job.texts)
        except BaseException as e:  # each caller in the batch raises it, as if it ran alone
            for job in batch:
                job.error = e
        self.batches += 1
        with self._lock:
            heir = self._waiting[0] if self._waiting else None
            self._busy = heir is not None
        if heir is not None:
            heir.lead = True
            heir.done.set()
        for job in batch:
            if job is not own:
                job.done.set()

    def _take(self) -> list[_Job]:
        """The waiting jobs, oldest first, up to `max_batch` texts (at least one job)."""
        batch: list[_Job] = []
        count = 0
        while self._waiting and (not batch or count + len(self._waiting[0].texts) <= self._max):
            job = self._waiting.pop(0)
            batch.append(job)
            count += len(job.texts)
        return batch


class CoalescingTextEncoder(TextEncoder):
    """The text tower for a server: concurrent `encode` calls share tower runs (`Coalescer`),
    on every core, but with pool threads that sleep between runs: spinning ones (the default)
    took half of a loaded 2-core CPU from the requests' FAISS and Python work."""

    def __init__(self, folder: str | os.PathLike[str], max_batch: int = MAX_BATCH) -> None:
        super().__init__(folder, threads=os.cpu_count() or 1)
        self.coalescer = Coalescer(super().encode, max_batch)

    def encode(self, texts: str | Sequence[str]) -> np.ndarray:
        return self.coalescer([texts] if isinstance(texts, str) else list(texts))
