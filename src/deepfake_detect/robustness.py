"""The robustness panel, its one home: the conditions (``PANEL``: JPEG q90 / q70 / q50, a 0.5x downscale and back,
blur sigma 1, a re-shared copy; each a chain of ``degrade`` operations), their labels, the panel of a checkpoint
(its images scored again under each), its key in a run's metrics JSON, ``worst`` and the README table.

The conditions are applied to the image as decoded from its file (its own resolution), before the checkpoint's
resize -- as a shared copy reaches a user. They draw no random numbers.

Per degradation: AUC with its bootstrap interval, the drop from the clean AUC, and TPR, FPR and balanced
accuracy at the checkpoint's own threshold (the one training chose on validation, which a user of
``deepfake-detect predict`` gets) -- a degradation can keep the AUC and still move every score across that
threshold. Scoring is ``Detector.score_paths`` (size, normalisation, TTA and precision); the metrics are
``metrics.binary_metrics``. The degradations draw no random numbers; ``seed`` seeds the bootstrap and the
optional subsample (``max_images``: the panel costs one scoring pass per degradation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import torch
from PIL import Image

from . import metrics
from .data import BadImageError, DatasetError
from .degrade import apply
from .metrics_files import fmt

# name -> the steps applied in order: (operation of ``degrade.OPERATIONS``, argument); "clean" is the image as it is
PANEL: dict[str, tuple[tuple[str, float], ...]] = {
    "clean": (),
    "jpeg_q90": (("jpeg", 90),),
    "jpeg_q70": (("jpeg", 70),),
    "jpeg_q50": (("jpeg", 50),),
    "resize_half": (("down_up", 0.5),),
    "blur_s1": (("blur", 1.0),),
    "reshared": (("rescale", 0.75), ("jpeg", 75)),
}
LABELS = {"clean": "clean", "jpeg_q90": "JPEG q90", "jpeg_q70": "JPEG q70", "jpeg_q50": "JPEG q50",
          "resize_half": "0.5× resize and back", "blur_s1": "blur σ=1", "reshared": "re-shared (0.75×, JPEG 75)"}

PANEL_KEY = "robustness"  # the key of the panel in a run's metrics/evaluate JSON
ROBUSTNESS_JSON = "robustness.json"  # metrics/summary/: every run's panel, for the README table


@dataclass(frozen=True)
class Degradation:
    """One degradation of ``PANEL`` by name, as a picklable callable (data-loader workers) on a PIL image or a
    uint8 (3, H, W) tensor; returns the same kind."""

    name: str

    def __post_init__(self):
        if self.name not in PANEL:
            raise ValueError(f"unknown degradation {self.name!r} (expected one of {', '.join(PANEL)})")

    def __call__(self, img):
        if isinstance(img, Image.Image):
            x = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
            return Image.fromarray(apply(x, PANEL[self.name]).permute(1, 2, 0).numpy())
        return apply(img, PANEL[self.name])


class Scorer(Protocol):
    """What the panel uses of a ``detector.Detector``. Named, not imported: the summarize stage reads this module
    for the panel's names, ``worst`` and table, and does not run the scoring code."""

    run: str
    tta: str
    threshold: float

    def score_paths(self, paths, labels=None, batch_size: int = 64, progress: bool = True, desc: str = "score",
                    degrade=None) -> tuple[np.ndarray, dict[int, str]]: ...

    def with_options(self, tta: str | None = None, precision: str | None = None,
                     num_workers: int | None = None) -> Scorer: ...


@dataclass
class PanelOptions:
    """What a panel scores and how: ``degradations`` (of ``PANEL``), ``n_bootstrap`` resamples of the AUC
    interval under ``seed``, ``max_images`` (a stratified subsample drawn under ``seed``; 0: every image) and the
    scoring ``batch_size``."""

    degradations: Sequence[str] = tuple(PANEL)
    n_bootstrap: int = 1000
    seed: int = 0
    max_images: int = 0
    batch_size: int = 64


def rates(m: dict) -> dict:
    """Rates at the threshold from the confusion counts of ``metrics.binary_metrics``."""
    return {"tpr_at_threshold": m["tp"] / max(m["tp"] + m["fn"], 1),
            "fpr_at_threshold": m["fp"] / max(m["fp"] + m["tn"], 1),
            "balanced_acc_at_threshold": m["balanced_acc"]}


def degraded_scores(detector: Scorer, rows: list[dict], name: str, batch_size: int = 64,
                    progress: bool = True) -> np.ndarray:
    """p(fake) of every row's image under degradation ``name``, by ``detector`` (its TTA and precision); an
    image that does not decode is a BadImageError naming it (a panel over a subset would not compare with the
    clean AUC)."""
    p, errors = detector.score_paths([r["path"] for r in rows], [int(r["label"]) for r in rows], batch_size,
                                     progress, desc=f"robustness {detector.run} {name}",
                                     degrade=None if name == "clean" else Degradation(name))
    if errors:
        raise BadImageError(f"{len(errors)} image(s) do not decode: " + "; ".join(list(errors.values())[:5]))
    return p


def subsample(labels: Sequence[int], max_images: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_images`` items, drawn without replacement under ``seed`` from each class
    in proportion to its size (each class present keeps at least one); all of them when ``max_images`` is 0 or
    not below their number."""
    y = np.asarray(labels)
    if not max_images or max_images >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    keep = [rng.choice(idx, max(1, round(len(idx) * max_images / len(y))), replace=False)
            for idx in (np.flatnonzero(y == c) for c in np.unique(y))]
    return np.sort(np.concatenate(keep))


def panel(detector: Scorer, rows: list[dict], options: PanelOptions | None = None,
          clean_scores: np.ndarray | None = None, progress: bool = True) -> dict:
    """The panel of one detector on ``rows`` ({path, label}: a manifest's test split, or
    ``predict.labelled_images`` of a flat real/ + fake/ folder), as JSON-ready numbers:

    ``{"threshold", "tta", "n_real", "n_fake", "n_of", "degradations": {name: {auc, auc_ci_low, auc_ci_high,
    auc_drop, tpr_at_threshold, fpr_at_threshold, balanced_acc_at_threshold}}}`` in ``PANEL`` order, ``clean``
    first (always scored: the drops are from it). ``auc_drop`` = clean AUC - this AUC (positive: worse).
    ``options.max_images``: score a stratified subsample of that many images drawn under ``options.seed``
    (``subsample``; 0: every image) -- every degradation costs a full scoring pass; ``n_of`` is how many ``rows``
    there were. ``clean_scores``: the clean p(fake) of all ``rows`` when the caller has them already (the evaluate
    stage), made with the checkpoint's TTA. The detector's TTA is the panel's (``Detector.with_options(tta="none")``
    halves the cost of a ``flip`` checkpoint's panel; the clean AUC is then rescored, and differs from the
    stage's)."""
    o = options or PanelOptions()
    degradations = o.degradations
    unknown = [d for d in degradations if d not in PANEL]
    if unknown:
        raise ValueError(f"unknown degradation {unknown[0]!r} (expected one of {', '.join(PANEL)})")
    if not rows:
        raise DatasetError("robustness panel: no images to score")
    if clean_scores is not None and len(clean_scores) != len(rows):
        raise ValueError(f"clean_scores has {len(clean_scores)} scores for {len(rows)} images")
    mode = detector.tta
    own = None if clean_scores is None else detector.with_options(tta="checkpoint").tta  # the checkpoint's TTA
    if clean_scores is not None and mode != own:
        raise ValueError(f"clean_scores come with the checkpoint's TTA ({own}), the panel uses {mode}")
    n_of = len(rows)
    keep = subsample([int(r["label"]) for r in rows], o.max_images, o.seed)
    rows = [rows[i] for i in keep]
    clean_scores = None if clean_scores is None else np.asarray(clean_scores, dtype=np.float64)[keep]
    names = ["clean"] + [d for d in PANEL if d in degradations and d != "clean"]
    y = np.array([int(r["label"]) for r in rows])
    threshold = detector.threshold
    out = {}
    for name in names:
        if name == "clean" and clean_scores is not None:
            p = clean_scores
        else:
            p = degraded_scores(detector, rows, name, o.batch_size, progress)
        m = metrics.binary_metrics(y, p, threshold=threshold, n_bootstrap=o.n_bootstrap, seed=o.seed)
        out[name] = {"auc": m["auc"], "auc_ci_low": m["auc_ci_low"], "auc_ci_high": m["auc_ci_high"],
                     "auc_drop": out["clean"]["auc"] - m["auc"] if out else 0.0, **rates(m)}
    return {"threshold": threshold, "tta": mode, "n_real": int((y == 0).sum()),
            "n_fake": int((y == 1).sum()), "n_of": n_of, "degradations": out}


def worst(panel_result: dict) -> tuple[str, float]:
    """(degradation, AUC drop) of the largest drop in a panel."""
    d = panel_result["degradations"]
    name = max((k for k in d if k != "clean"), key=lambda k: d[k]["auc_drop"], default="clean")
    return name, d[name]["auc_drop"]


def panel_table(metrics_by_run: dict[str, dict], value: str = "auc") -> str:
    """A markdown table, one row per run, one column per degradation, from the runs' metrics JSONs (each with
    the panel under ``PANEL_KEY``; runs without it are left out). ``value``: ``auc`` (each cell the AUC and, off
    the clean column, its change from clean in brackets; a last column gives the worst drop and where) or
    another field of the panel (e.g. ``tpr_at_threshold``)."""
    panels = {run: m[PANEL_KEY] for run, m in metrics_by_run.items() if PANEL_KEY in m}
    if not panels:
        return ""
    names = [d for d in PANEL if any(d in p["degradations"] for p in panels.values())]
    head = ["run", *(LABELS[d] for d in names)] + (["worst drop"] if value == "auc" else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(head) - 1)) + "|"]
    for run, p in panels.items():
        cells = [run]
        for d in names:
            m = p["degradations"].get(d)
            if m is None:
                cells.append("–")
            elif value == "auc" and d != "clean":
                cells.append(f"{fmt(m['auc'])} ({0.0 - m['auc_drop']:+.3f})")  # the change from clean (no "-0.000")
            else:
                cells.append(fmt(m[value]))
        if value == "auc":
            name, drop = worst(p)
            cells.append(f"{drop:.3f} ({LABELS[name]})" if name != "clean" else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
