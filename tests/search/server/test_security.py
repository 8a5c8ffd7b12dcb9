"""The server's safety rules against a real process: ids only, capped uploads, bombs, tokens."""

from __future__ import annotations

import io
import json
import socket
import struct
import zlib

import pytest
from serving import Server, start_server
from test_api import multipart

from helpers import assert_one_line_error, run

SECRET = b"root:x:0:0"  # a line of /etc/passwd: no response may carry it


@pytest.mark.parametrize(
    "path",
    [
        "/api/images/..%2F..%2F..%2Fetc%2Fpasswd/file",
        "/api/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd/file",
        "/api/images/..%252F..%252Fetc%252Fpasswd/thumbnail",
        "/api/images/%2Fetc%2Fpasswd/file",
        "/api/images//etc/passwd/file",
        "/api/images/1/../../../../etc/passwd",
        "/api/images/1%2F..%2F..%2Fetc%2Fpasswd/describe",
        "/api/images/-1/file",
        "/api/images/1e3/similar",
        "/api/images/1/thumbnail?size=..%2F..%2Fetc%2Fpasswd",
        "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static//etc/passwd",
    ],
)
def test_no_path_parameter_reaches_a_file(server, path):
    status, _headers, body = raw_get(server, path)
    assert status in (400, 404), (path, status, body[:200])
    assert SECRET not in body


def test_upload_over_the_cap_is_refused_before_it_is_read(server):
    """Headers announce 100 MB; after 1 MB sent the server has already answered 413."""
    host, port = address(server)
    with socket.create_connection((host, port), timeout=30) as sock:
        head = (
            f"POST /api/search HTTP/1.1\r\nHost: {host}\r\nContent-Length: {100 * 2**20}\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\n\r\n"
        )
        sock.sendall(head.encode() + b"\0" * 2**20)
        answer = read_response(sock)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"too large" in answer
    assert server.json("/api/status")[0] == 200  # and it keeps serving


def test_chunked_upload_is_cut_off_at_the_cap(server):
    """No length announced: the server counts as the body streams in, and stops at the cap."""
    host, port = address(server)
    cap = server.json("/api/status")[1]["max_upload_bytes"]
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(
            f"POST /api/search HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\n\r\n".encode()
        )
        part = b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        sock.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        chunk = b"\0" * 2**20
        for _ in range(cap // len(chunk) + 2):  # past the cap, then wait for the answer
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        answer = read_response(sock)
    assert answer.startswith(b"HTTP/1.1 413") and b"too large" in answer, answer[:200]
    assert server.json("/api/status")[0] == 200


def test_decompression_bomb_upload_is_refused(server):
    body, content_type = multipart({"k": "3"}, "bomb.png", png_header(60000, 60000))
    status, answer = server.json("/api/search", data=body, headers={"Content-Type": content_type})
    assert status == 400 and "decompression bomb refused" in answer["error"]
    assert "/tmp" not in answer["error"]  # the upload's temporary file is not named


def test_a_word_naming_a_server_file_is_not_read(server, served):
    picture = str(served[1] / "blue sky.png")
    status, answer = server.json("/api/search?q=" + picture.replace(" ", "%20"))
    assert status == 400 and "text only" in answer["error"]


def test_non_loopback_without_token_refuses_to_start(served):
    result = run("serve", "--index", str(served[0]), "--host", "0.0.0.0", "--port", "0")
    assert_one_line_error(result, "without a token")
    assert result.stdout == ""


@pytest.fixture(scope="module")
def guarded(served, towers_cache):
    running = start_server(served[0], towers_cache, env={"PHOTOSEEK_TOKEN": "s3cret"})
    yield running
    running.stop()


def test_token_is_required_on_every_api_call(guarded):
    for path in ("/api/search?q=photo", "/api/status", "/api/images/1/file"):
        assert guarded.json(path)[0] == 401
        assert guarded.json(path, headers={"Authorization": "Bearer wrong"})[0] == 401
        assert guarded.call(path, headers={"Authorization": "Bearer s3cret"})[0] == 200, path
    assert guarded.call("/")[0] == 200  # the page itself, which then asks for the token


def test_login_sets_a_cookie_that_opens_the_api(guarded):
    wrong = json.dumps({"token": "nope"}).encode()
    headers = {"Content-Type": "application/json"}
    assert guarded.call("/api/login", data=wrong, headers=headers)[0] == 401
    right = json.dumps({"token": "s3cret"}).encode()
    status, answer, _ = guarded.call("/api/login", data=right, headers=headers)
    assert status == 204 and "HttpOnly" in answer["set-cookie"]
    cookie = answer["set-cookie"].split(";")[0]
    assert guarded.json("/api/status", headers={"Cookie": cookie})[0] == 200
    assert guarded.json("/api/status", headers={"Cookie": "photoseek_token=bad"})[0] == 401


def address(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rstrip("/").split(":")
    return host, int(port)


def raw_get(server: Server, path: str) -> tuple[int, bytes, bytes]:
    """GET `path` exactly as written (no client normalising of `..` or escapes)."""
    host, port = address(server)
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = read_response(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or a complete small response)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep and b"content-length:" in head.lower():
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(body) >= length:
                break
    return data


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width×height pixels in a few bytes: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    out = io.BytesIO()
    out.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header))
    out.write(chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b""))
    return out.getvalue()
