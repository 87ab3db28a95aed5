"""The robustness panel: a checkpoint's images scored again under each fixed degradation of
``degrade.PANEL`` (JPEG q90 / q70 / q50, a 0.5x downscale and back, blur sigma 1, a re-shared copy).

Per degradation: AUC with its bootstrap interval, the drop from the clean AUC, and TPR, FPR and balanced
accuracy at the checkpoint's own threshold (the one training chose on validation, which a user of
``deepfake-detect predict`` gets) -- a degradation can keep the AUC and still move every score across that
threshold. Scoring is ``score.score_paths`` (the checkpoint's size, normalisation and TTA); the metrics are
``metrics.binary_metrics``. The degradations draw no random numbers; ``seed`` seeds the bootstrap and the
optional subsample (``max_images``: the panel costs one scoring pass per degradation).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from . import metrics
from .data import BadImageError, DatasetError
from .degrade import PANEL, Degradation
from .score import resolve_tta, score_paths

PANEL_KEY = "robustness"  # the key of the panel in a run's metrics JSON


def _rates(m: dict) -> dict:
    """Rates at the threshold from the confusion counts of ``metrics.binary_metrics``."""
    return {"tpr_at_threshold": m["tp"] / max(m["tp"] + m["fn"], 1),
            "fpr_at_threshold": m["fp"] / max(m["fp"] + m["tn"], 1),
            "balanced_acc_at_threshold": m["balanced_acc"]}


def degraded_scores(model, ckpt: dict, rows: list[dict], name: str, device: torch.device | str = "cpu",
                    batch_size: int = 64, num_workers: int = -1, progress: bool = True,
                    tta: str = "checkpoint") -> np.ndarray:
    """p(fake) of every row's image under degradation ``name`` (``tta``: as in ``score.score_paths``); an image
    that does not decode is a BadImageError naming it (a panel over a subset would not compare with the clean
    AUC)."""
    p, errors = score_paths(model, ckpt, [r["path"] for r in rows], [int(r["label"]) for r in rows], device,
                            batch_size, num_workers, progress, desc=f"robustness {ckpt.get('run', '')} {name}",
                            tta=tta, degrade=None if name == "clean" else Degradation(name))
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


def panel(model, ckpt: dict, rows: list[dict], device: torch.device | str = "cpu", batch_size: int = 64,
          n_bootstrap: int = 1000, seed: int = 0, degradations: Sequence[str] = tuple(PANEL),
          clean_scores: np.ndarray | None = None, max_images: int = 0, tta: str = "checkpoint",
          num_workers: int = -1, progress: bool = True) -> dict:
    """The panel of one checkpoint on ``rows`` ({path, label}: a manifest's test split, or
    ``predict.labelled_images`` of a flat real/ + fake/ folder), as JSON-ready numbers:

    ``{"threshold", "tta", "n_real", "n_fake", "n_of", "degradations": {name: {auc, auc_ci_low, auc_ci_high,
    auc_drop, tpr_at_threshold, fpr_at_threshold, balanced_acc_at_threshold}}}`` in ``PANEL`` order, ``clean``
    first (always scored: the drops are from it). ``auc_drop`` = clean AUC - this AUC (positive: worse).
    ``max_images``: score a stratified subsample of that many images drawn under ``seed`` (``subsample``; 0: every
    image) -- every degradation costs a full scoring pass; ``n_of`` is how many ``rows`` there were.
    ``clean_scores``: the clean p(fake) of all ``rows`` when the caller has them already (the evaluate stage),
    made with the checkpoint's TTA. ``tta``: ``checkpoint`` or a mode of ``engine.TTA_MODES`` (``none`` halves the
    cost of a ``flip`` checkpoint's panel; the clean AUC is then rescored, and differs from the stage's)."""
    unknown = [d for d in degradations if d not in PANEL]
    if unknown:
        raise ValueError(f"unknown degradation {unknown[0]!r} (expected one of {', '.join(PANEL)})")
    if not rows:
        raise DatasetError("robustness panel: no images to score")
    if clean_scores is not None and len(clean_scores) != len(rows):
        raise ValueError(f"clean_scores has {len(clean_scores)} scores for {len(rows)} images")
    mode = resolve_tta(ckpt, tta)
    if clean_scores is not None and mode != resolve_tta(ckpt):
        raise ValueError(f"clean_scores come with the checkpoint's TTA ({resolve_tta(ckpt)}), the panel uses {mode}")
    n_of = len(rows)
    keep = subsample([int(r["label"]) for r in rows], max_images, seed)
    rows = [rows[i] for i in keep]
    clean_scores = None if clean_scores is None else np.asarray(clean_scores, dtype=np.float64)[keep]
    names = ["clean"] + [d for d in PANEL if d in degradations and d != "clean"]
    y = np.array([int(r["label"]) for r in rows])
    threshold = float(ckpt["threshold"])
    out = {}
    for name in names:
        if name == "clean" and clean_scores is not None:
            p = clean_scores
        else:
            p = degraded_scores(model, ckpt, rows, name, device, batch_size, num_workers, progress, mode)
        m = metrics.binary_metrics(y, p, threshold=threshold, n_bootstrap=n_bootstrap, seed=seed)
        out[name] = {"auc": m["auc"], "auc_ci_low": m["auc_ci_low"], "auc_ci_high": m["auc_ci_high"],
                     "auc_drop": out["clean"]["auc"] - m["auc"] if out else 0.0, **_rates(m)}
    return {"threshold": threshold, "tta": mode, "n_real": int((y == 0).sum()),
            "n_fake": int((y == 1).sum()), "n_of": n_of, "degradations": out}
