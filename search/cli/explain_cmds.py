"""`photoseek explain`: a heatmap of where a text matches a photo, per word in --json."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from search.cli.options import IndexOpt, JsonOpt
from search.cli.output import print_json


def register(app: typer.Typer) -> None:
    app.command("explain")(explain)


def explain(
    image: Annotated[Path, typer.Argument(help="The photo")],
    text: Annotated[str, typer.Argument(help="The text to locate in it")],
    out: Annotated[Path, typer.Option("--out", help="Write the heatmap here (PNG)")],
    index_dir: IndexOpt = None,
    model: Annotated[
        str | None,
        typer.Option(help="A model folder with an ITM head [default: the index's model]"),
    ] = None,
    reranker: Annotated[
        str | None,
        typer.Option(help="head (the model's ITM head), or a BLIP hf:ORG/NAME or folder"),
    ] = None,
    layer: Annotated[
        int | None,
        typer.Option(help="The cross-attention layer, 0 = first (default: head 0, BLIP 6)"),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Show where in IMAGE the TEXT matches: Grad-CAM on the ITM head's cross-attention."""
    from indexer.atomic import replacing
    from search.tools.explain import explain_photo, read_photo
    from search.tools.heatmap import overlay_for

    data, ext = read_photo(image)
    explanation = explain_photo(data, ext, text, index_dir, model, reranker, layer)
    picture = overlay_for(data, ext, explanation.map_of(), explanation.geometry)
    with replacing(out) as tmp:
        picture.save(tmp, format="PNG")
    if json_out:
        print_json({"image": os.fsdecode(image), "out": os.fsdecode(out), **explanation.to_json()})
    else:
        x, y = explanation.peak(explanation.map_of())
        sys.stdout.write(f"{out}\tpeak {x},{y}\titm_logit {explanation.itm_logit:.3f}\n")
