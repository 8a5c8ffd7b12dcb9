"""Concurrent queries share one tower run and one vector scan: the server coalesces them.

A text tower run of a few texts costs little more than of one (a 2-core CPU embeds four texts
in under twice the time of one), and concurrent runs only fight over the same cores. So while
one run is in flight, the queries that arrive wait for it to end and then go as one batch, led
by the first of them; a query arriving at an idle encoder runs at once. Nothing waits on a
timer: a lone query never pays for batching, and under load the batches grow by themselves.

The exact (Flat) vector search is coalesced the same way, and each query's row comes out bit
for bit as it would alone. That saves only the per-call overhead: below its BLAS threshold
(128,000 queries a call in faiss 1.15) FAISS scans the stored vectors once per query of a call.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, Self, TypeVar

import numpy as np

from search.encoders.towers import TextEncoder
from search.engine import Knn

MAX_BATCH = 32  # texts per tower run: beyond this a batch's wait outgrows what it saves
RECENT_TEXTS = 1024  # query embeddings a server keeps (2 KB each for a 512-d model)
Item = TypeVar("Item")


class Rows(Protocol):
    """What a batch run returns: one row per item, in order, sliceable (an array, a list)."""

    def __getitem__(self, rows: slice, /) -> Self: ...


RowsT = TypeVar("RowsT", bound=Rows)


class _Job(Generic[Item, RowsT]):
    """One caller's items, and what came of them."""

    def __init__(self, items: list[Item]) -> None:
        self.items = items
        self.done = threading.Event()
        self.lead = False  # set instead of a result: this caller runs the next batch
        self.result: RowsT | None = None
        self.error: BaseException | None = None

    def outcome(self) -> RowsT:
        if self.error is not None:
            raise self.error
        assert self.result is not None  # set with done, unless an error was
        return self.result


class Coalescer(Generic[Item, RowsT]):
    """Runs `run(items) -> rows` for concurrent callers, one batch at a time."""

    def __init__(self, run: Callable[[list[Item]], RowsT], max_batch: int = MAX_BATCH) -> None:
        self._run = run
        self._max = max_batch
        self._lock = threading.Lock()
        self._waiting: list[_Job[Item, RowsT]] = []  # empty while no batch is in flight
        self._busy = False  # a batch is in flight, or handed to a caller about to run one
        self.batches = 0  # runs so far (the tests check that queries did share them)

    def __call__(self, items: list[Item]) -> RowsT:
        job: _Job[Item, RowsT] = _Job(items)
        with self._lock:
            leads, self._busy = not self._busy, True
            if not leads:
                self._waiting.append(job)
        if not leads:
            job.done.wait()
            if not job.lead:
                return job.outcome()
        self._lead(job)
        return job.outcome()

    def _lead(self, own: _Job[Item, RowsT]) -> None:
        """Run one batch, `own` and the oldest waiting that fit; then hand the lead to the
        first still waiting."""
        with self._lock:
            batch = [own, *self._take(self._max - len(own.items))]
        try:
            rows = self._run([item for job in batch for item in job.items])
            start = 0
            for job in batch:
                job.result, start = rows[start : start + len(job.items)], start + len(job.items)
        except BaseException as e:  # each caller in the batch raises it, as if it ran alone
            for job in batch:
                job.error = e
        with self._lock:
            self.batches += 1
            heir = self._waiting.pop(0) if self._waiting else None
            self._busy = heir is not None
        if heir is not None:
            heir.lead = True
            heir.done.set()
        for job in batch:
            if job is not own:
                job.done.set()

    def _take(self, room: int) -> list[_Job[Item, RowsT]]:
        """The oldest waiting jobs whose items fit in `room`."""
        batch: list[_Job[Item, RowsT]] = []
        while self._waiting and len(self._waiting[0].items) <= room:
            job = self._waiting.pop(0)
            batch.append(job)
            room -= len(job.items)
        return batch


class RecentEmbeddings:
    """The embeddings of the last `size` distinct texts, least recently used out first."""

    def __init__(self, size: int = RECENT_TEXTS) -> None:
        self._rows: OrderedDict[str, np.ndarray] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, text: str) -> np.ndarray | None:
        with self._lock:
            row = self._rows.get(text)
            if row is not None:
                self._rows.move_to_end(text)
            return row

    def put(self, text: str, row: np.ndarray) -> None:
        row = row.copy()
        row.setflags(write=False)  # shared by every later caller: np.stack hands out copies
        with self._lock:
            self._rows[text] = row
            self._rows.move_to_end(text)
            while len(self._rows) > self._size:
                self._rows.popitem(last=False)


class CoalescingTextEncoder(TextEncoder):
    """The text tower for a server: concurrent `encode` calls share tower runs (`Coalescer`),
    on every core, but with pool threads that sleep between runs: spinning ones (the default)
    took half of a loaded 2-core CPU from the requests' FAISS and Python work. A text embedded
    lately is not embedded again (`RecentEmbeddings`): the page asks for the next page of
    results with the same query, and people repeat queries."""

    def __init__(self, folder: str | os.PathLike[str], max_batch: int = MAX_BATCH) -> None:
        super().__init__(folder, threads=os.cpu_count() or 1)
        self.coalescer = Coalescer(super().encode, max_batch)
        self.recent = RecentEmbeddings()

    def encode(self, texts: str | Sequence[str]) -> np.ndarray:
        batch = [texts] if isinstance(texts, str) else list(texts)
        found = {text: row for text in batch if (row := self.recent.get(text)) is not None}
        missing = [text for text in dict.fromkeys(batch) if text not in found]
        if missing:
            for text, row in zip(missing, self.coalescer(missing), strict=True):
                found[text] = row
                self.recent.put(text, row)
        if not batch:
            return np.empty((0, self.spec.embed_dim), dtype=np.float32)
        return np.stack([found[text] for text in batch])


Query = tuple[np.ndarray, int]  # one query vector [d], and its k
Found = tuple[np.ndarray, np.ndarray]  # its scores [k] and ids [k]


class CoalescingKnn:
    """The engine's `Knn` for a server over an exact (Flat) vector file: concurrent searches
    without a filter share one call of `knn` (`Coalescer`), one call per distinct k, so each
    gets exactly the rows it would alone; a filtered search runs on its own."""

    def __init__(self, knn: Knn, max_batch: int = MAX_BATCH) -> None:
        self._knn = knn
        self.coalescer: Coalescer[Query, list[Found]] = Coalescer(self._search, max_batch)

    def __call__(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if allowed is not None:
            return self._knn(queries, k, allowed)
        found = self.coalescer([(query, k) for query in queries])
        return np.stack([scores for scores, _ in found]), np.stack([ids for _, ids in found])

    def _search(self, queries: list[Query]) -> list[Found]:
        rows_by_k: dict[int, list[int]] = {}
        for row, (_, k) in enumerate(queries):
            rows_by_k.setdefault(k, []).append(row)
        found: dict[int, Found] = {}
        for k, rows in rows_by_k.items():
            scores, ids = self._knn(np.stack([queries[row][0] for row in rows]), k, None)
            found.update((row, (scores[n], ids[n])) for n, row in enumerate(rows))
        return [found[row] for row in range(len(queries))]
