"""What a timing benchmark script does around its measurements: the quiet-wait option, its own
command line, the record of the machine at the end, and a failure as one line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from lib import REPO
from lib.machine import code_fingerprint
from lib.tables import say
from lib.timing import BenchError, QuietGate, shell


def add_quiet_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        metavar="S",
        help="before each timed sample, wait up to S seconds for other processes to go idle "
        "(0: don't wait)",
    )


def command_line(script: str, argv: list[str]) -> str:
    """How this run was started, as a reader would type it in the repository."""
    python = Path(sys.executable)
    if python.is_relative_to(REPO):
        python = python.relative_to(REPO)
    return shell([python, f"bench/{script}", *argv])


def close_record(result: dict, gate: QuietGate, fingerprint: str) -> None:
    """Add the load at the end, the quiet gate's waits, and whether photoseek's sources changed
    since `fingerprint` was taken (other work on the machine may edit them meanwhile)."""
    result["environment"]["loadavg_at_end"] = os.getloadavg()
    result["environment"]["quiet_gate"] = gate.report()
    result["environment"]["code_fingerprint"] = fingerprint
    result["code_changed_during_run"] = code_fingerprint() != fingerprint


def warn_if_code_changed(result: dict) -> None:
    if result["code_changed_during_run"]:
        say("\nWARNING: photoseek's sources changed while this ran; the numbers mix versions.")


def run_script(name: str, main: Callable[[list[str]], object]) -> None:
    """Run `main` on the command line's arguments; a failure is one line on stderr."""
    sys.path.insert(0, str(REPO))
    try:
        main(sys.argv[1:])
    except BenchError as e:
        sys.stderr.write(f"{name}: error: {e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write(f"{name}: interrupted\n")
        sys.exit(130)
