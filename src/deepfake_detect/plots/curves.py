"""ROC and DET curves: matplotlib figures in the course's style and datapoint files for ``dvc plots``.

Figures: ROC (left) and DET on normal-deviate axes (right) side by side, drawn by sklearn's
``RocCurveDisplay`` / ``DetCurveDisplay`` (DET ticks 0.1 %, 1 %, 5 %, 20 %, 50 % ...). Datapoints: CSV files
with finite values only (sklearn's leading ``inf`` ROC threshold is clipped to 1.0; DET rates are probit
transformed after clipping to [1e-4, 1 - 1e-4]), so DVC's linear renderer draws a DET from
``fpr_probit`` / ``fnr_probit``.
"""
from __future__ import annotations

import io as _io
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from sklearn.metrics import DetCurveDisplay, RocCurveDisplay

from .. import metrics
from ..io import save_figure, write_text

FPR_LABEL = "false positive rate (real called fake)"
FNR_LABEL = "false negative rate (fake missed)"
TPR_LABEL = "true positive rate (fake caught)"


def _csv(columns: dict[str, np.ndarray]) -> str:
    names = list(columns)
    data = np.column_stack([np.asarray(columns[k], dtype=np.float64) for k in names])
    if not np.isfinite(data).all():  # never hand DVC's renderer an inf / NaN
        raise ValueError("curve points are not finite")
    buf = _io.StringIO()
    np.savetxt(buf, data, delimiter=",", fmt="%.6g", header=",".join(names), comments="")
    return buf.getvalue()


def write_curve_points(y, p_fake, roc_path: str | Path, det_path: str | Path) -> None:
    """ROC (fpr,tpr,threshold) and DET (fpr_probit,fnr_probit,fpr,fnr,threshold) CSVs of the p(fake) score."""
    roc = metrics.roc_points(y, p_fake)
    det = metrics.det_points(y, p_fake)
    write_text(roc_path, _csv({k: roc[k] for k in ("fpr", "tpr", "threshold")}))
    write_text(det_path, _csv({k: det[k] for k in ("fpr_probit", "fnr_probit", "fpr", "fnr", "threshold")}))


def roc_det_figure(curves: Iterable[tuple[str, Sequence[int], Sequence[float]]], title: str = "") -> Figure:
    """ROC and DET side by side, one line per ``(name, labels, score)``; fake (1) is the positive class."""
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    ax_roc, ax_det = fig.subplots(1, 2)
    curves = list(curves)
    for i, (name, y, score) in enumerate(curves):
        y, score = np.asarray(y), np.asarray(score, dtype=np.float64)
        RocCurveDisplay.from_predictions(y, score, pos_label=1, name=name, ax=ax_roc,
                                         plot_chance_level=i == len(curves) - 1)
        DetCurveDisplay.from_predictions(y, score, pos_label=1, ax=ax_det,
                                         name=f"{name} (EER = {metrics.eer(y, score):.1%})")
    ax_roc.set(title="ROC", xlabel=FPR_LABEL, ylabel=TPR_LABEL, xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    lim = tuple(metrics.probit([0.0005, 0.9995]))  # room for the 0.1 % and 99.9 % ticks
    ax_det.set(title="DET (normal-deviate axes)", xlabel=FPR_LABEL, ylabel=FNR_LABEL, xlim=lim, ylim=lim)
    for ax in (ax_roc, ax_det):
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right" if ax is ax_roc else "upper right", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def save_run_figure(path: str | Path, run: str, y, p_fake, subtitle: str = "") -> Path:
    """The course figure for one model: score 1 = p(real) and score 2 = p(fake)."""
    p_fake = np.asarray(p_fake, dtype=np.float64)
    fig = roc_det_figure([("score 1 = p(real)", y, 1 - p_fake), ("score 2 = p(fake)", y, p_fake)],
                         title=f"{run}{': ' + subtitle if subtitle else ''}")
    return save_figure(path, fig, dpi=110)


def save_runs_figure(path: str | Path, runs: dict[str, tuple[Sequence[int], Sequence[float]]],
                     title: str = "every run, score = p(fake), each on its own test split") -> Path:
    """One figure with every run's p(fake) ROC and DET."""
    fig = roc_det_figure([(run, y, p) for run, (y, p) in runs.items()], title=title)
    return save_figure(path, fig, dpi=110)


def save_cross_dataset_figure(path: str | Path, cross: dict[str, dict], names: dict[str, str]) -> Path:
    """Heatmap of test AUC, one row per run, one column per dataset's test split; the in-domain cell
    (the dataset the run was trained on) is outlined."""
    runs, datasets = list(cross), list(names)
    auc = np.array([[cross[r]["auc"][d] for d in datasets] for r in runs], dtype=np.float64)
    fig = Figure(figsize=(2.2 + 1.9 * len(datasets), 1.2 + 0.55 * len(runs)), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(auc, cmap="RdYlGn", vmin=0.3, vmax=1.0, aspect="auto")
    for i, run in enumerate(runs):
        for j, d in enumerate(datasets):
            ax.text(j, i, f"{auc[i, j]:.3f}", ha="center", va="center", fontsize=10,
                    fontweight="bold" if cross[run]["trained_on"] == d else "normal")
            if cross[run]["trained_on"] == d:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.5))
    ax.set_xticks(range(len(datasets)), [f"{names[d]}\ntest" for d in datasets])
    ax.set_yticks(range(len(runs)), [f"{r}\n(trained on {names.get(cross[r]['trained_on'], '?')})" for r in runs],
                  fontsize=8)
    fig.colorbar(im, ax=ax, label="test AUC, p(fake)")
    ax.set_title("Cross-dataset AUC (outlined: in-domain; 0.5 = chance)", fontsize=10)
    return save_figure(path, fig, dpi=110)
