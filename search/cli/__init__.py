"""The `photoseek` command: a thin typer layer over the indexer and search libraries."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Annotated

import typer

from indexer.store.catalog_url import CATALOG_ENV
from search.cli import (
    demo_cmds,
    explain_cmds,
    index_cmds,
    query_cmds,
    rerank_cmds,
    roots_cmds,
    serve_cmds,
    text_cmds,
    train_cmds,
)
from search.cli.failures import DEBUG_ENV, INTERRUPTED, debug_from_environment, failure
from search.cli.options import CatalogOpt, hoist_catalog

app = typer.Typer(
    name="photoseek",
    help="Cross-modal photo search: index photo folders, then search them by text or image.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
index_cmds.register(app)
roots_cmds.register(app)
query_cmds.register(app)
rerank_cmds.register(app)
text_cmds.register(app)
train_cmds.register(app)
serve_cmds.register(app)
demo_cmds.register(app)
explain_cmds.register(app)


@dataclass
class _Settings:
    debug: bool = False  # set by --debug, read by main() once the command has failed


_settings = _Settings()


@app.callback()
def _global_options(
    debug: Annotated[
        bool,
        typer.Option("--debug", help=f"On failure, show the traceback too (or set {DEBUG_ENV}=1)"),
    ] = False,
    catalog: CatalogOpt = None,
) -> None:
    """Cross-modal photo search: index photo folders, then search them by text or image."""
    _settings.debug = debug
    if catalog:  # the library reads it from there, as a user's own $PHOTOSEEK_CATALOG
        os.environ[CATALOG_ENV] = catalog


def main() -> None:
    """Console entry point: every failure becomes one line on stderr and a non-zero exit code
    (2 bad input, 1 anything else, 130 interrupted); --debug adds the traceback."""
    from indexer.models.loading import QuietRandomInit

    logging.basicConfig(format="photoseek: %(levelname)s: %(message)s", level=logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(QuietRandomInit())
    try:
        app(args=hoist_catalog(sys.argv[1:]))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code == 130:  # typer's exit for KeyboardInterrupt during a command
            sys.stderr.write(f"photoseek: {INTERRUPTED}\n")
    except BaseException as e:  # noqa: BLE001 - no failure may end in a bare traceback
        code = _report_failure(e)
    _exit_now(code)


def _report_failure(error: BaseException) -> int:
    message, code = failure(error)
    if _settings.debug or debug_from_environment():
        traceback.print_exception(error)
    if message is not None:
        kind = "" if code == 130 else "error: "
        sys.stderr.write(f"photoseek: {kind}{message}\n")
    return code


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
