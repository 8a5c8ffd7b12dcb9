"""The `photoseek` command: a thin typer layer over the indexer and search libraries."""

from __future__ import annotations

import logging
import os
import sys

import typer

from search.cli import demo_cmds, index_cmds, query_cmds, text_cmds, train_cmds

app = typer.Typer(
    name="photoseek",
    help="Cross-modal photo search: index photo folders, then search them by text or image.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
index_cmds.register(app)
query_cmds.register(app)
text_cmds.register(app)
train_cmds.register(app)
demo_cmds.register(app)


def main() -> None:
    """Console entry point: library errors become one line on stderr and exit code 2."""
    from indexer.errors import PhotoseekError
    from indexer.models.loading import QuietRandomInit

    logging.basicConfig(format="photoseek: %(levelname)s: %(message)s", level=logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(QuietRandomInit())
    try:
        app()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except PhotoseekError as e:
        sys.stderr.write(f"photoseek: error: {e}\n")
        code = 2
    except KeyboardInterrupt:
        sys.stderr.write("photoseek: interrupted (committed work is kept; run again to resume)\n")
        code = 130
    _exit_now(code)


def _exit_now(code: int) -> None:
    """Exit without tearing down the interpreter: after torch and open_clip, garbage-collecting
    their module graph at shutdown costs about a second. Every command has closed its files
    and committed its work by now; only the standard streams still need flushing."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a reader that closed early, e.g. `| head`
            pass
    os._exit(code)
