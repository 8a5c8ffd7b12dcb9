"""The `photoseek` command: a thin typer layer over the indexer and search libraries."""

from __future__ import annotations

import logging
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


class _QuietRandomInit(logging.Filter):
    """open_clip warns when it builds a model without weights: exactly what `train` wants."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


def main() -> None:
    """Console entry point: library errors become one line on stderr and exit code 2."""
    from indexer.errors import PhotoseekError

    logging.basicConfig(format="photoseek: %(levelname)s: %(message)s", level=logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietRandomInit())
    try:
        app()
    except PhotoseekError as e:
        sys.stderr.write(f"photoseek: error: {e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("photoseek: interrupted (committed work is kept; run again to resume)\n")
        sys.exit(130)
