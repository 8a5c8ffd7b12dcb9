"""A rich progress bar for long library calls, shown on a terminal only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class ProgressBar:
    """Context manager yielding a callback for the library's progress events (or None).

    `describe(event)` turns an event into (done, total, info text); with `unit`, the measured
    rate ("12.3 img/s") follows the info.
    """

    def __init__(
        self,
        label: str,
        describe: Callable[[Any], tuple[int, int, str]],
        enabled: bool,
        unit: str = "",
    ) -> None:
        self.label = label
        self.describe = describe
        self.enabled = enabled
        self.unit = unit
        self._bar = None

    def __enter__(self) -> Callable[[Any], None] | None:
        if not self.enabled:
            return None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn(self.label), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True,
        )  # fmt: skip
        self._bar.start()
        self._task = self._bar.add_task(self.label, total=None, info="")
        return self._update

    def _update(self, event: Any) -> None:
        done, total, info = self.describe(event)
        self._bar.update(self._task, completed=done, total=total)
        speed = self._bar.tasks[0].speed
        if self.unit and speed:
            info = f"{info} {speed:.1f} {self.unit}/s".strip()
        self._bar.update(self._task, info=info)

    def __exit__(self, *_exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
