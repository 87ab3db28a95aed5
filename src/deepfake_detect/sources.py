"""Datasets of many sources: which generator made each fake and which kind of photograph each real is.

A folder may hold ``sources.csv`` (``path,label,source,generator,split``; ``path`` relative to the folder), as
``../shared/data/generated_faces`` does. Two things read it:

- the ``frame-faces`` stage (``frame_faces.frame_sourced``): every image's largest face found by the
  project's face finder (MTCNN, ``faces.py``) and cut out with one framing (``crop.crop_folder``), so that a
  detector trains on what ``predict`` hands it -- a face found in a picture, framed one way -- and cannot learn
  each source's framing instead of generation (FFHQ and StyleGAN faces are aligned, text-to-image portraits are
  not). The output keeps the course layout and a ``sources.csv`` of its own; every image that gave no crop is
  listed in ``frame_faces.json``. With ``exclude``, a second layout holds train and val without those sources
  (the leave-diffusion-out run) and the whole test split, so its test AUC per generator is the zero-shot figure
  for the left-out ones.
- the evaluation (``per_source``): AUC of each fake source against all reals, and the false-positive rate of
  each real source at the detector's threshold, so that one overall AUC cannot hide a generator it misses or a
  kind of photograph it calls fake.
"""
from __future__ import annotations

import csv
import itertools
import os
from pathlib import Path

import numpy as np

from .errors import UserError

SOURCES = "sources.csv"
COLUMNS = ("path", "label", "source", "generator", "split")


class SourcesError(UserError, ValueError):
    """A sources.csv that cannot be read; the message names the file and the fix."""


def read_sources(folder: str | Path) -> dict[str, dict]:
    """{path relative to ``folder``: its row} from ``folder/sources.csv``; {} when there is none."""
    path = Path(folder) / SOURCES
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SourcesError(f"{path}: no column '{missing[0]}' (a sources.csv has {', '.join(COLUMNS)})")
        rows = {r["path"]: r for r in reader}
    bad = [p for p, r in rows.items() if r["label"] not in ("real", "fake")]
    if bad:
        raise SourcesError(f"{path}: row {bad[0]!r} has label {rows[bad[0]]['label']!r} (real or fake)")
    return rows


def sources_of_rows(rows: list[dict], root: str | Path) -> list[dict | None]:
    """The sources.csv row of each manifest row (``path`` under ``root``, a folder with sources.csv), or None."""
    root = Path(root)
    table = read_sources(root)
    if not table:
        return [None] * len(rows)
    out = []
    for r in rows:
        try:
            rel = Path(os.path.relpath(Path(r["path"]).resolve(), root.resolve())).as_posix()
        except ValueError:  # another drive
            rel = None
        out.append(table.get(rel))
    return out


def per_source(y: np.ndarray, p: np.ndarray, srcs: list[dict | None], threshold: float) -> dict:
    """``{"fake": {source: {generator, auc, tpr, n}}, "real": {source: {fpr, n}}}``: each fake source's AUC
    against every real of the split and its detection rate at ``threshold``; each real source's false-positive
    rate (p > threshold). Images without a source row are left out (counted in ``n_unsourced``)."""
    from sklearn.metrics import roc_auc_score

    y, p = np.asarray(y), np.asarray(p, dtype=float)
    known = np.array([s is not None for s in srcs], bool)
    name = np.array([s["source"] if s else "" for s in srcs], object)
    reals = known & (y == 0)
    out: dict = {"fake": {}, "real": {}, "threshold": float(threshold), "n_unsourced": int((~known).sum())}
    for src in sorted(set(name[known & (y == 1)])):
        m = known & (y == 1) & (name == src)
        gen = next(s["generator"] for s, k in zip(srcs, m) if k)
        sel = reals | m
        auc = float(roc_auc_score(y[sel], p[sel])) if reals.any() else None
        out["fake"][src] = {"generator": gen, "auc": auc, "tpr": float(np.mean(p[m] > threshold)), "n": int(m.sum())}
    for src in sorted(set(name[reals])):
        m = reals & (name == src)
        out["real"][src] = {"fpr": float(np.mean(p[m] > threshold)), "n": int(m.sum())}
    return out


def threshold_for_sources(p: np.ndarray, srcs: list[str], max_fpr: float) -> tuple[float, dict]:
    """The lowest threshold at which the false-positive rate (p > threshold) of every real source's ``p`` is at most
    ``max_fpr``: the worst source sets it. Returns it and each source's own such threshold."""
    p, srcs = np.asarray(p, dtype=float), np.asarray(srcs, object)
    own = {}
    for s in sorted(set(srcs)):
        q = np.sort(p[srcs == s])
        k = int(np.floor(max_fpr * len(q)))  # at most k of n above the threshold
        own[s] = float(q[len(q) - 1 - k]) if len(q) else 0.0  # the (n-k)-th smallest: exactly k lie above it
    return (max(own.values()) if own else 0.5), own


def joint_thresholds(p: np.ndarray, srcs: list[str], max_fpr: float, floors, steps: int = 20
                     ) -> tuple[np.ndarray, dict, list[float]]:
    """Thresholds for detectors that run together, a picture called fake when any of them fires (``p[i, j] >
    t[j]``; ``p``: one row per real picture, one column per detector), such that no real source has more than
    ``max_fpr`` of its pictures called fake. Each detector's rate alone is bounded by its own operating point; their
    union is not (on a source both err on, the rates add up): this bounds the union.

    Detector ``j`` gets a share ``s_j`` of the budget (1, 1 - 1/steps, ..., 0): its threshold is the lowest at which
    it alone calls at most ``s_j * max_fpr`` of every source fake (``threshold_for_sources``), never below its
    ``floors`` entry (its own operating point). Of the shares at which the union holds on every source, the largest
    total is kept (ties: the most even), so a detector that adds no false alarm where the union overflows keeps its
    own threshold. All shares 0 always hold (every threshold at or above its sources' highest p). Returns the
    thresholds, each source's rate of the union at them ({source: {fpr, n}}) and the shares."""
    p, srcs, floors = np.asarray(p, dtype=float), np.asarray(srcs, object), np.asarray(floors, dtype=float)
    if p.ndim != 2 or p.shape[1] != len(floors) or len(srcs) != len(p):
        raise ValueError(f"joint_thresholds: p {p.shape}, {len(srcs)} sources and {len(floors)} floors do not match")
    names, shares = sorted(set(srcs)), np.linspace(1.0, 0.0, steps + 1)
    masks = [srcs == s for s in names]
    # the threshold of each detector at each share, then every combination of shares (21^2 for two detectors)
    cand = np.array([[max(floor, threshold_for_sources(p[:, j], srcs, share * max_fpr)[0]) for share in shares]
                     for j, floor in enumerate(floors)]).reshape(len(floors), len(shares))
    best = None
    for idx in itertools.product(range(len(shares)), repeat=len(floors)):
        t = cand[np.arange(len(floors)), list(idx)]
        fired = (p > t).any(axis=1)
        if all(fired[m].mean() <= max_fpr for m in masks if m.any()):
            key = (round(float(shares[list(idx)].sum()), 9), float(shares[list(idx)].min()) if idx else 0.0)
            if best is None or key > best[0]:
                best = (key, idx, t, fired)
    _, idx, t, fired = best
    rates = {s: {"fpr": float(fired[m].mean()), "n": int(m.sum())} for s, m in zip(names, masks)}
    return t, rates, [float(shares[i]) for i in idx]
