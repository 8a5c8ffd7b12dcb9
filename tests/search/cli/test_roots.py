"""`photoseek roots`, `forget`, `index --prune` and `search --include-offline` as users run them."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import assert_one_line_error, run, write_image


def _two_roots(tmp_path: Path, checkpoint: str) -> tuple[str, Path, Path]:
    idx = str(tmp_path / "idx")
    home, drive = tmp_path / "home", tmp_path / "drive"
    for n, folder in enumerate((home, drive)):
        folder.mkdir()
        write_image(folder / "a.jpg", seed=n)
        write_image(folder / "b.jpg", seed=n + 10)
    result = run("index", str(home), str(drive), "--index", idx, "--model", checkpoint, "-q")
    assert result.returncode == 0, result.stderr
    return idx, home, drive


def test_roots_prune_include_offline_and_forget(tmp_path, tiny_checkpoint):
    idx, home, drive = _two_roots(tmp_path, tiny_checkpoint)
    drive.rename(tmp_path / "unplugged")
    again = run("index", "--index", idx, "--json", "-q")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["offline"] == 2
    assert "skipping" in again.stderr and str(drive) in again.stderr
    listed = json.loads(run("roots", "--index", idx, "--json").stdout)
    assert [(r["path"], r["state"], r["images"], r["offline"]) for r in listed] == [
        (str(home), "online", 2, 0),
        (str(drive), "missing", 0, 2),
    ]
    query = str(home / "a.jpg")
    default = json.loads(run("search", "--image", query, "--index", idx, "--json").stdout)
    assert {Path(h["path"]).parent for h in default} == {home}
    wide = run("search", "--image", query, "--index", idx, "--json", "--include-offline")
    assert {Path(h["path"]).parent for h in json.loads(wide.stdout)} == {home, drive}
    status = json.loads(run("status", "--index", idx, "--json").stdout)
    assert (status["images"], status["offline"]) == (2, 2)
    pruned = run("index", "--index", idx, "--prune", "--json", "-q")
    assert json.loads(pruned.stdout)["removed"] == 2
    forgot = run("forget", str(drive), "--index", idx)
    assert forgot.returncode == 0, forgot.stderr
    assert [r["path"] for r in json.loads(run("roots", "--index", idx, "--json").stdout)] == [
        str(home)
    ]
    assert_one_line_error(
        run("forget", str(tmp_path / "elsewhere"), "--index", idx), "neither a root"
    )


def test_exclude_is_remembered_by_a_plain_reindex(tmp_path, tiny_checkpoint):
    idx, home, _drive = _two_roots(tmp_path, tiny_checkpoint)
    result = run("index", str(home), "--exclude", "b.jpg", "--index", idx, "--json", "-q")
    assert json.loads(result.stdout)["removed"] == 1
    again = json.loads(run("index", "--index", idx, "--json", "-q").stdout)
    assert (again["added"], again["removed"]) == (0, 0)
    listed = json.loads(run("roots", "--index", idx, "--json").stdout)
    assert listed[0]["exclude"] == ["b.jpg"]
