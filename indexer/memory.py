"""Process-wide memory settings for a command that indexes photos.

They change the whole process, so the library never applies them behind its caller's back: the
CLI's `index` command opts in before it starts (`lean_indexing_process`). Measured on the
camera-roll bench (bench/camera_roll.py, 2 cores), where photoseek's peak RSS was over rclip's:

- glibc gives each thread that allocates under contention an arena of its own (up to 8 per
  core), and each arena keeps what its thread freed for that thread: the decode workers, the
  whole-decode thread, torch's threads and the model loader each kept their own high-water
  mark. Two arenas took ~100 MB off the peak at no measured CPU cost. A MALLOC_ARENA_MAX the
  user set wins.
- open_clip imports torchvision, torchvision imports torch._dynamo, and dynamo imports triton,
  when it is installed (torch's CUDA wheels install it), only to register triton's types: ~70
  MB of libtriton resident in a process that never compiles a kernel. photoseek runs torch
  eagerly on every device, so the indexing process tells Python that triton is absent.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys

log = logging.getLogger(__name__)

ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


def lean_indexing_process() -> None:
    """Apply both settings (see the module's docstring); call it before any thread starts."""
    limit_malloc_arenas(ARENAS)
    skip_triton()


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas at `arenas`, unless MALLOC_ARENA_MAX says otherwise. Returns
    whether the cap was set (False off glibc: musl, macOS and Windows have no such arenas)."""
    if "MALLOC_ARENA_MAX" in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError) as e:  # a libc without mallopt
        log.debug("could not cap malloc arenas: %s", e)
        return False


def skip_triton() -> None:
    """Make `import triton` fail (and find_spec say it is absent) in this process, unless it is
    imported already; torch then skips what it registers for triton."""
    sys.modules.setdefault("triton", None)  # type: ignore[arg-type]
