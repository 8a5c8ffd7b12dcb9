"""Options that several command groups share."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

IndexOpt = Annotated[
    Path | None,
    typer.Option("--index", help="Index directory [default: $PHOTOSEEK_INDEX or XDG data dir]"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object to stdout.")]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Show no progress (bar or periodic lines) on stderr.")
]

CATALOG_HELP = (
    "The catalog's database: a SQLAlchemy URL such as postgresql+psycopg://user@host/db (its "
    "password from the URL, PGPASSWORD or ~/.pgpass). `index` records it, without the password, "
    "in the --index folder, which keeps the vectors and query towers (default: "
    "$PHOTOSEEK_CATALOG, else the URL the folder records, else its own SQLite file)"
)

CatalogOpt = Annotated[
    str | None, typer.Option("--catalog", metavar="URL", help=CATALOG_HELP, show_default=False)
]


def hoist_catalog(args: Sequence[str]) -> list[str]:
    """`args` with a `--catalog URL` given after the command moved before it, where the global
    option is parsed: `photoseek search --catalog URL q` means `photoseek --catalog URL search q`.
    Nothing after a `--` moves."""
    head, rest = list(args), []
    if "--" in head:
        cut = head.index("--")
        head, rest = head[:cut], head[cut:]
    moved: list[str] = []
    kept: list[str] = []
    tokens = iter(head)
    for token in tokens:
        if token == "--catalog":
            moved += [token, next(tokens, "")]
        elif token.startswith("--catalog="):
            moved.append(token)
        else:
            kept.append(token)
    return moved + kept + rest
