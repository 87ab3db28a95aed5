"""End to end: `dvc repro` of the whole DAG on tiny demo params in a temporary copy of the repo."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]

TINY = {
    "demo": {"image_size": 64, "fakes": {"train": 36, "val": 18, "test": 18},
             "synthetic": {"train": 24, "val": 12, "test": 12}},
    "train-simplenet-fakes": {"image_size": 64, "epochs": 2, "batch_size": 16},
    "train-simplenet-synth": {"image_size": 64, "epochs": 1, "batch_size": 16},
    "finetune-xception": {"image_size": 64, "epochs": 1, "batch_size": 16},
    "train-competition": {"image_size": 64, "epochs": 1, "batch_size": 16},
    "evaluate-roc-det": {"bootstrap": 20},
    "explain": {"n_examples": 2, "n_faithfulness": 4},
}


def _run(cmd, cwd, **kw):
    # the stages run `python`: make it this interpreter even when the venv is not activated
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, **kw)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def _copy_repo(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        src = REPO / rel
        # outputs of a local `dvc repro` are not part of a fresh clone
        if not src.is_file() or rel.split("/")[0] in ("data", "models", "metrics", "plots") or rel == "dvc.lock":
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / rel)


def _update(params: dict, tiny: dict) -> None:
    for key, value in tiny.items():
        if isinstance(value, dict) and isinstance(params.get(key), dict):
            _update(params[key], value)
        else:
            params[key] = value


@pytest.fixture(scope="module")
def repro(tmp_path_factory):
    work = tmp_path_factory.mktemp("repo")
    _copy_repo(work)
    params = yaml.safe_load((work / "params.yaml").read_text())
    _update(params, TINY)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], work)
    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "x", "--allow-empty"], work)
    _run(["git", "add", "-A"], work)
    first = _run(DVC + ["repro"], work, timeout=900)
    return work, first


def test_repro_writes_models_metrics_and_plots(repro):
    work, first = repro
    for run in ("simplenet-fakes", "simplenet-synth", "finetune-synth", "competition-fakes"):
        assert (work / "models" / f"{run}.pt").is_file()
        m = json.loads((work / "metrics" / "train" / run / "metrics.json").read_text())
        assert 0.0 <= m["test_acc_at_best_val"] <= 1.0 and m["best_epoch"] >= 1 and m["num_params"] > 0
    fakes = json.loads((work / "metrics" / "data" / "fakes.json").read_text())
    assert (fakes["test_real"], fakes["test_fake"]) == (12, 6)
    assert (work / "dvc.lock").is_file()


def test_second_repro_is_a_fast_noop(repro):
    work, _ = repro
    t0 = time.perf_counter()
    res = _run(DVC + ["repro"], work)
    assert "up to date" in res.stdout.lower() or "didn't change" in res.stdout.lower(), res.stdout
    assert "Running stage" not in res.stdout
    assert time.perf_counter() - t0 < 30


def test_metrics_show_and_plots_show(repro):
    work, _ = repro
    res = _run(DVC + ["metrics", "show", "--json"], work)
    text = res.stdout
    for run in ("simplenet-fakes", "simplenet-synth"):
        assert f"metrics/train/{run}/metrics.json" in text
    _run(DVC + ["plots", "show", "-o", "html"], work)
    html = (work / "html" / "index.html").read_text()
    assert "simplenet-fakes" in html


def test_param_change_reruns_only_dependants(repro):
    work, _ = repro
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["train-simplenet-synth"]["lr"] = 0.0005
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    res = _run(DVC + ["status", "--json"], work)
    changed = set(json.loads(res.stdout))
    assert "train-simplenet-synth" in changed
    assert not changed & {"prepare-splits", "train-simplenet-fakes", "finetune-xception", "train-competition"}
