"""Progress of the library's long stages, reported to a callback the caller passes in.

The library never prints: a stage that may run for more than a few seconds (walking the roots,
embedding, exporting the query towers, training, evaluating) calls ``progress(Progress(...))``
as it goes, and the caller decides how to show it (the CLI: a bar on a terminal, a plain line
every ~10 s in a pipe). Reports are cheap to make: a caller that shows them throttles itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """`done` of `total` units of one stage; a stage starts again when `stage` changes or
    `done` goes down (the demo trains twice)."""

    stage: str  # "walking", "embedding", "exporting", "training", "evaluating", ...
    done: int
    total: int | None = None  # None while not yet known (a walk under way)
    unit: str = ""  # what `done` counts ("files", "img", "steps"), for rates
    info: str = ""  # a few words for a person (the losses while training)


ProgressFn = Callable[[Progress], None]
