"""The robustness panel's figure: AUC (left) and TPR / FPR at each checkpoint's own threshold (right) against the
degradation, one colour per run, the AUC's bootstrap interval as error bars (``robustness.panel`` results). The
FPR is drawn beside the TPR because a degradation that pushes every score up catches every fake and every real."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..io import save_figure
from ..robustness import LABELS, PANEL


def panel_figure(panels: dict[str, dict], title: str = "") -> Figure:
    """``panels``: {run: ``robustness.panel`` result}; the x axis holds every degradation any run has, in
    ``PANEL`` order (a run without one has a gap there)."""
    names = [d for d in PANEL if any(d in p["degradations"] for p in panels.values())]
    x = np.arange(len(names))
    fig = Figure(figsize=(max(8.0, 1.6 * len(names) + 2.5), 4.6), layout="constrained")
    ax_auc, ax_tpr = fig.subplots(1, 2, sharex=True)
    for run, p in panels.items():
        def get(key: str, d: dict = p["degradations"]) -> np.ndarray:
            return np.array([d[n][key] if n in d else np.nan for n in names], dtype=np.float64)

        auc, lo, hi = get("auc"), get("auc_ci_low"), get("auc_ci_high")
        err = np.vstack([auc - lo, hi - auc]) if np.isfinite(lo).any() else None
        line = ax_auc.errorbar(x, auc, yerr=None if err is None else np.nan_to_num(err), marker="o", capsize=3,
                               label=run)
        colour = line.lines[0].get_color()
        ax_tpr.plot(x, get("tpr_at_threshold"), marker="o", color=colour,
                    label=f"{run} (threshold {p['threshold']:.3g})")
        ax_tpr.plot(x, get("fpr_at_threshold"), marker="x", linestyle="--", color=colour)
    ax_auc.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance")
    ax_auc.set(title="AUC (bars: 95 % bootstrap interval)", ylabel="AUC, p(fake)", ylim=(0.0, 1.02))
    ax_tpr.set(title="at the checkpoint's threshold: fakes caught (TPR, solid), reals called fake (FPR, dashed)",
               ylabel="rate at threshold", ylim=(-0.02, 1.02))
    ax_tpr.title.set_fontsize(9)
    for ax in (ax_auc, ax_tpr):
        ax.set_xticks(x, [LABELS[n] for n in names], rotation=30, ha="right", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    if title:
        fig.suptitle(title)
    return fig


def save_panel_figure(path: str | Path, panels: dict[str, dict],
                      title: str = "robustness: each run's test split under each degradation") -> Path:
    return save_figure(path, panel_figure(panels, title), dpi=110)
