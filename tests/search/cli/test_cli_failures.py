"""Every failure of a command is one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import PHOTOSEEK, run, write_image
from indexer.pipeline import IndexOptions, run_index
from indexer.store.vector_store import VECTORS_FILE

_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE = 24, 1


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_checkpoint, towers_cache) -> tuple[Path, Path]:
    """(index dir, photo dir) indexed once; tests change copies of it."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_CACHE_HOME", str(towers_cache))
        photos = tmp_path_factory.mktemp("photos")
        for seed in range(4):
            write_image(photos / f"p{seed}.jpg", seed)
        index = tmp_path_factory.mktemp("built") / "idx"
        run_index(index, IndexOptions(roots=(photos,), model=tiny_checkpoint))
        return index, photos


@pytest.fixture
def index(built, tmp_path) -> Path:
    copy = tmp_path / "idx"
    shutil.copytree(built[0], copy)
    return copy


def assert_one_line_failure(
    result: subprocess.CompletedProcess[str], code: int, *fragments: str
) -> str:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("photoseek: error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def test_a_locked_catalog_is_one_line_and_exit_1(index, built):
    write_image(built[1] / "new.jpg", seed=99)  # something to write, whatever opening writes
    holder = sqlite3.connect(index / "catalog.sqlite", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        result = run("index", "--index", str(index))
    finally:
        holder.close()
        (built[1] / "new.jpg").unlink()
    assert_one_line_failure(result, 1, "locked")


def _without_dac_override() -> None:
    """As root, give up the power to write where the mode bits say no (for a child process)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _run_read_only(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a process that read-only folders really stop, also when tests run as root."""
    return subprocess.run(
        [*PHOTOSEEK, *args],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_without_dac_override if os.geteuid() == 0 else None,
    )


def _make_read_only(folder: Path) -> None:
    for path in [*folder.rglob("*"), folder]:
        path.chmod(0o555 if path.is_dir() else 0o444)


def test_indexing_into_a_read_only_index_folder_is_one_line(index, built, tmp_path):
    write_image(built[1] / "new.jpg", seed=98)
    _make_read_only(index)
    try:
        result = _run_read_only("index", "--index", str(index))
    finally:
        (built[1] / "new.jpg").unlink()
        index.chmod(0o755)
    assert_one_line_failure(result, 1)
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    result = _run_read_only("index", str(built[1]), "--index", str(read_only / "idx"))
    assert_one_line_failure(result, 1, "permission denied", str(read_only / "idx"))


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(index):
    (index / VECTORS_FILE).write_bytes(b"not a faiss index" * 10)
    plain = run("search", "a photo", "--index", str(index))
    line = assert_one_line_failure(plain, 1, "unexpected", "--debug")
    flag = run("--debug", "search", "a photo", "--index", str(index))
    env = run("search", "a photo", "--index", str(index), env={"PHOTOSEEK_DEBUG": "1"})
    for debug in (flag, env):
        assert debug.returncode == 1
        assert "Traceback" in debug.stderr
        assert debug.stderr.strip().splitlines()[-1] == line


# photoseek as a terminal runs it: Python makes SIGINT a KeyboardInterrupt only where its parent
# did not ignore the signal, and a test run started in the background (`cmd &`) does ignore it.
AT_A_TERMINAL = [
    sys.executable, "-c",
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from search.cli import main; main()",
]  # fmt: skip


def test_ctrl_c_is_one_line_and_exit_130(index, built):
    """SIGINT while a command waits on a busy catalog: the interrupted line, exit 130, at once
    (SQLite's own lock wait, 10 s in one piece, hid the signal until it was over)."""
    write_image(built[1] / "new.jpg", seed=97)
    holder = sqlite3.connect(index / "catalog.sqlite", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        child = subprocess.Popen(
            [*AT_A_TERMINAL, "index", "--index", str(index)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)  # started, imported, and waiting on the lock (10 s) by now
        child.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        _, stderr = child.communicate(timeout=60)
        answered = time.monotonic() - interrupted
    finally:
        holder.close()
        (built[1] / "new.jpg").unlink()
    assert child.returncode == 130, stderr
    assert answered < 5  # not after the rest of the 10 s wait
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines() == [
        "photoseek: interrupted (committed work is kept; run again to resume)"
    ]
