"""How the CLI writes: JSON to stdout, raw path bytes, one-line errors, and display text."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import typer


def display_path(path: bytes) -> str:
    """A path for people: invalid UTF-8 bytes shown as \\x escapes, never a crash."""
    return path.decode("utf-8", "backslashreplace")


def json_path(path: bytes) -> str:
    """A path for JSON: os.fsdecode's surrogate escapes, so os.fsencode() restores the bytes."""
    return os.fsdecode(path)


def print_json(value: Any) -> None:
    """Stable machine output: ASCII JSON (lone surrogates escaped), one document per call."""
    sys.stdout.write(json.dumps(value, ensure_ascii=True, indent=2) + "\n")


def write_paths(paths: list[bytes], nul: bool) -> None:
    """Raw path bytes, one per line (or NUL-terminated for xargs -0)."""
    end = b"\0" if nul else b"\n"
    out = sys.stdout.buffer
    for path in paths:
        out.write(path + end)
    out.flush()


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one line on stderr and return the Exit to raise."""
    sys.stderr.write(f"photoseek: error: {message}\n")
    return typer.Exit(code)
