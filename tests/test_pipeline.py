"""End to end: `dvc repro` of the whole DAG on tiny demo params in a temporary copy of the repo."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from deepfake_detect.config import RUNS, datasets_of, load_params

from conftest import write_image

REPO = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]
RUN_STAGES = load_params(REPO / "params.yaml")[RUNS]  # run -> its training stage
TRAIN = set(RUN_STAGES.values())
REAL_RUN_STAGES = load_params(REPO / "real" / "params.yaml")[RUNS]  # real/params.yaml's own runs
PER_RUN = {f"{group}@{run}" for group in ("evaluate-roc-det", "explain") for run in RUN_STAGES}
STAGES = {"prepare-splits", *TRAIN, *PER_RUN, "summarize"}

TINY = {  # one epoch of 64 px for every run (train-defaults), two for simplenet-fakes
    "demo": {"image_size": 64, "fakes": {"train": 36, "val": 18, "test": 18},
             "synthetic": {"train": 24, "val": 12, "test": 12}},
    "train-defaults": {"image_size": 64, "epochs": 1, "batch_size": 16},
    "simplenet-fakes": {"epochs": 2},
    "finetune-synth": {"epochs": 1},
    "finetune-fakes": {"epochs": 1},
    "competition-fakes": {"epochs": 1},
    "sbi-fakes": {"epochs": 1},
    "evaluate-roc-det": {"bootstrap": 20},
    "explain": {"n_examples": 2, "n_faithfulness": 4},
}
# real/params.yaml laid over the tiny params.yaml: its own recipe changes made tiny too
TINY_REAL = {"train-defaults": {"image_size": 64},
             "finetune-synth": {"epochs": 1}, "finetune-fakes": {"image_size": 64, "epochs": 1},
             "competition-fakes": {"image_size": 64}, "finetune-generated": {"image_size": 64, "epochs": 1},
             "finetune-generated-gan": {"image_size": 64, "epochs": 1},
             # fp32 on every CPU: the release's test-AUC check compares the float16 export with the evaluate JSON
             # at 0.01, and on 12 test images one pair flipped by bf16 rounding moves AUC by 0.03
             "evaluate-roc-det": {"precision": "fp32"}}


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
    for run in RUN_STAGES:
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


def test_metrics_show_is_one_headline_row_per_run(repro):
    work, _ = repro
    shown = json.loads(_run(DVC + ["metrics", "show", "--json"], work).stdout)
    files = next(iter(shown.values()))["data"]
    demo = {f: v["data"] for f, v in files.items() if f.startswith("metrics/")}
    assert sorted(demo) == sorted(f"metrics/runs/{r}.json" for r in RUN_STAGES)
    columns = {tuple(sorted(row)) for row in demo.values()}
    assert len(columns) == 1 and len(next(iter(columns))) <= 12  # the same headline columns in every row
    ev = json.loads((work / "metrics/evaluate/competition-fakes.json").read_text())
    assert demo["metrics/runs/competition-fakes.json"]["auc"] == round(ev["auc"], 4)


def test_plots_show_has_every_runs_training_curves(repro):
    work, _ = repro
    _run(DVC + ["plots", "show", "-o", "html"], work)
    html = (work / "html" / "index.html").read_text()
    for run in RUN_STAGES:
        assert f"loss-{run}" in html and f"acc-{run}" in html


def test_a_changed_module_marks_the_stages_that_run_it(repro):
    work, _ = repro
    for module, changed, unchanged in (("config.py", STAGES, set()),
                                       ("train.py", TRAIN, {"prepare-splits", *PER_RUN, "summarize"}),
                                       ("summary.py", {"summarize"}, {"prepare-splits", *TRAIN, *PER_RUN})):
        path = work / "src" / "deepfake_detect" / module
        text = path.read_text()
        path.write_text(text + "\n# a change\n")
        try:
            status = set(json.loads(_run(DVC + ["status", "--json"], work).stdout))
        finally:
            path.write_text(text)
        assert changed <= status and not unchanged & status, (module, status)


def _status_after(work: Path, change) -> set[str]:
    """The stages `dvc status` marks changed after ``change(params)`` of params.yaml (restored after)."""
    text = (work / "params.yaml").read_text()
    params = yaml.safe_load(text)
    change(params)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = json.loads(_run(DVC + ["status", "--json"], work).stdout)
    finally:
        (work / "params.yaml").write_text(text)
    return {stage for stage in status if not stage.startswith("real/dvc.yaml:")}  # the demo pipeline's


def test_param_change_reruns_only_dependants(repro):
    """A run's own key marks its training stage only; a train-defaults key every training stage; a per-run
    stage's key every stage of that group."""
    work, _ = repro
    assert _status_after(work, lambda p: p["simplenet-synth"].update(lr=0.0005)) == {"train-simplenet-synth"}
    assert _status_after(work, lambda p: p["train-defaults"].update(label_smoothing=0.05)) == TRAIN
    assert _status_after(work, lambda p: p["explain"].update(n_examples=3)) == {f"explain@{r}" for r in RUN_STAGES}
    assert _status_after(work, lambda p: p["data"].update(on_leak="drop")) == {"prepare-splits"}


def test_one_runs_change_reruns_only_its_stages_and_the_summary(repro):
    """`dvc repro` after one run's param changed: that run's training, evaluation and explanation and the light
    summarize, nothing else; `dvc metrics diff` then shows only that run's row."""
    work, _ = repro
    _run(["git", "add", "-A"], work)
    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "first repro"], work)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["simplenet-synth"]["lr"] = 0.003
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run(DVC + ["repro"], work, timeout=600).stdout
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert ran == {"train-simplenet-synth", "evaluate-roc-det@simplenet-synth", "explain@simplenet-synth",
                   "summarize"}, out
    diff = json.loads(_run(DVC + ["metrics", "diff", "--json"], work).stdout)
    assert set(diff) == {"metrics/runs/simplenet-synth.json"}, diff


def test_exp_run_on_a_fresh_clone_saves_the_experiment(repro, tmp_path):
    """A newcomer's first `dvc exp run` of chosen stages, on a clone whose DVC cache is empty, with a key the
    run's section does not set yet (`++`: add or override) and a list value, ends with a saved experiment that
    `deepfake-detect exps` shows with just that change."""
    work, _ = repro
    _run(["git", "add", "-A"], work)
    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "repro", "--allow-empty"], work)
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(work), str(clone)], tmp_path)
    for key, value in (("user.email", "t@t"), ("user.name", "t")):
        _run(["git", "config", key, value], clone)
    res = _run(DVC + ["exp", "run", "-S", "++competition-fakes.early_stopping_patience=1",
                      "-S", "++competition-fakes.frozen_layers=[features.head_conv]", "train-competition"], clone,
               timeout=600)
    assert "Ran experiment" in res.stdout + res.stderr
    shown = json.loads(_run(DVC + ["exp", "show", "--json"], clone).stdout)
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    assert exps, shown
    params = exps[0]["revs"][0]["data"]["params"]["params.yaml"]["data"]["competition-fakes"]
    assert params["early_stopping_patience"] == 1 and params["frozen_layers"] == ["features.head_conv"]
    table = _run([sys.executable, "-m", "deepfake_detect.cli", "exps"], clone).stdout.splitlines()
    assert table[1].split()[:3] == ["experiment", "changed", "params"] and set(RUN_STAGES) <= set(table[1].split())
    row = next(line for line in table if exps[0]["revs"][0]["name"] in line)
    assert "competition-fakes.early_stopping_patience=1, competition-fakes.frozen_layers=['features.head_conv']" in row
    assert "…" not in "".join(table) and len(re.findall(r"\b[01]\.\d{3}\b|–", row)) == len(RUN_STAGES)


# ----------------------------------------------------------------------------- the real-data pipeline
def _out_paths(stage: dict) -> list[str]:
    """Every path a stage writes, whatever kind of output (out, metric, plot) it is declared as."""
    return sorted(next(iter(o)) if isinstance(o, dict) else o
                  for key in ("outs", "metrics", "plots") for o in stage.get(key, []))


def test_real_pipeline_runs_the_demo_stages():
    """real/dvc.yaml is the demo DAG over the same scripts, with the dataset folders as deps, real/params.yaml's own
    runs (demo-only runs have no stage there) and a last stage, release (tests/test_deps.py checks the params each
    stage lists from real/params.yaml and its base)."""
    demo = yaml.safe_load((REPO / "dvc.yaml").read_text())
    real = yaml.safe_load((REPO / "real" / "dvc.yaml").read_text())
    demo_only = set(TRAIN) - set(REAL_RUN_STAGES.values())
    # real-only: frame-faces (its data has many sources; the demo's has none) and the training stages of the runs on
    # the real-only datasets (the shipped detectors' larger and many-generator sets, real/params.yaml)
    real_only = {"frame-faces"} | (set(REAL_RUN_STAGES.values()) - set(TRAIN))
    assert real_only <= set(real["stages"])
    assert [s for s in real["stages"] if s not in real_only] == [s for s in demo["stages"] if s not in demo_only] + [
        "release"]
    real_data = {f"data/{d}" for d in datasets_of(load_params(REPO / "real" / "params.yaml"))} - {
        f"data/{d}" for d in datasets_of(load_params(REPO / "params.yaml"))}
    assert "vars" not in real  # ${runs} is real/params.yaml's list (DVC reads the params.yaml beside dvc.yaml)
    for name, group in demo["stages"].items():
        if name in demo_only or name in real_only:
            continue
        assert real["stages"][name].get("foreach") == group.get("foreach"), name
        stage, other = group.get("do", group), real["stages"][name].get("do", real["stages"][name])
        assert other["cmd"] == stage["cmd"].replace("python stages/", "python ../stages/")
        # the code alike; the data alike but for the real-only datasets (a run may train on one: tests/test_deps.py
        # checks each training stage's data against its run's dataset)
        real_deps = [d.removeprefix("../") for d in other["deps"] if not d.startswith(("${data.", "../../shared/"))]
        assert [d for d in real_deps if not d.startswith("data/")] == [d for d in stage["deps"]
                                                                      if not d.startswith("data/")]
        if "stages/train.py" not in stage["cmd"]:
            assert [d for d in real_deps if d not in real_data] == stage["deps"], name
        assert [p for p in _out_paths(other) if p not in real_data] == _out_paths(stage), name
    assert real["stages"]["prepare-splits"]["deps"][-2:] == ["${data.fakes.source}", "${data.synthetic.source}"]
    evaluate_deps = real["stages"]["evaluate-roc-det"]["do"]["deps"]  # the evaluation-only sets of other generators
    assert [d for d in evaluate_deps if d.startswith("../../shared/")] == ["../../shared/data/diffusion_faces",
                                                                          "../../shared/data/xgen_faces"]
    demo_plots = {next(iter(p)) for p in demo["plots"]}
    assert {next(iter(p)) for p in real["plots"]} <= demo_plots


def test_real_pipeline_without_its_data_names_the_folder(repro):
    work, _ = repro
    assert not (work.parent / "shared").exists()
    res = subprocess.run(DVC + ["repro", "real/dvc.yaml"], cwd=work, capture_output=True, text=True, timeout=300)
    # the first stage that reads a missing folder names it (frame-faces: generated_faces; prepare-splits: dfdc_faces)
    assert res.returncode != 0 and re.search(r"shared/data/(generated_faces|dfdc_faces)", res.stdout + res.stderr), \
        res.stdout + res.stderr


def _course_folder(root: Path, n_real: int, n_fake: int, size: int, seed: int) -> None:
    for split in ("train", "val", "test"):
        for cls, n in (("real", n_real), ("fake", n_fake)):
            for i in range(n):
                seed += 1
                write_image(root / split / cls / f"{i}.jpg", seed, size=size)


def _sourced_faces(root: Path, work: Path) -> None:
    """A tiny generated_faces: demo pictures with one face each (MTCNN finds them) under the sources the real
    pipeline names (frame-faces leaves the diffusion ones out of its second layout), with sources.csv."""
    from deepfake_detect.demo import generate_dataset

    pool = work.parent / "demo_pool"
    generate_dataset(pool, "fakes", n_train=30, n_val=6, n_test=6, progress=False)
    pictures = iter(sorted(pool.glob("*/*/*.png")))
    lines = ["path,label,source,generator,split"]
    for label, sources in (("real", ("ffhq", "unsplash")), ("fake", ("stylegan", "sdfd", "sdxl", "flux1_schnell"))):
        for source in sources:
            for split, n in (("train", 3), ("val", 2), ("test", 2)):
                for i in range(n):
                    rel = f"{split}/{label}/{source}_{i}.png"
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(next(pictures), root / rel)
                    lines.append(f"{rel},{label},{source},{source},{split}")
    (root / "sources.csv").write_text("\n".join(lines) + "\n")


def test_real_pipeline_end_to_end_on_tiny_folders(repro):
    """`dvc repro real/dvc.yaml` over tiny course-layout folders where ../shared/data would be."""
    work, _ = repro
    shared = work.parent / "shared" / "data"
    _course_folder(shared / "dfdc_faces", 6, 3, 48, 0)
    _course_folder(shared / "stylegan_faces", 4, 4, 56, 1000)
    _course_folder(shared / "dfdc_faces_xl", 8, 4, 48, 500)
    _sourced_faces(shared / "generated_faces", work)
    for name, seed in (("diffusion_faces", 2000), ("xgen_faces", 3000)):  # evaluation-only: flat real/ + fake/
        for i, cls in enumerate(["real"] * 3 + ["fake"] * 3):
            write_image(shared / name / cls / f"{i}.jpg", seed + i, size=56)
    params = yaml.safe_load((work / "real" / "params.yaml").read_text())
    _update(params, TINY_REAL)  # the rest is tiny already: laid over the tiny params.yaml
    (work / "real" / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(DVC + ["repro", "real/dvc.yaml"], work, timeout=900)
    assert "up to date" in _run(DVC + ["status", "real/dvc.yaml"], work).stdout  # both files' keys recorded
    for run in REAL_RUN_STAGES:
        row = json.loads((work / "real" / "metrics" / "runs" / f"{run}.json").read_text())
        assert 0.0 <= row["auc"] <= 1.0 and "saliency_lift" not in row  # no masks in real data
    manifest = (work / "real" / "data" / "fakes" / "manifest.csv").read_text()
    assert "../../shared/data/dfdc_faces/test/fake/0.jpg" in manifest  # referenced by path, never copied
    from deepfake_detect.tables import render_table

    table = render_table("real", work)
    assert "| `competition-fakes` | `competition` | dfdc_faces | 64 |" in table
    assert "`dvc repro real/dvc.yaml:train-competition`" in table
    ev = json.loads((work / "real" / "metrics" / "evaluate" / "finetune-generated-gan.json").read_text())
    per = ev["per_source"]["generated_gan"]  # the left-out generators are in its test split: their AUC is reported
    assert {"sdfd", "sdxl", "flux1_schnell", "stylegan"} <= set(per["fake"])
    assert set(per["real"]) == {"ffhq", "unsplash"}
    card = json.loads((work / "src" / "deepfake_detect" / "detectors" / "generated.json").read_text())
    assert card["run"] == "finetune-generated" and set(card["operating_point"]["val"]) >= {"ffhq", "unsplash"}
    assert card["verdict_false_positive_rate"]["sets"]  # both detectors at once, per kind of real photo
    joint = card["verdict_false_positive_rate"]["joint"]  # their thresholds together: the union bounded on val
    face = json.loads((work / "src" / "deepfake_detect" / "detectors" / "faceswap.json").read_text())
    assert joint == face["verdict_false_positive_rate"]["joint"]
    assert joint["thresholds"] == {"faceswap": face["threshold"], "generated": card["threshold"]}
    assert all(joint["thresholds"][t] >= joint["own_thresholds"][t] for t in joint["thresholds"])
    assert all(v["fpr"] <= joint["max_fpr"] for v in joint["val"].values() if v["n"])
    from deepfake_detect.plots.page import write_page  # both pipelines' charts on the offline page

    html = write_page(work / "offline.html", repo=work).read_text()
    for plot in ("dvc.yaml::det", "real/dvc.yaml::det", "real/dvc.yaml::loss-competition-fakes"):
        assert f"<code>{plot}</code>" in html
    assert "Not loaded" not in html
