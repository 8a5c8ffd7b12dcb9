"""A process-wide bound on the bytes of pixels that full-size decodes hold at once.

JPEGs, large WebPs and 8-bit PNGs decode small; a TIFF, a 16-bit or palette PNG, a GIF or a HEIC
is decoded whole (up to `MAX_PIXELS`, over a gigabyte) before it is shrunk. With one such decode
per worker, peak memory grew with the worker count; with this budget the workers take turns
once the decodes in flight would exceed it, so peak memory stays near the budget however many
workers run. A decode larger than the whole budget still runs, alone.

The decodes themselves run on two threads of the budget's own: glibc keeps memory freed by a
thread in that thread's arena, so full-size decodes spread over every worker left each worker's
arena holding a decode's worth (measured: no gain at all), while two threads keep two.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

# Decodes this small (a 2-megapixel bitmap) never wait: most photos, and every reduced decode.
_FREE = 16 << 20
_T = TypeVar("_T")
_THREADS = 2
_FLOOR, _CEILING = 256 << 20, 512 << 20


class PixelBudget:
    """A counting semaphore over bytes: `hold(n)` waits until n more bytes fit."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._used = 0
        self._changed = threading.Condition()
        self._threads = ThreadPoolExecutor(_THREADS, thread_name_prefix="full-decode")

    def run(self, amount: int, work: Callable[[], _T]) -> _T:
        """`work()`, which holds about `amount` bytes at its peak: directly when small, else on
        the budget's own threads once the bytes fit."""
        if amount <= _FREE:
            return work()
        with self.hold(amount):
            return self._threads.submit(work).result()

    @contextmanager
    def hold(self, amount: int) -> Iterator[None]:
        """Reserve `amount` bytes (at most the whole budget) while the block runs."""
        if amount <= _FREE:
            yield
            return
        amount = min(amount, self.capacity)
        with self._changed:
            self._changed.wait_for(lambda: self._used + amount <= self.capacity)
            self._used += amount
        try:
            yield
        finally:
            with self._changed:
                self._used -= amount
                self._changed.notify_all()


def available_memory() -> int:
    """Bytes of memory available to new allocations (Linux MemAvailable; else a quarter of RAM)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (OSError, ValueError):
        return _FLOOR * 4


def default_capacity() -> int:
    """A quarter of the memory available now, between 256 MiB and 512 MiB."""
    return max(_FLOOR, min(_CEILING, available_memory() // 4))


@functools.cache
def full_decodes() -> PixelBudget:
    """The process's budget, sized on first use: every pipeline's threads share one memory."""
    return PixelBudget(default_capacity())
