"""Detection metrics, all through sklearn: AUC, EER, AP, accuracy, TPR at low FPR, log loss, bootstrap AUC
interval, and the ROC / DET curve points (finite, ready for DVC plots).

Convention: label 1 = fake is the positive class; ``score`` is p(fake) ("score 2" in the course);
``1 - score`` is p(real) ("score 1"), whose AUC is ``1 - auc``.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import norm
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    det_curve,
    log_loss,
    roc_auc_score,
    roc_curve,
)

from .config import THRESHOLD_RULES  # how ``choose_threshold`` picks a threshold on validation scores

# DET coordinates are clipped to [PROBIT_EPS, 1 - PROBIT_EPS] before the probit transform, so that rates of
# exactly 0 or 1 stay finite (probit(1e-4) = -3.72); 1e-4 is below 1/N for any test split up to 10,000 images.
PROBIT_EPS = 1e-4


def _check(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(int).ravel()
    score = np.asarray(score, dtype=np.float64).ravel()
    if len(y) != len(score):
        raise ValueError(f"{len(y)} labels but {len(score)} scores")
    if not np.isfinite(score).all():
        raise ValueError("scores contain NaN or inf")
    n_real, n_fake = int((y == 0).sum()), int((y == 1).sum())
    if n_real == 0 or n_fake == 0 or n_real + n_fake != len(y):
        raise ValueError(f"ROC metrics need labels 0 (real) and 1 (fake), both present; got {n_real} real, "
                         f"{n_fake} fake, {len(y) - n_real - n_fake} other")
    return y, score


def auc(y, score) -> float:
    """ROC AUC of ``score`` (p(fake)) against labels (1 = fake), checked like every metric here."""
    y, score = _check(y, score)
    return float(roc_auc_score(y, score))


def eer(y, score) -> float:
    """Equal error rate as DeepfakeBench computes it: the FPR at the ROC point where |FNR - FPR| is smallest
    (``fpr[nanargmin(|1 - tpr - fpr|)]`` over ``sklearn.metrics.roc_curve``)."""
    y, score = _check(y, score)
    fpr, tpr, _ = roc_curve(y, score, pos_label=1)
    gap = np.abs((1 - tpr) - fpr)
    tied = np.flatnonzero(gap == np.nanmin(gap))
    if len(tied) == 1 or len(set(fpr[tied])) == 1:
        return float(fpr[tied[0]])
    # several ROC points are equally close (e.g. constant scores: only (0,0) and (1,1)); DeepfakeBench's
    # arg-min would return the first (EER 0 for a useless detector). Take the mean error rate there instead.
    return float(np.mean((fpr[tied] + 1 - tpr[tied]) / 2))


def tpr_at_fpr(y, score, max_fpr: float) -> float:
    """Highest TPR among ROC operating points with FPR <= ``max_fpr`` (every threshold considered)."""
    y, score = _check(y, score)
    fpr, tpr, _ = roc_curve(y, score, pos_label=1, drop_intermediate=False)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def bootstrap_auc(y, score, n: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval for ROC AUC, resampling real and fake images separately
    (stratified, so every resample has both classes). ``n = 0`` gives (nan, nan)."""
    y, score = _check(y, score)
    if n <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    real, fake = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    yb = np.r_[np.zeros(len(real), int), np.ones(len(fake), int)]
    aucs = np.empty(n)
    for i in range(n):
        idx = np.r_[rng.choice(real, len(real)), rng.choice(fake, len(fake))]
        aucs[i] = roc_auc_score(yb, score[idx])
    alpha = (1 - level) / 2
    lo, hi = np.quantile(aucs, [alpha, 1 - alpha])
    return float(lo), float(hi)


def binary_metrics(y, score, threshold: float = 0.5, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Every metric of the evaluate stage and of ``deepfake-detect evaluate``, flat keys with plain Python
    numbers (JSON / ``dvc metrics diff``).

    ``score`` is p(fake); a sample is called fake when ``score > threshold`` (the same as argmax of the two
    softmax outputs at 0.5, and DeepfakeBench's ``y_pred > 0.5``). The log loss clips p(fake) to
    [1e-7, 1 - 1e-7]."""
    y, score = _check(y, score)
    pred = (score > threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    lo, hi = bootstrap_auc(y, score, n_bootstrap, seed)
    auc = float(roc_auc_score(y, score))
    return {
        "auc": auc,
        "auc_score1": float(roc_auc_score(y, 1 - score)),  # p(real) as the detector score: 1 - auc
        "eer": eer(y, score),
        "ap": float(average_precision_score(y, score)),
        "acc": float((pred == y).mean()),
        "balanced_acc": float(balanced_accuracy_score(y, pred)),
        "tpr_at_fpr_1pct": tpr_at_fpr(y, score, 0.01),
        "tpr_at_fpr_10pct": tpr_at_fpr(y, score, 0.10),
        "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp),
        "auc_ci_low": lo, "auc_ci_high": hi,
        "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum()),
        "log_loss": float(log_loss(y, np.clip(score, 1e-7, 1 - 1e-7), labels=[0, 1])),
    }


def threshold_metrics(y, score, threshold: float) -> dict:
    """Accuracy and balanced accuracy when ``score > threshold`` is called fake."""
    y, score = _check(y, score)
    pred = (score > threshold).astype(int)
    return {"acc": float((pred == y).mean()), "balanced_acc": float(balanced_accuracy_score(y, pred))}


def _strict_threshold(score: np.ndarray, thr: np.ndarray, k: int) -> float:
    """A threshold t with ``score > t`` exactly where ``score >= thr[k]`` (roc_curve's rule, ``thr`` its
    decreasing thresholds over every distinct score): midway to the next lower score, or to 0 below the lowest
    (0 itself when the lowest score is 0: then it stays real); 1 (or the top score, if above 1) for ``thr[0]``."""
    if k == 0:
        return float(max(1.0, score.max()))
    hi = float(thr[k])
    lo = float(thr[k + 1]) if k + 1 < len(thr) else min(0.0, hi)
    t = (hi + lo) / 2
    return t if lo <= t < hi else lo


def choose_threshold(y, score, rule: str) -> float:
    """The decision threshold of ``rule`` (one of ``THRESHOLD_RULES``) on scores p(fake), for ``score > t``:

    - ``fixed``: 0.5;
    - ``eer``: the ROC operating point where FPR and FNR are closest (the equal error rate);
    - ``balanced``: the one of highest balanced accuracy (TPR + TNR) / 2, i.e. Youden's J = TPR - FPR.

    Every distinct score is a candidate (ties: the highest threshold). The value returned lies between the
    chosen score and the next lower one, so ``score > t`` gives exactly that operating point."""
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {rule!r} (expected one of {', '.join(THRESHOLD_RULES)})")
    if rule == "fixed":
        return 0.5
    y, score = _check(y, score)
    fpr, tpr, thr = roc_curve(y, score, pos_label=1, drop_intermediate=False)
    k = int(np.argmin(np.abs((1 - tpr) - fpr)) if rule == "eer" else np.argmax(tpr - fpr))
    return _strict_threshold(score, thr, k)


def probit(p, eps: float = PROBIT_EPS) -> np.ndarray:
    """Normal deviate of a rate, clipped to stay finite (the axes of a DET plot)."""
    return norm.ppf(np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps))


def roc_points(y, score) -> dict[str, np.ndarray]:
    """ROC curve (fpr, tpr, threshold) without sklearn's leading ``inf`` threshold (clipped to 1.0: a
    threshold above every probability, i.e. nothing is called fake)."""
    y, score = _check(y, score)
    fpr, tpr, thr = roc_curve(y, score, pos_label=1)
    thr = np.where(np.isfinite(thr), thr, 1.0)
    return {"fpr": fpr, "tpr": tpr, "threshold": np.minimum(thr, 1.0)}


def det_points(y, score) -> dict[str, np.ndarray]:
    """DET curve (fpr, fnr, threshold) and its probit coordinates ``fpr_probit``, ``fnr_probit``, all finite."""
    y, score = _check(y, score)
    fpr, fnr, thr = det_curve(y, score, pos_label=1)
    return {"fpr": fpr, "fnr": fnr, "fpr_probit": probit(fpr), "fnr_probit": probit(fnr),
            "threshold": np.minimum(np.where(np.isfinite(thr), thr, 1.0), 1.0)}
