"""Teacher scoring killed by SIGKILL mid-run resumes where it stopped: every batch on disk is
whole, nothing is lost that was reported done, and the resumed run scores only what is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import REPO
from search.distil.run import SCORES_DIR, DistilSettings, teacher_scores
from search.distil.teacher_cache import TeacherCache

K = 16
BATCH = 8
SCRIPT = f"""
import sys
from pathlib import Path
from search.distil.run import DistilSettings, teacher_scores
index, teacher, out, texts = sys.argv[1:5]
settings = DistilSettings(texts_file=Path(texts), rerank_k={K}, batch_pairs={BATCH})
def progress(p):
    print(p.done, flush=True)
teacher_scores(Path(index), teacher, Path(out), settings, progress)
print("finished", flush=True)
"""


def _keys(paths: list[Path]) -> list[tuple[str, str]]:
    return [(t, d) for p in paths for t, d, _ in json.loads(p.read_text())["pairs"]]


def test_killed_scoring_resumes_without_rescoring(distil_gallery, blip_teacher, tmp_path):
    index, _, texts = distil_gallery
    out = tmp_path / "out"
    args = [str(index), str(blip_teacher), str(out), str(texts)]
    child = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        folders = list((out / SCORES_DIR).glob("*"))
        if folders and len(list(folders[0].glob("batch-*.json"))) >= 2:
            break
        assert child.poll() is None, "scoring finished before it could be killed"
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    printed = child.stdout.read().split()
    assert "finished" not in printed
    reported = [int(word) for word in printed if word.isdigit()]
    folder = next((out / SCORES_DIR).glob("*"))
    before = sorted(folder.glob("batch-*.json"))
    saved = _keys(before)  # every file parses: none was left half-written
    assert len(saved) == len(set(saved)) == BATCH * len(before)
    assert not reported or len(saved) >= max(reported)  # nothing reported done was lost

    settings = DistilSettings(texts_file=texts, rerank_k=K, batch_pairs=BATCH)
    scored, _ = teacher_scores(index, str(blip_teacher), out, settings)
    after = sorted(folder.glob("batch-*.json"))
    fresh = _keys([p for p in after if p not in before])
    assert not set(fresh) & set(saved)  # nothing scored twice
    total = sum(len(p.hits) for p in scored.pools)
    assert total == 15 * K and len(saved) < total
    assert len(saved) + len(fresh) == total == len(TeacherCache(folder).scores)
