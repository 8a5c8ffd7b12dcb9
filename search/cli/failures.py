"""What a failed command says: one line on stderr and an exit code, whatever went wrong.

2: bad input (a `PhotoseekError`: the user can act on the message); 1: anything else (a busy or
damaged catalog, the file system, a bug); 130: interrupted. The traceback is for --debug.
"""

from __future__ import annotations

import os
import sys

INTERRUPTED = "interrupted (committed work is kept; run again to resume)"
DEBUG_ENV = "PHOTOSEEK_DEBUG"


def debug_from_environment() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def failure(error: BaseException) -> tuple[str | None, int]:
    """The line (None: say nothing) and the exit code for an exception a command raised."""
    from indexer.errors import PhotoseekError

    if isinstance(error, KeyboardInterrupt):
        return INTERRUPTED, 130
    if isinstance(error, PhotoseekError):
        return _one_line(str(error)), 2
    if isinstance(error, BrokenPipeError):
        return None, 1  # the reader went away (`| head`): nobody is left to tell
    if isinstance(error, MemoryError):
        return "out of memory", 1
    if isinstance(error, OSError):
        return _os_message(error), 1
    database = _database_message(error)
    if database is not None:
        return database, 1
    return (
        f"unexpected {type(error).__name__}: {_one_line(str(error))} "
        f"(run with --debug or {DEBUG_ENV}=1 for the traceback)",
        1,
    )


def _os_message(error: OSError) -> str:
    if not error.strerror:
        return _one_line(str(error))
    names = [os.fsdecode(n) for n in (error.filename, error.filename2) if n is not None]
    return ": ".join([error.strerror.lower(), *names])


def _database_message(error: BaseException) -> str | None:
    """The database's own errors (SQLite's, PostgreSQL's), raw or wrapped by SQLAlchemy, in its
    words; None if not one."""
    exc = sys.modules.get("sqlalchemy.exc")  # loaded if the error can be one of its own
    if exc is not None and isinstance(error, exc.DBAPIError) and error.orig is not None:
        error = error.orig
    psycopg = sys.modules.get("psycopg")  # a PostgreSQL catalog's driver, once it is loaded
    if psycopg is not None and isinstance(error, psycopg.Error):
        return f"the index catalog failed: {_one_line(str(error))}"
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is None or not isinstance(error, sqlite3.Error):
        return None
    reason = _one_line(str(error))
    if "locked" in reason or "busy" in reason:
        return (
            f"the index catalog is busy ({reason}): another program holds a lock on it; "
            "try again when it is done"
        )
    return f"the index catalog failed: {reason}"


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"
