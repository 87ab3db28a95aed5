"""The headline metrics rows and the README's generated results tables."""
from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from deepfake_detect.errors import UserError
from deepfake_detect.exps import experiments_table
from deepfake_detect.summary import HEADLINE, headline, run_stage
from deepfake_detect.tables import (
    PIPELINES,
    documents,
    render_bench,
    render_generalization_table,
    render_readme,
    render_table,
    report,
)

REPO = Path(__file__).resolve().parents[1]


# what the generated tables are made from, and the documents that hold them
REPORT_INPUTS = ("README.md", "docs", *(f"bench/results-{m}.json" for m in ("cpu-quiet", "cpu", "h100")),
                 *(f"{p}/{f}" for p in (".", "real") for f in ("dvc.lock", "metrics/runs", "metrics/summary",
                                                              "metrics/evaluate", "metrics/train")),
                 "src/deepfake_detect/detectors")


def committed(dst: Path) -> Path:
    """The report's inputs as committed (HEAD) under ``dst``: a `dvc repro` on another CPU rewrites the demo
    metrics in their last digits (docs/reproducibility.md), so the workspace need not match the README after the
    quick start; what the repository holds must. Outside a git checkout: the workspace."""
    listed = subprocess.run(["git", "ls-tree", "-r", "--name-only", "HEAD", "--", *REPORT_INPUTS], cwd=REPO,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        for rel in REPORT_INPUTS:
            src, out = REPO / rel, dst / rel
            if src.exists():
                out.parent.mkdir(parents=True, exist_ok=True)
                (shutil.copytree if src.is_dir() else shutil.copy)(src, out)
        return dst
    archive = subprocess.run(["git", "archive", "--format=tar", "HEAD", "--", *listed.stdout.split()], cwd=REPO,
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dst, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return dst


def test_readme_tables_are_the_report(tmp_path):
    """README.md's and docs/*.md's generated tables, as committed, are exactly what the committed metrics files,
    dvc.lock and benchmark JSON say."""
    root = committed(tmp_path)
    text = (root / "README.md").read_text()
    for name in PIPELINES:
        assert f"<!-- report:{name} -->" in text, f"README.md has no generated table for the {name} pipeline"
    paths = documents(root / "README.md")
    assert root / "docs" / "speed.md" in paths
    for path in paths:
        text = path.read_text()
        assert render_readme(text, root) == text, f"{path.relative_to(root)}: stale tables, run `deepfake-detect " \
                                                  "report --write` and commit"


def test_bench_block_is_the_json(tmp_path):
    """A benchmark block renders the numbers of its JSON, and names the command that wrote it."""
    bench = {"command": "python bench/bench_train.py --out x.json", "device": "cpu", "cpu_cores": 2, "torch": "2.x",
             "data": "demo-fakes", "image_size": 64, "batch_size": 8, "load_avg_start": [0.5, 0, 0],
             "split_sizes": {"train": 30, "val": 10, "test": 10}, "repeats": [{}, {}],
             "loops": {"a_compute": {"train_img_s": 100.0, "eval_img_s": 400.0},
                       "b_ours": {"train_img_s": 90.0, "eval_img_s": 380.0},
                       "c_course": {"train_img_s": 45.0, "eval_img_s": 150.0},
                       "new_lever": {"train_img_s": 1234.56, "eval_img_s": 1.0}},
             "epoch_s": {"a_compute_train_val": 0.325, "b_ours_train_val_test_once": 0.36,
                         "b_ours_train_val_test_every_epoch": 0.36, "c_course_train_val_test": 0.8},
             "ratios": {"b_over_a_train_median_of_pairs": 0.904, "b_over_a_eval_median_of_pairs": 0.95},
             "profile_b": {"data_ms_per_batch": 2.0, "step_ms": 200.0, "data_share_of_step": 0.01}}
    (tmp_path / "b.json").write_text(json.dumps(bench))
    table = render_bench("b.json", tmp_path)
    assert "| (a) pure compute: decoded, normalised tensors in memory | 100.0 | 400.0 |" in table
    assert "| new_lever | 1,234.6 | 1.0 |" in table  # a loop without a description keeps its JSON name
    assert "median of the 2 paired rounds: train 0.90, eval 0.95" in table and "(1.0%)" in table
    assert "`python bench/bench_train.py --out x.json`" in table
    start, end = "<!-- report:bench:b.json -->", "<!-- /report:bench:b.json -->"
    assert render_readme(f"x\n{start}\nold\n{end}\ny\n", tmp_path) == f"x\n{start}\n{table}\n{end}\ny\n"
    with pytest.raises(UserError, match="unknown report block 'nope'"):
        render_readme("<!-- report:nope -->\n<!-- /report:nope -->", tmp_path)


def test_headline_is_twelve_columns_at_most_and_rounded():
    evaluated = {"auc": 0.912345678, "auc_ci_low": 0.8, "auc_ci_high": 0.95, "eer": 0.1, "ap": 0.9, "acc": 0.8,
                 "balanced_acc": 0.79, "tpr_at_fpr_1pct": 0.3, "tpr_at_fpr_10pct": 0.6, "tn": 3, "log_loss": 0.4,
                 "num_params": 1234, "train_time_s": 12.6, "n_real": 5, "val_auc": 0.93, "acc_at_threshold": 0.81}
    row = headline(evaluated, {"saliency_lift": 1.23456, "gradcam_lift": 0.9, "saliency_pointing": 0.5})
    assert list(row) == list(HEADLINE) and len(HEADLINE) <= 12
    assert row["auc"] == 0.9123 and row["train_time_s"] == 13 and row["num_params"] == 1234
    assert "saliency_lift" not in headline(evaluated)  # no masks, no lift: the column is absent, not null


def test_summarize_writes_one_row_per_run(tmp_path):
    runs = {"a": "train-a", "b": "train-b"}
    (tmp_path / "evaluate" / "scores").mkdir(parents=True)
    for run, auc, trained_on in (("a", 0.7, "fakes"), ("b", 0.9, "synthetic")):
        cross = {"trained_on": trained_on, "auc": {"fakes": auc, "synthetic": 0.5}, "datasets": NAMES}
        (tmp_path / "evaluate" / f"{run}.json").write_text(json.dumps({"auc": auc, "num_params": 7,
                                                                         "cross_dataset": cross}))
        (tmp_path / "evaluate" / "scores" / f"{run}.csv").write_text("label,p_fake\n0,0.2\n1,0.9\n0,0.6\n")
    (tmp_path / "explain").mkdir()
    (tmp_path / "explain" / "a.json").write_text(json.dumps({"gradcam_lift": 2.0}))
    rows = run_stage({"runs": runs}, tmp_path, tmp_path / "plots")
    assert json.loads((tmp_path / "runs" / "a.json").read_text()) == {"auc": 0.7, "num_params": 7, "gradcam_lift": 2.0}
    assert rows["b"] == {"auc": 0.9, "num_params": 7}
    assert json.loads((tmp_path / "summary" / "cross_dataset.json").read_text()) == {"datasets": NAMES, "runs": {
        "a": {"trained_on": "fakes", "auc": {"fakes": 0.7, "synthetic": 0.5}},
        "b": {"trained_on": "synthetic", "auc": {"fakes": 0.9, "synthetic": 0.5}}}}
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"all_runs_roc_det.png", "cross_dataset_auc.png"}
    with pytest.raises(UserError, match=r"evaluate/c.json: not found"):
        run_stage({"runs": {"c": "train-c"}}, tmp_path, tmp_path / "plots")
    (tmp_path / "evaluate" / "scores" / "b.csv").unlink()
    with pytest.raises(UserError, match=r"scores/b.csv: not found; it is written by the run's evaluate-roc-det"):
        run_stage({"runs": runs}, tmp_path, tmp_path / "plots")


NAMES = {"fakes": "demo fakes", "synthetic": "stylegan_faces"}


@pytest.mark.parametrize("section", ["run-a", "train-a"], ids=["run-named", "stage-named-older-lock"])
def test_table_reads_layered_params_from_the_lock(tmp_path, section):
    """A row's recipe is what dvc.lock recorded: the base file's train-defaults and the run's section with the
    pipeline's own params.yaml laid over them, the run's stage from `runs`. A lock written before a run's section
    took the run's name (it named the section after the stage) reads the same."""
    lock = {"stages": {
        "prepare-splits": {"params": {"../params.yaml": {"data": {"fakes": {"source": "demo"}}},
                                      "params.yaml": {"data": {"fakes": {"source": "../x/dfdc_faces"}}}}},
        "train-a": {"params": {"../params.yaml": {"runs.run-a": "train-a", "train-defaults": {"image_size": 128,
                                                                                              "epochs": 5},
                                                  section: {"dataset": "fakes", "model": "simplenet"}},
                               "params.yaml": {"train-defaults": {"image_size": 256}, section: {"epochs": 9}}}},
        "summarize": {"params": {"../params.yaml": {"runs": {"run-a": "train-a"}}}}}}
    (tmp_path / "real" / "metrics" / "runs").mkdir(parents=True)
    (tmp_path / "real" / "dvc.lock").write_text(yaml.safe_dump(lock))
    (tmp_path / "real" / "metrics" / "runs" / "run-a.json").write_text(json.dumps({"auc": 0.8, "num_params": 5}))
    table = render_table("real", tmp_path)
    assert "| `run-a` | `simplenet` | dfdc_faces | 256 | 9 | 5 | **0.800** |" in table
    assert table.endswith("`dvc repro real/dvc.yaml:train-a` |")


def test_generalization_table_names_each_recipe_and_reads_the_panel_and_the_evaluation_only_sets(tmp_path):
    """One row per run of the lock's `runs`: the levers its merged config turns on, its own test AUC with the
    interval, the other dataset, each evaluation-only set with its interval, and the AUC change under JPEG q70
    and the 0.5x resize, as metrics/evaluate/<run>.json says."""
    defaults = {"image_size": 128, "epochs": 5, "degrade_p_blur": 0.0, "degrade_p_jpeg": 0.0, "pseudo_fakes": "none",
                "pseudo_fakes_val": False}
    lock = {"stages": {
        "train-a": {"params": {"params.yaml": {"runs.a": "train-a", "train-defaults": defaults,
                                               "a": {"dataset": "fakes", "model": "efficientnet_lite0",
                                                           "pseudo_fakes": "sbi", "pseudo_fakes_val": True}}}},
        "train-b": {"params": {"params.yaml": {"runs.b": "train-b", "train-defaults": defaults,
                                               "b": {"dataset": "synthetic", "model": "npr",
                                                           "degrade_p_blur": 0.5, "degrade_p_jpeg": 0.1}}}},
        "summarize": {"params": {"params.yaml": {"runs": {"a": "train-a", "b": "train-b"}}}}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    names = {"fakes": "dfdc_faces", "synthetic": "stylegan_faces"}
    for run, own, other, gen in (("a", "fakes", "synthetic", None), ("b", "synthetic", "fakes", 0.612)):
        m = {"auc": 0.9, "auc_ci_low": 0.85, "auc_ci_high": 0.95,
             "cross_dataset": {"trained_on": own, "auc": {own: 0.9, other: 0.51}, "datasets": names},
             "robustness": {"degradations": {"clean": {"auc": 0.9, "auc_drop": 0.0},
                                             "jpeg_q70": {"auc": 0.88, "auc_drop": 0.02},
                                             "resize_half": {"auc": 0.95, "auc_drop": -0.05}}}}
        if gen is not None:
            m["cross_generator"] = {"diffusion_faces": {"auc": gen, "auc_ci_low": 0.55, "auc_ci_high": 0.66}}
        for folder, data in (("evaluate", m), ("runs", {"val_auc": 0.91, "num_params": 1234, "train_time_s": 7})):
            (tmp_path / "metrics" / folder).mkdir(parents=True, exist_ok=True)
            (tmp_path / "metrics" / folder / f"{run}.json").write_text(json.dumps(data))
    lines = render_generalization_table("demo", tmp_path).splitlines()
    assert lines[0].startswith("| run | recipe | val AUC | test AUC [95 % CI] | other dataset test AUC | "
                               "diffusion_faces AUC [95 % CI] | Δ JPEG q70 |")
    assert lines[2] == ("| `a` | `efficientnet_lite0`, SBI pseudo-fakes, reals only (val too) | 0.910 | "
                        "**0.900 [0.850, 0.950]** (dfdc_faces) | stylegan_faces 0.510 | – | -0.020 | +0.050 | "
                        "1,234 | 7 s |")
    assert "| `b` | `npr`, blur p=0.5 + JPEG p=0.1 | " in lines[3] and "| 0.612 [0.550, 0.660] |" in lines[3]
    assert render_readme("<!-- report:demo-generalization -->\n<!-- /report:demo-generalization -->",
                         tmp_path).count("\n| `") == 2  # one row per run


def test_check_fails_when_a_figure_is_edited_by_hand(tmp_path):
    committed(tmp_path)
    report(tmp_path / "README.md", check=True)  # as committed: passes
    row = tmp_path / "metrics" / "runs" / "simplenet-fakes.json"
    m = json.loads(row.read_text())
    row.write_text(json.dumps({**m, "auc": 0.5}))
    with pytest.raises(UserError, match=r"README.md: the generated tables differ from the metrics files"):
        report(tmp_path / "README.md", check=True)
    report(tmp_path / "README.md", write=True)
    assert "| **0.500** [" in (tmp_path / "README.md").read_text()


def test_links_of_readme_and_docs_resolve():
    """Every relative link and image of README.md and docs/*.md names a file of the repository (and a heading of
    it, where it names one)."""
    for path in documents(REPO / "README.md"):
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            assert dest.exists(), f"{path.name}: link to {target}: no such file"
            if anchor:
                headings = re.findall(r"^#+ (.+)$", dest.read_text(), re.M)
                slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
                assert anchor in slugs, f"{path.name}: link to {target}: no such heading"


def _exp(rev: str, name, params: dict, aucs: dict, experiments=None) -> dict:
    metrics = {f"metrics/runs/{run}.json": {"data": {"auc": auc, "eer": 0.1}} for run, auc in aucs.items()}
    metrics["metrics/data/fakes.json"] = {"data": {"auc": 0.0}}  # not a headline row: no column
    data = {"params": {"params.yaml": {"data": params}, "real/params.yaml": {"data": {"seed": 0}}},
            "metrics": metrics}
    return {"rev": rev, "name": name, "data": data, "experiments": experiments}


def test_experiments_table_shows_changed_params_and_a_metric_per_run():
    """`dvc exp show --json` (its shape, by hand): the experiment's row names only the key it changed, the
    workspace what it changed from the commit; a column per run, in the order of `runs`."""
    base = {"runs": {"simplenet-fakes": "a", "competition-fakes": "b"}, "train-defaults": {"lr": 0.001},
            "competition-fakes": {"epochs": 6}}
    changed = {**base, "competition-fakes": {"epochs": 6, "lr": 0.0005}}
    exp = {"revs": [_exp("f" * 40, "tidy-oak", changed, {"competition-fakes": 0.9, "simplenet-fakes": 0.8})]}
    shown = [_exp("workspace", None, changed, {"competition-fakes": 0.9, "simplenet-fakes": 0.8}),
             _exp("a" * 40, "main", base, {"competition-fakes": 0.81, "simplenet-fakes": 0.8}, [exp])]
    lines = experiments_table(shown).splitlines()
    assert lines[0] == "demo pipeline, test auc per run:"
    assert lines[1].split() == ["experiment", "changed", "params", "simplenet-fakes", "competition-fakes"]
    assert lines[2].split() == ["workspace", "competition-fakes.lr=0.0005", "0.800", "0.900"]
    assert lines[3].split() == ["main", "aaaaaaa", "0.800", "0.810"]
    assert lines[4].split() == ["tidy-oak", "competition-fakes.lr=0.0005", "0.800", "0.900"]
    assert len({line.rindex(" 0.") for line in lines[2:]}) == 1  # the last column starts at one place
    real = experiments_table(shown, "real").splitlines()
    assert real[0] == "real pipeline, test auc per run:" and real[1].split() == ["experiment", "changed", "params"]
