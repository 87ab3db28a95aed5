"""metrics.py against sklearn on random inputs, EER on hand-worked cases, finite curve points."""
import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    det_curve,
    log_loss,
    roc_auc_score,
    roc_curve,
)

from deepfake_detect import metrics


def _random(seed: int, n: int = 300):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    score = np.clip(rng.normal(0.4 + 0.2 * y, 0.25), 0, 1)
    score[rng.random(n) < 0.1] = 0.5  # ties, incl. at the threshold
    return y, score


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_match_sklearn(seed):
    y, s = _random(seed)
    m = metrics.binary_metrics(y, s, n_bootstrap=0)
    pred = (s > 0.5).astype(int)
    assert m["auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["auc_score1"] == pytest.approx(roc_auc_score(y, 1 - s))
    assert m["auc"] + m["auc_score1"] == pytest.approx(1.0)
    assert m["ap"] == pytest.approx(average_precision_score(y, s))
    assert m["acc"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_acc"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert [m["tn"], m["fp"], m["fn"], m["tp"]] == confusion_matrix(y, pred).ravel().tolist()
    assert (m["n_real"], m["n_fake"]) == (int((y == 0).sum()), int((y == 1).sum()))
    # DeepfakeBench's EER, written out
    fpr, tpr, _ = roc_curve(y, s, pos_label=1)
    assert m["eer"] == pytest.approx(fpr[np.nanargmin(np.absolute((1 - tpr) - fpr))])
    # TPR at FPR <= x by brute force over every threshold
    for key, x in (("tpr_at_fpr_1pct", 0.01), ("tpr_at_fpr_10pct", 0.10)):
        best = max(((s[y == 1] >= t).mean() for t in np.r_[np.unique(s), np.inf] if (s[y == 0] >= t).mean() <= x))
        assert m[key] == pytest.approx(best)
    assert np.isnan(m["auc_ci_low"]) and np.isnan(m["auc_ci_high"])
    assert m["log_loss"] == pytest.approx(log_loss(y, np.clip(s, 1e-7, 1 - 1e-7)))


def test_eer_hand_worked():
    # 4 real, 4 fake; one real (0.6) scores above one fake (0.4): at any threshold in (0.4, 0.6)
    # 1 of 4 reals is called fake and 1 of 4 fakes is missed -> FPR = FNR = 0.25.
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    assert metrics.eer(y, [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]) == pytest.approx(0.25)
    # perfectly separated -> 0; perfectly inverted -> FPR 1 where FNR = FPR = 1
    assert metrics.eer([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert metrics.eer([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 1.0
    # 4 real, 2 fake: ROC points (fpr, fnr) (0, .5) (.25, .5) (.25, 0): the first |FNR - FPR| minimum is at
    # threshold 0.8 (FPR .25, FNR .5), and DeepfakeBench reports that point's FPR
    assert metrics.eer([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.8, 0.6, 0.9]) == pytest.approx(0.25)


def test_bootstrap_interval():
    y, s = _random(3, 400)
    lo, hi = metrics.bootstrap_auc(y, s, n=200, seed=0)
    auc = roc_auc_score(y, s)
    assert 0 <= lo < auc < hi <= 1 and hi - lo < 0.2
    assert (lo, hi) == metrics.bootstrap_auc(y, s, n=200, seed=0)  # reproducible
    assert (lo, hi) != metrics.bootstrap_auc(y, s, n=200, seed=1)


def test_curve_points_finite_and_match_sklearn():
    y, s = _random(4)
    roc = metrics.roc_points(y, s)
    fpr, tpr, thr = roc_curve(y, s, pos_label=1)
    assert np.isinf(thr[0])  # sklearn's first threshold, which DVC cannot draw
    np.testing.assert_allclose(roc["fpr"], fpr)
    np.testing.assert_allclose(roc["tpr"], tpr)
    np.testing.assert_allclose(roc["threshold"][1:], np.minimum(thr[1:], 1))
    det = metrics.det_points(y, s)
    dfpr, dfnr, _ = det_curve(y, s, pos_label=1)
    np.testing.assert_allclose(det["fpr"], dfpr)
    np.testing.assert_allclose(det["fnr"], dfnr)
    for d in (roc, det):
        for v in d.values():
            assert np.isfinite(v).all()
    inner = (dfpr > 1e-4) & (dfpr < 1 - 1e-4)
    np.testing.assert_allclose(det["fpr_probit"][inner], norm.ppf(dfpr[inner]))
    assert metrics.probit([0.0, 1.0]).tolist() == pytest.approx([norm.ppf(1e-4), norm.ppf(1 - 1e-4)])


def test_errors():
    with pytest.raises(ValueError, match="both present"):
        metrics.binary_metrics([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(ValueError, match="NaN"):
        metrics.eer([0, 1], [0.2, np.nan])


def test_eer_of_constant_scores_is_one_half():
    # only the ROC points (0, 0) and (1, 1): a useless detector, whose EER is 0.5 (not 0)
    assert metrics.eer([0, 0, 1, 1, 1], [0.5] * 5) == pytest.approx(0.5)


def _operating_points(y, s):
    """(FPR, FNR, balanced acc) of ``s > t`` for every t that changes the calls: every distinct score, and -inf."""
    out = []
    for t in np.r_[np.unique(s), -np.inf]:
        pred = (s > t).astype(int)
        tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
        out.append((fp / (fp + tn), fn / (fn + tp), balanced_accuracy_score(y, pred)))
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_choose_threshold_gives_the_chosen_operating_point(seed):
    y, s = _random(seed)
    s = np.round(s, 2)  # many ties: roc_curve's >= and our > differ at every one
    points = _operating_points(y, s)
    t = metrics.choose_threshold(y, s, "balanced")
    assert 0 <= t <= 1
    assert balanced_accuracy_score(y, (s > t).astype(int)) == pytest.approx(points[:, 2].max(), abs=1e-12)
    assert metrics.threshold_metrics(y, s, t)["balanced_acc"] == pytest.approx(points[:, 2].max(), abs=1e-12)
    t = metrics.choose_threshold(y, s, "eer")
    assert 0 <= t <= 1
    pred = s > t
    fpr, fnr = pred[y == 0].mean(), (~pred[y == 1]).mean()
    assert abs(fpr - fnr) == pytest.approx(np.abs(points[:, 0] - points[:, 1]).min(), abs=1e-12)
    assert metrics.choose_threshold(y, s, "fixed") == 0.5


def test_choose_threshold_edges():
    y = np.array([0, 0, 1, 1])
    # separable: every real below every fake; the threshold lies strictly between them
    t = metrics.choose_threshold(y, np.array([0.1, 0.2, 0.6, 0.9]), "balanced")
    assert 0.2 <= t < 0.6
    t = metrics.choose_threshold(y, np.array([0.1, 0.2, 0.6, 0.9]), "eer")
    assert 0.2 <= t < 0.6
    # the best cut is at a score of 0.6 shared by a real and a fake: the fake at 0.6 must be called fake
    y, s = np.array([0, 0, 0, 1, 1]), np.array([0.1, 0.2, 0.6, 0.6, 0.9])
    t = metrics.choose_threshold(y, s, "balanced")
    assert 0.2 <= t < 0.6 and balanced_accuracy_score(y, (s > t).astype(int)) == pytest.approx(5 / 6)
    # constant scores: no useful cut; the first ROC point (nothing fake) at 1.0
    assert metrics.choose_threshold(y, np.full(len(y), 0.3), "balanced") == 1.0
    with pytest.raises(ValueError, match="'youden'"):
        metrics.choose_threshold(y, s, "youden")
    assert metrics.THRESHOLD_RULES == ("fixed", "eer", "balanced")
