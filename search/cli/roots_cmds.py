"""`photoseek roots` and `forget`: the folders an index covers, and removing one on purpose."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from search.cli.options import IndexOpt, JsonOpt
from search.cli.output import display_path, json_path, print_json


def register(app: typer.Typer) -> None:
    app.command("roots")(roots)
    app.command("forget")(forget)


def roots(index_dir: IndexOpt = None, json_out: JsonOpt = False) -> None:
    """The roots of the index: state (online, offline, missing), counts and walk options."""
    from indexer.locations import index_dir as resolve_index
    from indexer.store.roots import list_roots

    found = list_roots(resolve_index(index_dir))
    if json_out:
        print_json(
            [
                {
                    "path": json_path(info.path),
                    "state": info.state,
                    "images": info.images,
                    "errors": info.errors,
                    "offline": info.offline,
                    "include_hidden": info.options.include_hidden,
                    "exclude": list(info.options.exclude),
                    "forgotten": sorted(json_path(p) for p in info.options.skip),
                }
                for info in found
            ]
        )
        return
    for info in found:
        counts = f"{info.images} images, {info.errors} errors, {info.offline} offline"
        typer.echo(f"{info.state:<8} {display_path(info.path)}  ({counts})")


def forget(
    path: Annotated[Path, typer.Argument(help="A root, or a folder inside one")],
    index_dir: IndexOpt = None,
) -> None:
    """Remove a root (or a folder inside one, skipped from then on) and its rows from the index."""
    from indexer.locations import index_dir as resolve_index
    from indexer.store.roots import forget as forget_path

    removed = forget_path(resolve_index(index_dir), path)
    typer.echo(f"forgot {display_path(os.fsencode(path))}: {removed} rows removed", err=True)
