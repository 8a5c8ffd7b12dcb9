"""Search results as a self-contained HTML page (their JSON shape is `Hit.to_json`)."""

from __future__ import annotations

import base64
import html
import io
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from indexer import atomic
from search.hits import Hit
from search.tools.thumbnails import thumbnail

THUMBNAIL = 256  # px, longest side of the thumbnails embedded in HTML pages

# The picture a card shows instead of the plain thumbnail (`search --html --explain`: the
# explanation's overlay), or None for the thumbnail.
Picture = Callable[[Hit], "Image.Image | None"]


def thumbnail_data_uri(path: bytes) -> str | None:
    """A small JPEG of the image as a data: URI, or None when the file cannot be read now."""
    image = thumbnail(path, THUMBNAIL)
    return None if image is None else jpeg_data_uri(image)


def jpeg_data_uri(image: Image.Image) -> str:
    """`image`, shrunk to fit `THUMBNAIL`, as a JPEG data: URI."""
    image = image.copy()
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def html_page(
    title: str, sections: Sequence[tuple[str, Sequence[Hit]]], picture: Picture | None = None
) -> str:
    """A page with one grid of thumbnails per section (heading, hits); no external files.
    With `picture`, each card shows what it gives for the hit where it gives one."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for heading, hits in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2><div class='grid'>")
        if not hits:
            parts.append("<p class='none'>no results</p>")
        for rank, hit in enumerate(hits, 1):
            parts.append(_card(rank, hit, picture))
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "".join(parts)


def _card(rank: int, hit: Hit, pictures: Picture | None) -> str:
    shown = html.escape(hit.path.decode("utf-8", "backslashreplace"))
    href = "file://" + urllib.parse.quote(hit.path)
    special = pictures(hit) if pictures is not None else None
    uri = jpeg_data_uri(special) if special is not None else thumbnail_data_uri(hit.path)
    picture = f"<img src='{uri}' alt='{shown}'>" if uri else "<div class='missing'>?</div>"
    extra = "".join(
        f"<span>{html.escape(key)} {value:.3f}</span>" for key, value in hit.extra.items()
    )
    return (
        f"<figure><a href='{html.escape(href)}'>{picture}</a><figcaption>"
        f"<b>#{rank}</b> <span>score {hit.score:.3f}</span>{extra}"
        f"<a class='path' href='{html.escape(href)}'>{shown}</a></figcaption></figure>"
    )


def write_html(
    path: Path,
    title: str,
    sections: Sequence[tuple[str, Sequence[Hit]]],
    picture: Picture | None = None,
) -> None:
    """Write the page (`html_page`) atomically (`indexer.atomic`)."""
    atomic.write_text(path, html_page(title, sections, picture))


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}"
    ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:12px}"
    "figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px}"
    "img{width:100%;height:180px;object-fit:contain;background:#eee}"
    ".missing{height:180px;display:flex;align-items:center;justify-content:center;"
    "background:#eee;font-size:3em;color:#aaa}"
    "figcaption{font-size:12px;display:flex;flex-wrap:wrap;gap:6px;margin-top:4px}"
    ".path{word-break:break-all;color:#555;width:100%;white-space:pre-wrap}"
)
