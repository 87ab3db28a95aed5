"""The headline metrics rows and the README's generated results tables."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from deepfake_detect.errors import UserError
from deepfake_detect.report import (
    HEADLINE,
    PIPELINES,
    documents,
    headline,
    render_bench,
    render_readme,
    report,
    summarize,
)

REPO = Path(__file__).resolve().parents[1]


def test_readme_tables_are_the_report():
    """README.md's and docs/*.md's generated tables are exactly what the committed metrics files, dvc.lock and
    benchmark JSON say."""
    text = (REPO / "README.md").read_text()
    for name in PIPELINES:
        assert f"<!-- report:{name} -->" in text, f"README.md has no generated table for the {name} pipeline"
    paths = documents(REPO / "README.md")
    assert REPO / "docs" / "speed.md" in paths
    for path in paths:
        text = path.read_text()
        assert render_readme(text, REPO) == text, f"{path}: stale tables, run `deepfake-detect report --write`"


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
    for run, auc in (("a", 0.7), ("b", 0.9)):
        (tmp_path / "evaluate").mkdir(exist_ok=True)
        (tmp_path / "evaluate" / f"{run}.json").write_text(json.dumps({"auc": auc, "num_params": 7}))
    (tmp_path / "explain").mkdir()
    (tmp_path / "explain" / "a.json").write_text(json.dumps({"gradcam_lift": 2.0}))
    rows = summarize({"evaluate-roc-det": {"runs": ["a", "b"]}}, tmp_path)
    assert json.loads((tmp_path / "runs" / "a.json").read_text()) == {"auc": 0.7, "num_params": 7, "gradcam_lift": 2.0}
    assert rows["b"] == {"auc": 0.9, "num_params": 7}
    with pytest.raises(UserError, match=r"evaluate/c.json: not found"):
        summarize({"evaluate-roc-det": {"runs": ["c"]}}, tmp_path)


def test_check_fails_when_a_figure_is_edited_by_hand(tmp_path):
    for rel in ("README.md", "dvc.lock", "metrics/runs", "metrics/evaluate/cross_dataset.json", "real/dvc.lock",
                "real/metrics/runs", "real/metrics/evaluate/cross_dataset.json"):
        src, dst = REPO / rel, tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
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
