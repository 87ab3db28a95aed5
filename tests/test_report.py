"""The headline metrics rows and the README's generated results tables."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from deepfake_detect.errors import UserError
from deepfake_detect.report import HEADLINE, PIPELINES, headline, render_readme, report, summarize

REPO = Path(__file__).resolve().parents[1]


def test_readme_tables_are_the_report():
    """README.md's results tables are exactly what the committed metrics files and dvc.lock say."""
    text = (REPO / "README.md").read_text()
    for name in PIPELINES:
        assert f"<!-- report:{name} -->" in text, f"README.md has no generated table for the {name} pipeline"
    assert render_readme(text, REPO) == text, "README.md's tables are stale: run `deepfake-detect report --write`"


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
    with pytest.raises(UserError, match="results tables differ from the metrics files"):
        report(tmp_path / "README.md", check=True)
    report(tmp_path / "README.md", write=True)
    assert "| **0.500** [" in (tmp_path / "README.md").read_text()
