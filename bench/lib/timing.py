"""Timing: child processes with their own rusage, a gate that waits for a quiet machine, medians.

The machine may be shared: each timed sample first waits (bounded) for other processes to go
idle, and every sample records the CPU others used meanwhile.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lib.tables import say


class BenchError(Exception):
    """A setup step or a benchmarked command failed; the message says which and why."""


@dataclass
class Run:
    """One timed child process."""

    wall_s: float
    peak_rss_mb: float  # ru_maxrss of the child (the largest process in its tree)
    cpu_s: float  # user + system CPU of the child
    others_cpu_s: float  # CPU that other processes used meanwhile (the machine is shared)
    stdout: str = field(repr=False, default="")
    stderr: str = field(repr=False, default="")

    def public(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in asdict(self).items() if k not in ("stdout", "stderr")}


# A child's ru_maxrss includes the memory of the process it was forked from (Linux records the
# old address space's high-water mark at exec), and a benchmark's own process grows to GBs.
# So each command is started by a small fresh interpreter that forks it and reports its rusage.
_MEASURER = """
import json, os, subprocess, sys, time
report, cmd = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
proc = subprocess.Popen(cmd)
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - started
with open(report, "w") as f:
    json.dump({"wall": wall, "maxrss_kb": usage.ru_maxrss,
               "cpu": usage.ru_utime + usage.ru_stime,
               "code": os.waitstatus_to_exitcode(status)}, f)
"""


def run_child(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    what: str = "",
) -> Run:
    """Run `cmd` to completion: its wall time, peak RSS and CPU, and what else ran meanwhile."""
    args = [os.fspath(c) for c in cmd]
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r", suffix=".json") as report,
    ):
        busy_before = machine_busy_s()
        measurer = [sys.executable, "-I", "-S", "-c", _MEASURER, report.name, *args]
        code = subprocess.run(measurer, cwd=cwd, env=env, stdout=out, stderr=err).returncode
        busy = machine_busy_s() - busy_before
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
        measured = json.loads(report.read() or "{}")
    code = measured.get("code", code)
    if code != 0:
        tail = "\n".join(stderr.strip().splitlines()[-8:])
        raise BenchError(f"{what or args[0]} exited {code}:\n  $ {shell(cmd)}\n{tail}")
    cpu = measured["cpu"]
    others = max(0.0, busy - cpu)
    return Run(measured["wall"], measured["maxrss_kb"] / 1024, cpu, others, stdout, stderr)


def machine_busy_s() -> float:
    """CPU seconds all processes have used since boot (from /proc/stat; 0 where unavailable)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class QuietGate:
    """Before each timed sample, waits (bounded) until other processes leave the CPUs alone.

    The machine may be shared: a busy neighbour on 2 cores halves a 2-thread decode and can
    stall torch's thread pool far more. Each sample still records what others used meanwhile.
    After a wait that ran out, later waits are short until the machine is seen quiet again, so
    a neighbour busy for the whole run costs little extra time.
    """

    max_wait_s: float
    threshold_cores: float = 0.25
    waited_s: float = 0.0
    gave_up: int = 0  # samples started while others were still busy
    busy_spell: bool = False  # the last wait ran out
    others_cpu_s: list[float] = field(default_factory=list)  # per in-process pass

    def __call__(self) -> None:
        started, quiet_windows = time.perf_counter(), 0
        limit = min(self.max_wait_s, 3.0) if self.busy_spell else self.max_wait_s
        while self.max_wait_s > 0 and quiet_windows < 2:
            if time.perf_counter() - started > limit:
                self.gave_up += 1
                self.busy_spell = True
                break
            busy, mine = machine_busy_s(), own_cpu_s()
            time.sleep(window_s := 0.5)
            others = machine_busy_s() - busy - (own_cpu_s() - mine)
            quiet = others < self.threshold_cores * window_s
            quiet_windows = quiet_windows + 1 if quiet else 0
        if quiet_windows >= 2:
            self.busy_spell = False
        self.waited_s += time.perf_counter() - started

    def report(self) -> dict:
        return {
            "max_wait_s": self.max_wait_s,
            "threshold_cores": self.threshold_cores,
            "waited_s": round(self.waited_s, 1),
            "samples_started_while_busy": self.gave_up,
            "others_cpu_s_per_in_process_pass": [round(v, 2) for v in self.others_cpu_s],
        }


def alternating(runs: int, first: str, second: str) -> Iterator[tuple[int, str]]:
    """(run, side) for `runs` runs of both sides, the order swapped every run, so background
    load and a warmer page cache favour neither side."""
    for i in range(runs):
        for side in (first, second) if i % 2 == 0 else (second, first):
            yield i, side


def interleaved(
    variants: dict[str, Callable[[], None]], runs: int, label: str, gate: QuietGate
) -> dict[str, list[float]]:
    """Each in-process variant `runs` times, interleaved so that background load hits all alike;
    seconds per pass, by variant."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(runs):
        for name, fn in variants.items():
            gate()
            busy, mine, started = machine_busy_s(), own_cpu_s(), time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
            others = max(0.0, machine_busy_s() - busy - (own_cpu_s() - mine))
            gate.others_cpu_s.append(others)
            say(
                f"  {label} pass {i + 1}/{runs} {name:30s} {times[name][-1]:6.2f} s"
                f"   (others used {others:4.1f} CPU s meanwhile)"
            )
    return times


def shell(cmd: Sequence[str | os.PathLike[str]]) -> str:
    """`cmd` as one line a shell would run."""
    return " ".join(shlex.quote(os.fspath(c)) for c in cmd)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
