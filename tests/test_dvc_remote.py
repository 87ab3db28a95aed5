"""Results that travel: checkpoints and figures pushed to a DVC remote (here a local folder) come back in a
fresh clone with `dvc pull`, and `deepfake-detect plots` then has nothing "Not loaded" -- the README's
`dvc remote add -d` / `dvc push` / `dvc pull` recipe, on a tiny repository with the project's two-pipeline
layout (a demo dvc.yaml at the root, real/dvc.yaml beside it)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from deepfake_detect.plots import page

from conftest import write_image

DVC = [sys.executable, "-m", "dvc"]
GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]

MAKE = """\
import sys
from pathlib import Path

import numpy as np
from PIL import Image

out = Path(sys.argv[1])
(out / "models").mkdir(parents=True, exist_ok=True)
(out / "models" / "run.pt").write_bytes(bytes(range(256)) * 64)
(out / "plots" / "figures").mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(len(str(out)))
Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(out / "plots" / "figures" / "roc.png")
(out / "metrics").mkdir(exist_ok=True)
(out / "metrics" / "m.json").write_text('{"auc": 0.9}')
"""


def _stage(where: str) -> dict:
    return {"stages": {"train": {"cmd": f"python {'../' if where != '.' else ''}make.py .", "deps": [
        f"{'../' if where != '.' else ''}make.py"], "outs": ["models/run.pt"],
        "metrics": [{"metrics/m.json": {"cache": False}}], "plots": ["plots/figures"]}}}


def _run(cmd, cwd: Path) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    return res.stdout


def _missing(repo: Path) -> str:
    html = page.write_page(repo / "dvc_plots" / "offline.html", repo=repo).read_text()
    return html[html.index('id="missing"'):] if 'id="missing"' in html else ""


def test_push_to_a_local_remote_and_pull_in_a_fresh_clone(tmp_path):
    repo, remote, clone = tmp_path / "repo", tmp_path / "remote", tmp_path / "clone"
    repo.mkdir()
    _run(["git", "init", "-q"], repo)
    _run(DVC + ["init", "-q"], repo)
    _run(DVC + ["config", "core.analytics", "false"], repo)
    (repo / "make.py").write_text(MAKE)
    (repo / "real").mkdir()
    (repo / "dvc.yaml").write_text(yaml.safe_dump(_stage(".")))
    (repo / "real" / "dvc.yaml").write_text(yaml.safe_dump(_stage("real")))
    write_image(repo / "data" / "x.png", 0)  # a file DVC does not track: stays out of the remote
    _run(DVC + ["repro", "-q"], repo)
    _run(DVC + ["repro", "-q", "real/dvc.yaml"], repo)
    # the recipe: a default remote in .dvc/config (committed), then push
    _run(DVC + ["remote", "add", "-d", "storage", str(remote)], repo)
    _run(["git", "add", "-A"], repo)
    _run(GIT + ["commit", "-qm", "results"], repo)
    _run(DVC + ["push", "-q"], repo)
    assert any(p.is_file() for p in remote.rglob("*"))

    _run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    outs = ["models/run.pt", "real/models/run.pt", "plots/figures/roc.png", "real/plots/figures/roc.png"]
    assert not any((clone / p).exists() for p in outs)  # git holds neither checkpoints nor figures
    remote.rename(tmp_path / "away")  # without the remote the clone's figures are "Not loaded" ...
    assert "real/plots/figures" in _missing(clone) and "plots/figures" in _missing(clone)
    (tmp_path / "away").rename(remote)  # ... with it, even before a pull DVC reads them from the remote
    assert _missing(clone) == ""
    _run(DVC + ["pull", "-q"], clone)
    for p in outs:
        assert (clone / p).read_bytes() == (repo / p).read_bytes(), p
    assert _missing(clone) == ""  # every figure loaded, from the clone's own files now
