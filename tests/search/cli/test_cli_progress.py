"""Progress of long commands: plain lines a pipe can read, a bar on a terminal, none with -q."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
from pathlib import Path

import pytest

from helpers import PHOTOSEEK, run, write_image

# The documented format: "photoseek: STAGE DONE/TOTAL RATE UNIT/s ETA H:MM:SS[ INFO]"
LINE = re.compile(
    r"photoseek: (?P<stage>[a-z ]+) (?P<done>\d+)/(?P<total>\d+|\?) (?P<rate>\d+\.\d|\?) "
    r"(?P<unit>\S+)/s ETA (?P<eta>\d+:\d\d:\d\d|\?)( .*)?"
)
STAGES = re.compile(r"photoseek: (walking|embedding|exporting) ")


@pytest.fixture
def library(tmp_path, tiny_checkpoint) -> tuple[Path, dict[str, str]]:
    """A photo folder, and an environment whose export cache is empty (so the towers export)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(12):
        write_image(photos / f"p{seed}.png", seed)
    return photos, {"XDG_CACHE_HOME": str(tmp_path / "fresh-cache")}


def _index(photos: Path, env: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    return run("index", str(photos), "--index", str(photos.parent / "idx"), "--batch-size", "1",
               "--json", *flags, env=env)  # fmt: skip


def test_a_pipe_gets_plain_lines_on_a_clock(library, tiny_checkpoint):
    photos, env = library
    env |= {"PHOTOSEEK_PROGRESS_INTERVAL": "0.05"}
    result = _index(photos, env, "--model", tiny_checkpoint)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["added"] == 12  # stdout stays one JSON document
    lines = [line for line in result.stderr.splitlines() if STAGES.match(line)]
    assert lines, result.stderr
    for line in lines:
        assert LINE.fullmatch(line), line
    exporting = [LINE.fullmatch(line) for line in lines if line.startswith("photoseek: exporting")]
    assert exporting, result.stderr  # loading + exporting the towers takes well over 0.05 s
    last = exporting[-1]
    assert last is not None and (last["done"], last["total"]) == ("2", "2")


@pytest.mark.parametrize(
    ("flags", "interval"), [(("--quiet",), "0.05"), (("-q",), "0.05"), ((), "10")]
)
def test_quiet_and_short_runs_print_no_progress(library, tiny_checkpoint, flags, interval):
    photos, env = library
    env |= {"PHOTOSEEK_PROGRESS_INTERVAL": interval}
    result = _index(photos, env, "--model", tiny_checkpoint, *flags)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["added"] == 12
    assert not [line for line in result.stderr.splitlines() if STAGES.match(line)]


def test_a_terminal_gets_a_bar_not_lines(library, tiny_checkpoint):
    photos, env = library
    primary, secondary = pty.openpty()
    try:
        child = subprocess.Popen(
            [*PHOTOSEEK, "index", str(photos), "--index", str(photos.parent / "idx"),
             "--batch-size", "1", "--model", tiny_checkpoint, "--json"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=secondary,
            env={**os.environ, **env, "PHOTOSEEK_PROGRESS_INTERVAL": "0.05", "TERM": "xterm",
                 "COLUMNS": "120"},
        )  # fmt: skip
        os.close(secondary)
        screen = _read_all(primary)
        stdout, _ = child.communicate(timeout=300)
    finally:
        os.close(primary)
    assert child.returncode == 0, screen
    assert json.loads(stdout)["added"] == 12
    assert "exporting" in screen and "━" in screen  # rich drew a bar for the export
    assert "\x1b[" in screen  # redrawn in place with escape codes
    assert "photoseek: exporting" not in screen  # not the plain lines of a pipe


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")
