"""The `photoseek` command as users run it: JSON contracts, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import assert_one_line_error, run


def test_index_status_errors_json(tmp_path, photos, tiny_checkpoint):
    idx = str(tmp_path / "idx")
    first = run("index", str(photos), "--index", idx, "--model", tiny_checkpoint, "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert {k: summary[k] for k in ("added", "updated", "removed", "reused", "errors")} == {
        "added": 9,
        "updated": 0,
        "removed": 0,
        "reused": 1,
        "errors": 1,
    }
    assert summary["seconds"] > 0
    status = json.loads(run("status", "--index", idx, "--json").stdout)
    assert (status["images"], status["errors"], status["vectors"]) == (9, 1, 9)
    assert status["roots"] == [str(photos)]
    assert status["model"]["architecture"] == "photoseek-tiny" and status["model"]["dim"] == 64
    assert status["bytes"] > 0
    errors = json.loads(run("errors", "--index", idx, "--json").stdout)
    assert errors == [
        {
            "path": str(photos / "trip 2024" / "notes.jpg"),
            "reason": "not an image (unrecognised format)",
        }
    ]
    (photos / "img0.jpg").unlink()
    dry = json.loads(run("index", "--index", idx, "--dry-run", "--json").stdout)
    assert dry["to_remove"] == [str(photos / "img0.jpg")] and dry["removed"] == 1
    assert json.loads(run("status", "--index", idx, "--json").stdout)["images"] == 9


def test_index_dir_from_environment(tmp_path, photos, tiny_checkpoint):
    env = {"PHOTOSEEK_INDEX": str(tmp_path / "from-env")}
    assert run("index", str(photos), "--model", tiny_checkpoint, env=env).returncode == 0
    assert json.loads(run("status", "--json", env=env).stdout)["images"] == 9
    xdg = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    assert run("index", str(photos), "--model", tiny_checkpoint, env=xdg).returncode == 0
    assert (tmp_path / "xdg" / "photoseek" / "default" / "catalog.sqlite").exists()


def test_non_utf8_paths_survive_json(tmp_path, tiny_checkpoint):
    from helpers import write_image

    root = tmp_path / "odd"
    root.mkdir()
    odd = os.fsencode(root) + b"/caf\xe9\nline.png"
    write_image(odd, seed=1, format="PNG")
    write_image(root / "plain.png", seed=2, format="PNG")  # the root stays non-empty: listed
    idx = str(tmp_path / "idx")
    result = run("index", str(root), "--index", idx, "--model", tiny_checkpoint, "--json")
    assert json.loads(result.stdout)["added"] == 2
    (tmp_path / "odd" / os.fsdecode(b"caf\xe9\nline.png")).unlink()
    dry = json.loads(run("index", "--index", idx, "--dry-run", "--json").stdout)
    assert [os.fsencode(p) for p in dry["to_remove"]] == [odd]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("status",), "no photoseek index"),
        (("errors",), "no photoseek index"),
        (("index", "/nonexistent/photos"), "no such file or folder"),
        (("index", ".", "--model", "ViT-B-32"), "names no weights"),
        (("index", ".", "--precision", "fp8", "--model", "ViT-B-32:openai"), "precision"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, fragment):
    assert_one_line_error(run(*args, "--index", str(tmp_path / "idx")), fragment)


def test_offline_default_model_is_one_line_with_a_hint(tmp_path, photos):
    result = run("index", str(photos), "--index", str(tmp_path / "idx"))
    assert_one_line_error(result, "ViT-B-32:laion2b_s34b_b79k")
    assert "local checkpoint" in result.stderr


def test_model_mismatch_exit_2(tmp_path, photos, tiny_checkpoint):
    idx = str(tmp_path / "idx")
    assert run("index", str(photos), "--index", idx, "--model", tiny_checkpoint).returncode == 0
    other = tmp_path / "other.pt"
    other.write_bytes(Path(tiny_checkpoint.split(":", 1)[1]).read_bytes() + b"\0")
    result = run("index", str(photos), "--index", idx, "--model", f"photoseek-tiny:{other}")
    assert_one_line_error(result, "built with")
