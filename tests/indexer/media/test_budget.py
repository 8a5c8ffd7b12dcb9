"""The full-size decode budget: how many whole decodes a process holds at once."""

from __future__ import annotations

import threading
import time

from indexer.media.budget import PixelBudget


def test_full_size_decodes_run_two_at_a_time_even_with_room_in_the_budget() -> None:
    """On the budget's two threads: a camera roll's HEICs (no reduced-size decode, ~280 ms each)
    decoded one at a time bounded the whole folder's decoding (bench/camera_roll.py: 21 images/s
    on 2 cores instead of 28), while more at once would only hold more memory."""
    budget = PixelBudget(1 << 30)  # room for ten of them by bytes
    running, most, guard = [0], [0], threading.Lock()

    def whole_decode() -> None:
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with guard:
            running[0] -= 1

    workers = [threading.Thread(target=budget.run, args=(96 << 20, whole_decode)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert most[0] == 2


def test_small_decodes_run_on_the_callers_thread_beside_a_whole_one() -> None:
    budget = PixelBudget(1 << 30)
    inside = threading.Event()
    release = threading.Event()

    def whole_decode() -> None:
        inside.set()
        release.wait(10)

    big = threading.Thread(target=budget.run, args=(96 << 20, whole_decode))
    big.start()
    assert inside.wait(10)
    assert budget.run(1 << 20, threading.current_thread) is threading.current_thread()
    release.set()
    big.join(10)
    assert not big.is_alive()
