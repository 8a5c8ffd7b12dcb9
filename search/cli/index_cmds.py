"""`photoseek index`, `status`, `errors` and `models`: build an index and look at it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from search.cli.options import IndexOpt, JsonOpt, QuietOpt
from search.cli.output import display_path, json_path, print_json
from search.cli.progress import progress_reporter

if TYPE_CHECKING:
    from indexer.pipeline import IndexSummary

# One option with a value, as typer takes no option whose value may be left out: the values
# are ray.init's own ("local" starts a cluster here, "auto" joins the one `ray start` runs).
RayOpt = Annotated[
    str | None,
    typer.Option(
        metavar="ADDRESS",
        help="Decode and embed on a Ray cluster: local (start one here), auto (the one "
        "`ray start` runs here) or HOST:PORT / ray://HOST:PORT; needs photoseek[ray]",
    ),
]


MaxIndexMemoryOpt = Annotated[
    str | None,
    typer.Option(
        metavar="SIZE",
        help="Memory the vector index may take, e.g. 2G: beyond it PQ codes replace full "
        "vectors [default: a quarter of this machine's RAM]",
    ),
]

CaptionsOpt = Annotated[
    bool, typer.Option(help="Caption the photos (later runs go on), for search --text-match")
]


def _parsed_captioner(spec: str | None) -> str | None:
    """A bad --captioner fails at once (one line), not after the photos are embedded."""
    if spec is not None:
        from indexer.captioning import parse_captioner

        parse_captioner(spec)
    return spec


CaptionerOpt = Annotated[
    str | None,
    typer.Option(
        metavar="SPEC",
        callback=_parsed_captioner,
        help="coca:ARCH:TAG, coca:ARCH:FILE, hf:ORG/NAME or a model folder; implies --captions "
        "[default: the one the index records]",
    ),
]


def register(app: typer.Typer) -> None:
    app.command("index")(index)
    app.command("status")(status)
    app.command("errors")(errors)
    app.command("models")(models)


def index(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Folders or files [default: the index's roots]")
    ] = None,
    index_dir: IndexOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="NAME:TAG, NAME:CHECKPOINT, local-dir:DIR, DIR or hf-hub:ORG/NAME "
            "[default: the index's model, else ViT-B-32:laion2b_s34b_b79k]"
        ),
    ] = None,
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16, fp16 or int8")] = "auto",
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            help="Glob of names or relative paths to skip (repeatable) [default: the root's own]"
        ),
    ] = None,
    include_hidden: Annotated[
        bool | None,
        typer.Option(
            "--include-hidden/--no-include-hidden",
            help="Also index hidden files and folders [default: the root's own, else no]",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per model call")] = 32,
    workers: Annotated[int, typer.Option(help="Decode threads [default: CPU count]")] = 0,
    dry_run: Annotated[bool, typer.Option(help="List what would change; change nothing")] = False,
    retry_errors: Annotated[bool, typer.Option(help="Retry every file that failed")] = False,
    prune: Annotated[
        bool, typer.Option(help="Delete the rows of files whose folder is offline or missing")
    ] = False,
    rerank_cache: Annotated[
        str | None,
        typer.Option(help="Then fill this reranker's vision cache (hf:ORG/NAME or a folder)"),
    ] = None,
    ray: RayOpt = None,
    max_index_memory: MaxIndexMemoryOpt = None,
    captions: CaptionsOpt = False,
    captioner: CaptionerOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Embed every image under PATHS; re-runs touch only what changed."""
    import os

    from indexer.locations import index_dir as resolve_index
    from indexer.media.discovery import WalkOptions
    from indexer.memory import lean_indexing_process
    from indexer.pipeline import IndexOptions, run_index
    from indexer.store.index_choice import parse_size

    lean_indexing_process()  # before any thread starts: it sets how threads share malloc
    options = IndexOptions(
        roots=tuple(paths or ()),
        model=model,
        precision=precision,
        # given, they replace each root's stored walk options; else the stored ones are used
        walk=WalkOptions(bool(include_hidden), tuple(exclude or ()))
        if exclude or include_hidden is not None
        else None,
        batch_size=batch_size,
        workers=workers or max(1, os.cpu_count() or 1),
        dry_run=dry_run,
        retry_errors=retry_errors,
        prune=prune,
        max_index_memory=parse_size(max_index_memory) if max_index_memory else None,
        ray=ray,
        captions=captions or captioner is not None,
        captioner=captioner,
    )
    directory = resolve_index(index_dir)
    with progress_reporter(quiet) as progress:
        summary = run_index(directory, options, progress)
    _print_summary(summary, json_out)
    if rerank_cache and not dry_run:
        from search.cli.rerank_cmds import fill_cache

        fill_cache(directory, rerank_cache, quiet)


def _print_summary(summary: IndexSummary, json_out: bool) -> None:
    dry_run = summary.dry_run
    if json_out:
        result: dict[str, object] = {**summary.counts(), "embedder": summary.embedder}
        if dry_run:
            result |= {
                "dry_run": True,
                "to_add": [json_path(p) for p in summary.to_add],
                "to_update": [json_path(p) for p in summary.to_update],
                "to_remove": [json_path(p) for p in summary.to_remove],
            }
        print_json(result)
        return
    if dry_run:
        for label, items in (
            ("add", summary.to_add),
            ("update", summary.to_update),
            ("remove", summary.to_remove),
        ):
            for path in items:
                typer.echo(f"would {label}: {display_path(path)}")
    c = summary.counts()
    verb = "would change" if dry_run else "indexed"
    line = (
        f"{verb}: {c['added']} added, {c['updated']} updated, {c['removed']} removed "
        f"({c['reused']} reused by content), {c['errors']} errors, {c['unchanged']} unchanged "
        f"in {c['seconds']:.1f}s"
    )
    typer.echo(line, err=not dry_run)
    if c["errors"]:
        typer.echo("see `photoseek errors` for the files that failed", err=True)


def status(index_dir: IndexOpt = None, json_out: JsonOpt = False) -> None:
    """What an index holds: images, errors, vectors, roots, model, bytes on disk."""
    from indexer.locations import index_dir as resolve_index
    from search.tools.status import index_status

    info = index_status(resolve_index(index_dir))
    if json_out:
        print_json(info)
        return
    model, size, roots = info["model"] or {}, info["bytes"], info["roots"]
    # index_status returns dict[str, object]: narrowed here until it returns a TypedDict
    assert isinstance(model, dict) and isinstance(size, int) and isinstance(roots, list)
    typer.echo(f"index    {info['index']}")
    typer.echo(f"model    {model.get('spec', '(none yet)')}")
    typer.echo(f"images   {info['images']}  (vectors: {info['vectors']}, {info['index_type']})")
    if isinstance(built := info["vector_index"], dict) and built.get("factory"):
        typer.echo(f"vectors  {_vector_index_line(built)}")
    typer.echo(f"errors   {info['errors']}")
    if isinstance(embedder := info["embedder"], dict):
        typer.echo(f"embedder {embedder['precision']} on {embedder['engine']} (last indexing run)")
    typer.echo(f"size     {size / 1e6:.1f} MB")
    if info["rerank_bytes_per_image"]:
        typer.echo(f"rerank   {info['rerank_bytes_per_image']} bytes/image of ITM tokens")
    for root in roots:
        typer.echo(f"root     {root}")


def _vector_index_line(built: dict[str, object]) -> str:
    """`IVF4096,Flat trained on 1000000, nprobe 64, recall@10 0.962 ± 0.004 at build`."""
    if not built.get("nprobe"):
        return f"{built['factory']} (exact search)"
    line = f"{built['factory']} trained on {built['trained_for']}, nprobe {built['nprobe']}"
    if built.get("ef_search"):
        line += f", efSearch {built['ef_search']}"
    if built.get("refine"):
        line += f", exact re-scoring of {built['refine']}x k"
    recall, error = built.get("recall"), built.get("recall_se")
    if not isinstance(recall, float):
        return line
    spread = f" ± {error:.3f}" if isinstance(error, float) and error > 0 else ""
    return line + f", recall@10 {recall:.3f}{spread} at build"


def errors(index_dir: IndexOpt = None, json_out: JsonOpt = False) -> None:
    """The files that could not be indexed, with the reason."""
    from indexer.locations import index_dir as resolve_index
    from search.tools.status import failed_files

    failed = failed_files(resolve_index(index_dir))
    if json_out:
        print_json([{"path": json_path(f.path), "reason": f.reason} for f in failed])
        return
    for f in failed:
        typer.echo(f"{display_path(f.path)}: {f.reason}")


def models() -> None:
    """Architectures open_clip can build here, the shipped tiny configs included."""
    from indexer.models.loading import list_architectures

    for name in list_architectures():
        typer.echo(name)
