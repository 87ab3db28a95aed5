"""A fresh clone of the real pipeline shows its results: every output real/dvc.yaml keeps out of the DVC cache
(``cache: false``: git carries it) is not ignored by git, and every file the top-level plots (and so the plots page,
``deepfake-detect plots``, which draws what ``dvc plots show`` gives) read is such an output."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO

REAL = REPO / "real"


def _entries(items):
    for item in items or []:
        if isinstance(item, str):
            yield item, {}
        else:
            (path, opts), = item.items()
            yield path, opts or {}


def _outputs(stages: dict, runs: list[str]) -> dict[str, bool]:
    """{output path (relative to real/): cache} of every stage, foreach groups expanded over ``runs``."""
    out = {}
    for stage in stages.values():
        body = stage.get("do", stage)
        keys = runs if "foreach" in stage else [None]
        for kind in ("outs", "metrics", "plots"):
            for path, opts in _entries(body.get(kind)):
                for key in keys:
                    out[path.replace("${key}", key) if key else path] = opts.get("cache", True)
    return out


def _real():
    from deepfake_detect.config import RUNS, load_params

    dvc = yaml.safe_load((REAL / "dvc.yaml").read_text())
    return dvc, _outputs(dvc["stages"], list(load_params(REAL / "params.yaml")[RUNS]))


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs a git checkout")
def test_outputs_out_of_the_dvc_cache_are_not_git_ignored():
    _, outputs = _real()
    kept = [str((REAL / p).resolve().relative_to(REPO)) for p, cache in outputs.items() if cache is False]
    res = subprocess.run(["git", "check-ignore", "--no-index", *kept], cwd=REPO, capture_output=True, text=True)
    assert res.stdout.strip() == "", f"cache: false outputs that git ignores (a fresh clone lacks them):\n{res.stdout}"


def test_every_top_level_plot_reads_a_git_tracked_output():
    dvc, outputs = _real()
    kept = [Path(p) for p, cache in outputs.items() if cache is False]
    files = [f for plot in dvc["plots"] for spec in plot.values() for f in (spec.get("y") or {})]
    assert files
    loose = [f for f in files if not any(Path(f) == k or k in Path(f).parents for k in kept)]
    assert not loose, f"top-level plots that read files in the DVC cache or of no stage: {loose}"
