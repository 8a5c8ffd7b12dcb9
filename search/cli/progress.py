"""A rich progress bar for long library calls, shown on a terminal only."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from indexer.pipeline import Progress as IndexProgress
    from indexer.training.loop import TrainProgress

Event = TypeVar("Event")


class ProgressBar(Generic[Event]):
    """Context manager yielding a callback for the library's progress events (or None).

    `describe(event)` turns an event into (done, total, info text); with `unit`, the measured
    rate ("12.3 img/s") follows the info.
    """

    def __init__(
        self,
        label: str,
        describe: Callable[[Event], tuple[int, int, str]],
        enabled: bool,
        unit: str = "",
    ) -> None:
        self.label = label
        self.describe = describe
        self.enabled = enabled
        self.unit = unit
        self._bar: Progress | None = None

    def __enter__(self) -> Callable[[Event], None] | None:
        if not self.enabled:
            return None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        bar = Progress(
            TextColumn(self.label), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True,
        )  # fmt: skip
        bar.start()
        self._bar = bar
        return functools.partial(self._update, bar, bar.add_task(self.label, total=None, info=""))

    def _update(self, bar: Progress, task: TaskID, event: Event) -> None:
        done, total, info = self.describe(event)
        bar.update(task, completed=done, total=total)
        speed = bar.tasks[0].speed
        if self.unit and speed:
            info = f"{info} {speed:.1f} {self.unit}/s".strip()
        bar.update(task, info=info)

    def __exit__(self, *_exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def describe_indexing(event: IndexProgress) -> tuple[int, int, str]:
    return event.done, event.total, ""


def describe_training(event: TrainProgress) -> tuple[int, int, str]:
    info = (f"epoch {event.epoch + 1}  itc {event.itc_loss:.3f}  itm {event.itm_loss:.3f}  "
            f"{event.images_per_s:.0f} img/s")  # fmt: skip
    return event.step, event.steps, info
