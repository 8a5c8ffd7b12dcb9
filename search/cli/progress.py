"""How the CLI shows the library's progress reports on stderr.

On a terminal: a rich bar per stage with its rate and time left. Anywhere else (a pipe, a log
file, a CI job): one plain line every PHOTOSEEK_PROGRESS_INTERVAL seconds (10 by default)
while a stage runs, and a last one when a stage that printed lines ends::

    photoseek: STAGE DONE/TOTAL RATE UNIT/s ETA H:MM:SS[ INFO]

TOTAL, RATE and ETA are ``?`` until known. `--quiet` shows nothing.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TextIO

from indexer.progress import Progress

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

    from indexer.training.loop import TrainProgress

INTERVAL_ENV = "PHOTOSEEK_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 10.0


class Reporter:
    """The callback a command hands the library: it tracks each stage's rate and time left and
    passes them to a display (bar or lines)."""

    def __init__(self, display: _Display) -> None:
        self._display = display
        self._lock = threading.Lock()
        self.stage: _Stage | None = None

    def __call__(self, event: Progress) -> None:
        now = time.monotonic()
        with self._lock:
            stage = self.stage
            if stage is None or stage.name != event.stage or event.done < stage.done:
                stage = self.stage = _Stage(event.stage, event.unit, now, event.done)
            stage.done, stage.total, stage.info, stage.updated = (
                event.done, event.total, event.info, now
            )  # fmt: skip
            self._display.show(stage, now)

    def training(self, event: TrainProgress) -> None:
        """The training loop's own report, as a "training" stage."""
        info = (f"epoch {event.epoch + 1}  itc {event.itc_loss:.3f}  itm {event.itm_loss:.3f}  "
                f"{event.images_per_s:.0f} img/s")  # fmt: skip
        self(Progress("training", event.step, event.steps, "steps", info))

    def tick(self) -> None:
        """Called by the lines display's clock: show the running stage as it stands."""
        with self._lock:
            if self.stage is not None and not self.stage.finished:
                self._display.tick(self.stage, time.monotonic())


@dataclass
class _Stage:
    name: str
    unit: str
    started: float  # at its first report: the rate counts from there
    first_done: int
    done: int = 0
    total: int | None = None
    info: str = ""
    updated: float = 0.0
    lines: int = 0  # plain lines printed for it

    @property
    def finished(self) -> bool:
        return self.total is not None and self.done >= self.total

    def rate(self) -> float | None:
        elapsed = self.updated - self.started
        counted = self.done - self.first_done
        return counted / elapsed if counted > 0 and elapsed > 0 else None

    def eta(self) -> float | None:
        rate = self.rate()
        if self.total is None or rate is None:
            return None
        return max(0, self.total - self.done) / rate

    def line(self) -> str:
        rate, eta = self.rate(), self.eta()
        total = "?" if self.total is None else str(self.total)
        rate_text = "?" if rate is None else f"{rate:.1f}"
        eta_text = "?" if eta is None else _clock(eta)
        text = (
            f"{self.name} {self.done}/{total} {rate_text} {self.unit or 'items'}/s ETA {eta_text}"
        )
        return f"{text} {self.info}".rstrip()


def _clock(seconds: float) -> str:
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class _Display(Protocol):
    def show(self, stage: _Stage, now: float) -> None: ...
    def tick(self, stage: _Stage, now: float) -> None: ...
    def close(self) -> None: ...


class _Lines:
    """One line per interval while a stage runs, and its last line when it ends."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def show(self, stage: _Stage, now: float) -> None:
        if stage.finished and stage.lines:
            self._write(stage)

    def tick(self, stage: _Stage, now: float) -> None:
        self._write(stage)

    def _write(self, stage: _Stage) -> None:
        stage.lines += 1
        self.stream.write(f"photoseek: {stage.line()}\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class _Bar:
    """A rich bar per stage, redrawn by rich's own refresh thread; gone when the command ends."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.bar: RichProgress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[info]}"),
            console=Console(file=stream), transient=True,
        )  # fmt: skip
        self.stage: _Stage | None = None  # the stage the last row is for
        self.task: TaskID | None = None
        self.bar.start()

    def show(self, stage: _Stage, now: float) -> None:
        if stage is not self.stage or self.task is None:  # a new stage gets a row of its own
            self.stage, self.task = stage, self.bar.add_task(stage.name, rate="", info="")
        task = self.task
        rate, eta = stage.rate(), stage.eta()
        rate_text = "" if rate is None else f"{rate:.1f} {stage.unit or 'items'}/s"
        if eta is not None and not stage.finished:
            rate_text += f"  ETA {_clock(eta)}"
        self.bar.update(task, completed=stage.done, total=stage.total, rate=rate_text,
                        info=stage.info)  # fmt: skip

    def tick(self, stage: _Stage, now: float) -> None:
        pass

    def close(self) -> None:
        self.bar.stop()


def _interval() -> float:
    try:
        return max(0.05, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


@contextmanager
def progress_reporter(quiet: bool, stream: TextIO | None = None) -> Iterator[Reporter | None]:
    """The reporter for one command (None with `quiet`): a bar when `stream` (stderr) is a
    terminal, else plain lines on a clock; stopped when the block ends."""
    if quiet:
        yield None
        return
    stream = stream or sys.stderr
    on_terminal = stream.isatty()
    display: _Display = _Bar(stream) if on_terminal else _Lines(stream)
    reporter = Reporter(display)
    stop = threading.Event()
    # rich redraws the bar itself; plain lines need a clock, as reports can be minutes apart
    clock = threading.Thread(target=_run_clock, args=(reporter, stop, _interval()), daemon=True)
    if not on_terminal:
        clock.start()
    try:
        yield reporter
    finally:
        stop.set()
        if clock.is_alive():
            clock.join()
        display.close()


def _run_clock(reporter: Reporter, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        reporter.tick()
