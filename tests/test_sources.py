"""The operating points over kinds of real photo: one detector (threshold_for_sources) and every shipped detector
running together (joint_thresholds: the union of their alarms bounded per source)."""
from __future__ import annotations

import numpy as np
import pytest

from deepfake_detect.sources import joint_thresholds, threshold_for_sources


def test_the_worst_source_sets_one_detectors_threshold():
    p = np.r_[np.linspace(0, 1, 100, endpoint=False), np.linspace(0, 0.5, 20, endpoint=False)]
    srcs = ["a"] * 100 + ["b"] * 20
    t, own = threshold_for_sources(p, srcs, 0.05)
    assert t == max(own.values()) == own["a"]
    for s in ("a", "b"):  # at each source's own threshold at most 5 % of it lies above
        q = p[np.array(srcs) == s]
        assert np.mean(q > own[s]) <= 0.05


def _union(p, srcs, t):
    fired = (np.asarray(p) > t).any(axis=1)
    return {s: fired[np.array(srcs) == s].mean() for s in set(srcs)}


def _at_shares(p, srcs, own, shares):
    return np.array([max(own[j], threshold_for_sources(p[:, j], srcs, shares[j] * 0.05)[0]) for j in range(len(own))])


def test_two_detectors_alone_within_the_budget_add_up_and_the_joint_point_bounds_their_union():
    rng = np.random.default_rng(0)
    n = 400
    srcs = ["ffhq"] * n + ["dfdc"] * n
    p = rng.uniform(0, 1, (2 * n, 2))  # independent detectors: their alarms rarely fall on the same picture
    own = [threshold_for_sources(p[:, j], srcs, 0.05)[0] for j in range(2)]
    assert max(_union(p, srcs, np.array(own)).values()) > 0.08  # each at 5 % alone, near 10 % together
    t, rates, shares = joint_thresholds(p, srcs, 0.05, own)
    assert (t >= np.array(own)).all() and (t > np.array(own)).any()
    assert np.allclose(t, _at_shares(p, srcs, own, shares))  # each threshold is its share's
    assert 0.8 <= sum(shares) < 2.0 and abs(shares[0] - shares[1]) <= 0.2
    assert all(r["fpr"] <= 0.05 for r in rates.values()) and {r["n"] for r in rates.values()} == {n}
    assert rates == {s: {"fpr": pytest.approx(v), "n": n} for s, v in _union(p, srcs, t).items()}
    # no larger share for either detector holds: one step up breaks the bound on some source
    for j in range(2):
        if shares[j] < 1.0:
            up = list(shares)
            up[j] = round(up[j] + 0.05, 2)
            assert max(_union(p, srcs, _at_shares(p, srcs, own, up)).values()) > 0.05


def test_the_budget_is_taken_from_the_detector_whose_alarms_can_give_way():
    """As in the rerun: the union overflows on ffhq; the face-swap detector's threshold is set by dfdc and its two
    ffhq alarms score 0.99 (lowering its share barely touches ffhq), the generated detector's ffhq alarms sit near
    its threshold. The largest total share keeps the face-swap threshold and raises the generated one."""
    n = 200
    srcs = ["dfdc"] * n + ["ffhq"] * n
    p = np.zeros((2 * n, 2))
    p[:10, 0] = np.linspace(0.6, 0.9, 10)  # detector 0: 5 % of dfdc above 0.5 (its worst source)
    p[n:n + 2, 0] = 0.99  # ... and 1 % of ffhq, high
    p[n + 2:n + 12, 1] = np.linspace(0.6, 0.9, 10)  # detector 1: 5 % of ffhq (other pictures): the union is 6 %
    t, rates, shares = joint_thresholds(p, srcs, 0.05, [0.5, 0.5])
    assert shares == pytest.approx([1.0, 0.85]) and t[0] == 0.5 and t[1] > 0.6  # 8 of its 10 ffhq alarms kept
    assert rates == {"dfdc": {"fpr": 0.05, "n": n}, "ffhq": {"fpr": 0.05, "n": n}}
    assert np.array_equal(joint_thresholds(p, srcs, 0.05, [0.5, 0.5])[0], t)  # deterministic


def test_when_the_union_already_holds_no_threshold_rises():
    p = np.zeros((100, 2))
    p[:3, 0] = 0.9  # detector 0 fires on the same 3 pictures as detector 1: the union is 3 %
    p[:3, 1] = 0.8
    t, rates, shares = joint_thresholds(p, ["a"] * 100, 0.05, [0.5, 0.5])
    assert shares == [1.0, 1.0] and list(t) == [0.5, 0.5] and rates == {"a": {"fpr": 0.03, "n": 100}}


def test_a_bad_shape_is_named():
    with pytest.raises(ValueError, match="do not match"):
        joint_thresholds(np.zeros((4, 2)), ["a"] * 4, 0.05, [0.5])
