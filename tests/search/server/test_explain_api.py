"""`GET /api/images/{id}/explain`: the heatmap `photoseek explain` draws, from a real server."""

from __future__ import annotations

import io
import json
import os

import pytest
from PIL import Image

from helpers import run


def first_result(server, q: str = "a photo") -> dict:
    status, body = server.json(f"/api/search?q={q.replace(' ', '+')}&k=1")
    assert status == 200, body
    return body["results"][0]


def test_the_png_is_the_one_photoseek_explain_draws(explaining_server, explained, tmp_path):
    found = first_result(explaining_server)
    status, headers, png = explaining_server.call(
        f"/api/images/{found['id']}/explain?q=a+red+circle"
    )
    assert status == 200 and headers["content-type"] == "image/png", png[:200]
    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG" and picture.size == (found["width"], found["height"])
    out = tmp_path / "cli.png"
    result = run("explain", found["path"], "a red circle", "--out", str(out),
                 "--index", str(explained[0]))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == png


def test_json_has_the_maps_and_peaks_of_explain_json(explaining_server, explained, tmp_path):
    found = first_result(explaining_server)
    status, body = explaining_server.json(
        f"/api/images/{found['id']}/explain?q=a+blue+square&format=json"
    )
    assert status == 200, body
    result = run("explain", found["path"], "a blue square", "--out", str(tmp_path / "x.png"),
                 "--index", str(explained[0]), "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    cli = json.loads(result.stdout)
    del cli["image"], cli["out"]
    assert body == {"id": found["id"], **cli}
    assert [w["word"] for w in body["words"]] == ["a", "blue", "square"]
    assert 0 <= body["peak"][0] < found["width"] and 0 <= body["peak"][1] < found["height"]


@pytest.mark.parametrize(
    ("query", "code", "fragment"),
    [
        ("", 400, "text to locate"),
        ("?q=%20%20", 400, "text to locate"),
        ("?q=red&format=gif", 400, "format"),
        ("?q=red&layer=9", 400, "fusion layers"),
    ],
)
def test_bad_requests_are_one_line_json(explaining_server, query, code, fragment):
    found = first_result(explaining_server)
    status, headers, body = explaining_server.call(f"/api/images/{found['id']}/explain{query}")
    assert status == code and headers["content-type"] == "application/json", body
    error = json.loads(body)["error"]
    assert fragment in error and "\n" not in error


def test_an_unknown_id_is_404(explaining_server):
    status, body = explaining_server.json("/api/images/999999/explain?q=red")
    assert status == 404 and "no image with id 999999" in body["error"]


def test_a_model_without_an_itm_head_is_a_400(server):
    found = first_result(server)
    status, body = server.json(f"/api/images/{found['id']}/explain?q=red")
    assert status == 400 and "ITM head" in body["error"], body


def test_an_offline_photo_file_is_a_clear_error(explaining_server, explained):
    found = first_result(explaining_server, "a photo of night")
    moved = os.fsencode(found["path"]) + b".away"
    os.rename(os.fsencode(found["path"]), moved)
    try:
        status, body = explaining_server.json(f"/api/images/{found['id']}/explain?q=red")
    finally:
        os.rename(moved, os.fsencode(found["path"]))
    assert status in (400, 404) and "cannot read" in body["error"], body
