"""The indexing process's memory settings, each checked in a fresh interpreter."""

from __future__ import annotations

import importlib.util
import platform
import subprocess
import sys

import pytest

# Eight threads allocate and free 1-4 MB blocks at once: glibc gives threads that contend
# arenas of their own, and malloc_stats() lists every arena on stderr.
_CONTENDED_ARENAS = """
import ctypes, sys, threading
from indexer.memory import lean_indexing_process
if sys.argv[1] == "lean":
    lean_indexing_process()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
start = threading.Barrier(8)
def churn():
    start.wait()
    for i in range(2000):
        libc.free(libc.malloc((1 + i % 4) << 20))
threads = [threading.Thread(target=churn) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc.malloc_stats()
"""


def _arenas(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _CONTENDED_ARENAS, mode], capture_output=True, text=True, check=True
    )
    return done.stderr.count("Arena ")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc arenas")
def test_an_indexing_process_keeps_two_malloc_arenas() -> None:
    assert _arenas("plain") > 2  # what the threads get by default: the cap below is real
    assert _arenas("lean") <= 2


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_an_indexing_process_never_loads_triton() -> None:
    """torchvision (imported by open_clip) imports torch._dynamo, which imports triton where it
    is installed; the lean process imports both without it and still runs torch."""
    code = (
        "import sys\n"
        "from indexer.memory import lean_indexing_process\n"
        "lean_indexing_process()\n"
        "import torch, torchvision, open_clip\n"
        "maps = open('/proc/self/maps').read() if sys.platform == 'linux' else ''\n"
        "print(sys.modules.get('triton') is None, 'libtriton' in maps,"
        " float(torch.ones(2) @ torch.ones(2)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "False", "2.0"]
