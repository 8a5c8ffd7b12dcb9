"""Facts about the machine and the code a benchmark ran on, recorded beside its numbers."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path

from lib import REPO
from lib.cache import Paths


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _output(cmd: list[str | os.PathLike[str]]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()


def environment(paths: Paths) -> dict:
    """CPU, load, library versions of both peers, and photoseek's git revision."""
    import open_clip
    import PIL
    import torch

    peer_versions = _output(
        [
            paths.peer / "venv" / "bin" / "python",
            "-c",
            "import importlib.metadata as m; print(m.version('rclip'), m.version('onnxruntime'))",
        ]
    ).split()
    rev = _output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = _output(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "pillow": PIL.__version__,
        "rclip": peer_versions[0] if peer_versions else "?",
        "onnxruntime (rclip)": peer_versions[1] if len(peer_versions) > 1 else "?",
        "photoseek_git": rev + ("+dirty" if dirty else ""),
    }


def code_fingerprint() -> str:
    """A hash of photoseek's sources and data: to notice edits made while the benchmark runs."""
    digest = hashlib.blake2b(digest_size=8)
    for folder in ("indexer", "search", "data"):
        for path in sorted((REPO / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
