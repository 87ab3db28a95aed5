"""The robustness panel: a checkpoint's images scored again under each fixed degradation of
``degrade.PANEL`` (JPEG q90 / q70 / q50, a 0.5x downscale and back, blur sigma 1, a re-shared copy).

Per degradation: AUC with its bootstrap interval, the drop from the clean AUC, and TPR, FPR and balanced
accuracy at the checkpoint's own threshold (the one training chose on validation, which a user of
``deepfake-detect predict`` gets) -- a degradation can keep the AUC and still move every score across that
threshold. Scoring is ``Detector.score_paths`` (size, normalisation, TTA and precision); the metrics are
``metrics.binary_metrics``. The degradations draw no random numbers; ``seed`` seeds the bootstrap and the
optional subsample (``max_images``: the panel costs one scoring pass per degradation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import metrics
from .data import BadImageError, DatasetError
from .degrade import PANEL, Degradation
from .detector import Detector
from .score import resolve_tta

PANEL_KEY = "robustness"  # the key of the panel in a run's metrics JSON


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


def degraded_scores(detector: Detector, rows: list[dict], name: str, batch_size: int = 64,
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


def panel(detector: Detector, rows: list[dict], options: PanelOptions | None = None,
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
    if clean_scores is not None and mode != resolve_tta(detector.ckpt):
        raise ValueError(f"clean_scores come with the checkpoint's TTA ({resolve_tta(detector.ckpt)}), the panel "
                         f"uses {mode}")
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
