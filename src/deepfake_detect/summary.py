"""The summarize stage (``run_stage``): the headline row of every run, every run on every dataset, every run's
robustness panel.

It reads what each run's evaluate-roc-det and explain stages wrote and writes ``metrics/runs/<run>.json``: one row
per run with the same headline columns (at most 12), so ``dvc metrics show`` is one readable table and ``dvc
metrics diff`` after rerunning one run shows only that run's row. It also gathers every run's AUC on every dataset
(``metrics/summary/cross_dataset.json`` and its heatmap), every run's panel (``metrics/summary/robustness.json``
and its figure) and draws every run's ROC and DET in one figure (``plots/summary/``). Everything else stays in
``metrics/evaluate``, ``metrics/explain`` and ``metrics/train`` (outputs, not declared metrics). The README's
tables made from these files are ``tables``.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from .config import RUNS
from .errors import UserError
from .io import write_json
from .metrics_files import read_metrics_json
from .robustness import PANEL_KEY, ROBUSTNESS_JSON

# acc: at p(fake) > 0.5; acc_at_threshold: at the threshold training chose on validation (in the checkpoint);
# val_auc: the validation AUC of the kept epoch (training's), so the val-test gap reads off the row
HEADLINE = ("auc", "auc_ci_low", "auc_ci_high", "val_auc", "eer", "acc", "acc_at_threshold", "tpr_at_fpr_1pct",
            "num_params", "train_time_s", "saliency_lift", "gradcam_lift")

CROSS_DATASET_JSON = "cross_dataset.json"  # in metrics/summary: every run's test AUC on every dataset


def _round(value):
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 4)
    return value


def headline(evaluated: dict, explained: dict | None = None) -> dict:
    """The headline row of one run: evaluation, size and training time, faithfulness lifts (demo data)."""
    row = {**evaluated, **(explained or {})}
    if row.get("train_time_s") is not None:
        row["train_time_s"] = round(row["train_time_s"])
    return {k: _round(row[k]) for k in HEADLINE if row.get(k) is not None}


def _read_scores(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels, p(fake)) from a scores CSV of the evaluate-roc-det stage."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return np.array([int(r["label"]) for r in rows]), np.array([float(r["p_fake"]) for r in rows])
    except FileNotFoundError:
        raise UserError(f"{path}: not found; it is written by the run's evaluate-roc-det stage (dvc repro)") from None
    except (KeyError, ValueError) as e:
        raise UserError(f"{path}: not a scores CSV with columns label,p_fake ({e})") from e


def run_stage(params: dict, metrics_dir: str | Path = "metrics", plots_dir: str | Path = "plots/summary") -> dict:
    """The summarize stage, for every run of ``runs``: metrics/runs/<run>.json (its headline row),
    metrics/summary/cross_dataset.json with its heatmap, and the all-runs ROC/DET figure."""
    from .plots.curves import save_cross_dataset_figure, save_runs_figure
    from .plots.robustness import save_panel_figure

    metrics_dir, plots_dir = Path(metrics_dir), Path(plots_dir)
    rows, cross, names, scores, panels = {}, {}, {}, {}, {}
    for run in params[RUNS]:
        evaluated = read_metrics_json(metrics_dir / "evaluate" / f"{run}.json")
        if "cross_dataset" not in evaluated:
            raise UserError(f"{metrics_dir / 'evaluate' / f'{run}.json'}: no 'cross_dataset'; rerun its "
                            f"evaluate-roc-det stage (dvc repro evaluate-roc-det@{run})")
        explained = metrics_dir / "explain" / f"{run}.json"
        rows[run] = headline(evaluated, read_metrics_json(explained) if explained.exists() else None)
        write_json(metrics_dir / "runs" / f"{run}.json", rows[run])
        names.update(evaluated["cross_dataset"]["datasets"])
        cross[run] = {"trained_on": evaluated["cross_dataset"]["trained_on"],
                      "auc": {**evaluated["cross_dataset"]["auc"],  # + the evaluation-only sets, as columns
                              **{g: m["auc"] for g, m in evaluated.get("cross_generator", {}).items()}}}
        names.update({g: f"{g} (eval only)" for g in evaluated.get("cross_generator", {})})
        scores[run] = _read_scores(metrics_dir / "evaluate" / "scores" / f"{run}.csv")
        if PANEL_KEY in evaluated:
            panels[run] = evaluated[PANEL_KEY]
    write_json(metrics_dir / "summary" / CROSS_DATASET_JSON, {"datasets": names, "runs": cross})
    save_cross_dataset_figure(plots_dir / "cross_dataset_auc.png", cross, names)
    save_runs_figure(plots_dir / "all_runs_roc_det.png", scores)
    if panels:
        write_json(metrics_dir / "summary" / ROBUSTNESS_JSON, panels)
        save_panel_figure(plots_dir / "robustness_auc.png", panels)
    return rows
