"""A teacher's scores on disk: append-only batch files, so a killed run loses one batch at most.

Each scored batch becomes one file, ``batch-NNNNNN.json`` (``{"pairs": [[text, image digest,
logit], ...]}``), written atomically (`indexer.atomic`): a run killed while scoring leaves every
earlier batch whole and nothing of the one under way (a leftover temporary file is removed when
the next run writes that batch). Pairs are keyed by the text and the image file's content hash,
so a resumed run skips every pair already scored and a moved file keeps its score.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from indexer import atomic

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (text, image content digest)


class TeacherCache:
    """The scores one teacher (by fingerprint) gave, in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.scores: dict[Key, float] = {}
        self.batches = 0
        for path in sorted(folder.glob("batch-*.json")):
            try:
                pairs = json.loads(path.read_text(encoding="utf-8"))["pairs"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("%s: ignored (%s)", path, e)  # scored again, never trusted
                continue
            self.scores.update({(str(t), str(d)): float(x) for t, d, x in pairs})
            self.batches = max(self.batches, int(path.stem.split("-")[1]) + 1)

    def get(self, text: str, digest: str) -> float | None:
        return self.scores.get((text, digest))

    def append(self, pairs: list[tuple[str, str, float]]) -> Path:
        """Store one scored batch as a new file; returns its path."""
        target = self.folder / f"batch-{self.batches:06d}.json"
        atomic.remove_leftovers(target)
        atomic.write_text(target, json.dumps({"pairs": pairs}) + "\n")
        self.batches += 1
        self.scores.update({(t, d): x for t, d, x in pairs})
        return target
