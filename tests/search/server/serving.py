"""Helpers for the server tests: scenes, an index built here, a real `photoseek serve`."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from helpers import PHOTOSEEK
from indexer.pipeline import IndexOptions, run_index

NAMES = ["red ball.png", "blue sky.png", "green field.jpg", "caf\xe9.png", "night.png", "sea.png"]


def scene(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """Coloured ellipses on a coloured ground: different seeds look different to the model."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(x) for x in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.integers(0, size[0] - 60), rng.integers(0, size[1] - 60)
        w, h = rng.integers(30, 120, 2)
        draw.ellipse([x, y, x + w, y + h], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image


def build_index(root: Path, index: Path, model: str, cache: Path, count: int) -> None:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_CACHE_HOME", str(cache))
        root.mkdir(parents=True, exist_ok=True)
        for seed, name in enumerate(NAMES[:count]):
            scene(seed).save(root / name)
        run_index(index, IndexOptions(roots=(root,), model=model))


@dataclass
class Server:
    """A running `photoseek serve` and how to call it."""

    process: subprocess.Popen[str]
    url: str  # http://127.0.0.1:PORT/

    def call(
        self, path: str, data: bytes | None = None, headers: dict[str, str] | None = None,
        method: str | None = None,
    ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        """(status, headers, body) of one request; error statuses are returned, not raised."""
        request = urllib.request.Request(
            self.url.rstrip("/") + path, data=data, headers=headers or {}, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def json(self, path: str, **kwargs) -> tuple[int, dict]:
        status, _headers, body = self.call(path, **kwargs)
        return status, json.loads(body)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(index: Path, cache: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    """`photoseek serve --port 0` on `index`; returns once it prints its address."""
    process = subprocess.Popen(
        [*PHOTOSEEK, "serve", "--index", str(index), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "XDG_CACHE_HOME": str(cache), **(env or {})},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("serving http://127.0.0.1:"):
        process.kill()
        raise AssertionError(f"no address printed: {line!r} {process.communicate()[1]}")
    return Server(process, line.split()[1])
