"""What the benchmark scripts share: timing, the cache and the peers, tables, machine facts.

The scripts run as `python bench/X.py`, so `bench/` is on `sys.path` and this package imports as
`lib`. Nothing here imports torch, open_clip or photoseek at import time: the index benchmark's
stage breakdown times those imports in a process that has loaded this package first.
"""

from __future__ import annotations

from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
OUT_DIR = BENCH / "out"
TOOLS = Path("/work/shared/tools")
