"""The JSON API of a real `photoseek serve` process: searches, images by id, status, errors."""

from __future__ import annotations

import json
import os
import urllib.parse

import pytest
from serving import NAMES, build_index, scene, start_server

from indexer.pipeline import IndexOptions, run_index
from search.server.models import SearchFields


def test_text_search_returns_every_image_with_urls(server, served):
    status, body = server.json("/api/search?q=a+photo&k=50")
    assert status == 200, body
    found = body["results"]
    root = os.fsencode(served[1])
    assert {os.fsencode(r["path"]) for r in found} == {root + b"/" + os.fsencode(n) for n in NAMES}
    assert [r["rank"] for r in found] == list(range(1, len(NAMES) + 1))
    assert [r["score"] for r in found] == sorted((r["score"] for r in found), reverse=True)
    assert all(r["thumbnail"] == f"/api/images/{r['id']}/thumbnail" for r in found)
    assert body["took_ms"] >= 0


def test_paging_and_filters_match_the_cli_semantics(server, served):
    _, whole = server.json("/api/search?q=a+photo&k=6")
    _, second = server.json("/api/search?q=a+photo&k=2&offset=2")
    assert [r["id"] for r in second["results"]] == [r["id"] for r in whole["results"][2:4]]
    assert [r["rank"] for r in second["results"]] == [3, 4]
    _, few = server.json("/api/search?q=a+photo&k=6&glob=*.jpg")
    assert [os.path.basename(r["path"]) for r in few["results"]] == ["green field.jpg"]
    _, none = server.json("/api/search?q=photo&after=2999")
    assert none["results"] == []


def test_repeated_fields_are_lists_and_every_field_is_documented(server, served):
    root = urllib.parse.quote(str(served[1]))
    _, both = server.json(f"/api/search?q=a+photo&k=50&under=/elsewhere&under={root}")
    assert len(both["results"]) == len(NAMES)  # either folder: the second `under` counts
    _, neither = server.json("/api/search?q=a+photo&k=50&under=/elsewhere")
    assert neither["results"] == []
    _, schema = server.json("/openapi.json")
    for path in ("/api/search", "/api/images/{image_id}/similar"):
        documented = {p["name"]: p for p in schema["paths"][path]["get"]["parameters"]}
        assert set(SearchFields.model_fields) <= set(documented)
        assert documented["under"]["in"] == "query"
        assert documented["under"]["schema"]["type"] == "array"
        assert "Number of results" in documented["k"]["description"]


def test_text_arithmetic_and_rerank_fields(server):
    status, body = server.json("/api/search?q=beach+%2B+2:sunset+-+people&k=3")
    assert status == 200 and len(body["results"]) == 3
    # the CLI's rerank semantics: the tiny model has no ITM head, so the same one-line refusal
    status, body = server.json("/api/search?q=a+red+ball&k=3&rerank=1")
    assert status == 400 and "ITM head" in body["error"]


def test_text_match_fuses_file_names(server):
    status, body = server.json("/api/search?q=field&k=3&text_match=1")
    assert status == 200, body
    first = body["results"][0]
    assert os.path.basename(first["path"]) == "green field.jpg"
    assert first["text_rank"] == 1 and first["vector_rank"] >= 1
    assert all(r["text_rank"] is None for r in body["results"][1:])
    _, plain = server.json("/api/search?q=field&k=3")
    assert all(r["text_rank"] is None and r["vector_rank"] is None for r in plain["results"])


def test_image_upload_finds_the_same_image_first(server, served):
    data = (served[1] / "blue sky.png").read_bytes()
    body, type_ = multipart({"k": "3"}, "query.png", data)
    status, found = server.json("/api/search", data=body, headers={"Content-Type": type_})
    assert status == 200, found
    assert os.path.basename(found["results"][0]["path"]) == "blue sky.png"


def test_similar_thumbnail_file_describe_by_id(server, served):
    _, body = server.json("/api/search?q=a+photo&k=6")
    first = body["results"][0]
    status, similar = server.json(f"/api/images/{first['id']}/similar?k=3")
    assert status == 200 and len(similar["results"]) == 3
    assert first["id"] not in [r["id"] for r in similar["results"]]
    status, headers, webp = server.call(f"/api/images/{first['id']}/thumbnail?size=512")
    assert status == 200 and headers["content-type"] == "image/webp" and webp[:4] == b"RIFF"
    cached = served[0] / "thumbnails" / "512" / f"{first['id']}.webp"
    assert cached.read_bytes() == webp
    status, _, original = server.call(f"/api/images/{first['id']}/file")
    assert status == 200 and original == open(os.fsencode(first["path"]), "rb").read()
    status, texts = server.json(f"/api/images/{first['id']}/describe?k=4")
    assert status == 200 and len(texts["texts"]) == 4


def test_status_and_openapi(server):
    status, body = server.json("/api/status")
    assert status == 200 and body["index"]["images"] == len(NAMES)
    assert body["token_required"] is False and body["generation"] == 1
    assert body["text_precision"] == "fp32"  # the default: the exact tower
    status, schema = server.json("/openapi.json")
    assert status == 200
    assert {"/api/search", "/api/images/{image_id}/similar", "/api/status"} <= set(schema["paths"])
    status, _, page = server.call("/")
    assert status == 200 and b"photoseek" in page


def test_errors_are_one_line_json_with_their_status(server):
    for path, code in [
        ("/api/search?q=", 400),
        ("/api/search?q=x&k=0", 400),
        ("/api/search?q=x&after=soon", 400),
        ("/api/images/999999/file", 404),
        ("/api/images/abc/file", 400),
        ("/api/images/1/thumbnail?size=77", 400),
        ("/api/nothing", 404),
    ]:
        status, headers, body = server.call(path)
        assert status == code, (path, body)
        assert headers["content-type"] == "application/json"
        error = json.loads(body)["error"]
        assert error and "\n" not in error, path


def test_a_missing_index_is_503_until_one_appears(tmp_path, towers_cache):
    running = start_server(tmp_path / "none", towers_cache)
    try:
        status, body = running.json("/api/search?q=x")
        assert status == 503 and "no photoseek index" in body["error"]
    finally:
        running.stop()


def test_reindex_is_served_without_restart(tmp_path, tiny_checkpoint, towers_cache):
    photos, index = tmp_path / "photos", tmp_path / "index"
    build_index(photos, index, tiny_checkpoint, towers_cache, 3)
    running = start_server(index, towers_cache)
    try:
        _, before = running.json("/api/search?q=photo&k=10")
        gone = next(r for r in before["results"] if r["path"].endswith("red ball.png"))
        os.remove(photos / "red ball.png")
        scene(40).save(photos / "added.png")
        with pytest.MonkeyPatch.context() as env:
            env.setenv("XDG_CACHE_HOME", str(towers_cache))
            run_index(index, IndexOptions(roots=(photos,), model=tiny_checkpoint))
        _, after = running.json("/api/search?q=photo&k=10")
        names = {os.path.basename(r["path"]) for r in after["results"]}
        assert names == {"blue sky.png", "green field.jpg", "added.png"}
        for what in ("file", "thumbnail", "similar", "describe"):
            status, _ = running.json(f"/api/images/{gone['id']}/{what}")
            assert status == 404, what  # a deleted row's id
        assert running.json("/api/status")[1]["generation"] == 2
    finally:
        running.stop()


def multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with `fields` and one `image` file, and its content type."""
    boundary = "photoseekboundary7d1a"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_keep_alive_responses_are_not_held_back(server):
    """Ten small responses on one connection: with Nagle on (no TCP_NODELAY), each body waits
    for the client's delayed ACK, 40 ms apiece."""
    import http.client
    import time

    host, port = server.url.removeprefix("http://").rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    started = time.perf_counter()
    for _ in range(10):
        conn.request("GET", "/api/nothing")
        conn.getresponse().read()
    conn.close()
    assert time.perf_counter() - started < 0.3
