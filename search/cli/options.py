"""Options that several command groups share."""

from __future__ import annotations

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
