"""The `photoseek` command: a thin typer layer over the indexer and search libraries."""

from __future__ import annotations

import sys

import typer

from search.cli import index_cmds, query_cmds, text_cmds, train_cmds

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


def main() -> None:
    """Console entry point: library errors become one line on stderr and exit code 2."""
    from indexer.errors import PhotoseekError

    try:
        app()
    except PhotoseekError as e:
        sys.stderr.write(f"photoseek: error: {e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("photoseek: interrupted (committed work is kept; run again to resume)\n")
        sys.exit(130)
