"""The shipped detectors: one per task, picked on validation AUC, exported small, with a model card.

The release stage (``dvc repro real/dvc.yaml:release``) does, for each task (``faceswap`` = dataset ``fakes``,
``generated`` = dataset ``synthetic``):

1. candidates: the runs of the params' ``runs`` trained on the task's dataset (their evaluate JSON says which);
   the pick: the highest **validation** AUC (training's ``best_val_auc``, else the evaluate JSON's ``val_auc``),
   never a test figure;
2. export: the run's checkpoint in the same format, floating-point weights as float16, metrics trimmed to small
   scalars (``src/deepfake_detect/detectors/<task>.pt``; it loads with ``torch.load(weights_only=True)`` and
   ``checkpoint.read_checkpoint``);
3. calibration: the exported model scores the run's validation split; a Platt scaling
   (p_cal = sigmoid(a * logit(p_raw) + b), logit clipped at ``EPS``) is fitted on a seeded half and kept only if it
   lowers the log-loss on the other half; the threshold is the checkpoint's mapped through it (the same decisions);
4. the card (``<task>.json``, format ``deepfake-detect-card``), its Markdown (``<task>.md``, from the JSON by
   ``card_markdown``) and a small reliability figure (``<task>_reliability.png``): test AUC [CI] copied from the
   evaluate JSON, reliability and ECE of the shipped output on the test split, robustness panel, cross-dataset and
   cross-generator AUCs, false-positive rates on real images of every set at the shipped threshold, what it is not
   for, licence, provenance.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import Checkpoint, read_checkpoint
from .config import RUNS
from .data import LABELS, SPLITS, is_image_file, list_files, read_manifest
from .detector import Detector, calibrate, sha256_of, stage_precision  # calibrate: the one Platt map
from .errors import UserError
from .io import output_errors, write_json, write_text
from .metrics import auc as roc_auc
from .metrics_files import MetricsFileError, read_metrics_json
from .sources import joint_thresholds, sources_of_rows, threshold_for_sources

CARD_FORMAT = "deepfake-detect-card"
EPS = 1e-6  # logit clipping of the calibration: p in [EPS, 1 - EPS]
N_BINS = 10  # reliability: equal-width bins of the output p
COMMAND = "dvc repro real/dvc.yaml:release"
LOCK = "real/dvc.lock"
CARD_KEYS = ("format", "name", "task", "run", "weights_sha256", "arch", "num_params", "dataset", "training",
             "chosen_on", "threshold", "threshold_rule", "operating_point", "calibration", "test", "reliability",
             "robustness", "cross_dataset", "cross_generator", "per_source", "false_positive_rate",
             "verdict_false_positive_rate", "not_for", "licence", "provenance")
# what each task detects, for people (the card's ``task``)
TASK_TITLES = {"faceswap": "face swaps (DFDC-style)",
               "generated": "generated faces (GAN and diffusion: StyleGAN family, Stable Diffusion 2.1, SDXL, FLUX.1)"}
WEIGHTS_LICENCE = "weights: research use, non-commercial, inherits the training data's terms"
# the terms of each source folder, as distributed with it (documentation, not a choice: a new source says "unknown")
DATA_LICENCES = {
    "dfdc_faces": "research use, non-commercial (DFDC: Deepfake Detection Challenge terms of use, Meta AI / "
                  "Kaggle), as distributed with the dataset; check the source's terms",
    "stylegan_faces": "research use, non-commercial (FFHQ: CC BY-NC-SA 4.0, the photographs under their own "
                      "licences; StyleGAN images: NVIDIA Source Code License-NC, non-commercial), as distributed with "
                      "the dataset; check the source's terms",
    "generated_faces": "research use only, never redistributed (DFDC: research use; FFHQ: CC BY-NC-SA 4.0; StyleGAN "
                       "images: NVIDIA, non-commercial; SDFD; SFHQ-T2I: MIT; scraped generator sites and Unsplash "
                       "photographs as distributed in public course repositories), as the dataset's README states; "
                       "check each source's terms",
}
DATA_LICENCES["dfdc_faces_xl"] = DATA_LICENCES["dfdc_faces"]  # more images of the same DFDC identity groups
DATA_LICENCES["generated_faces_leaveout"] = DATA_LICENCES["generated_faces"]
UNKNOWN_LICENCE = "unknown: check the source's terms before any use"
# the card copies the test figures of metrics/evaluate/<run>.json: the shipped weights must give the same test AUC
# within this (float16 weights, the evaluate stage's precision), or that JSON describes another model
AUC_TOLERANCE = 0.01
# training-metric keys worth keeping in the shipped checkpoint (small scalars; the per-epoch history is dropped)
KEEP_METRICS = ("best_epoch", "best_val_auc", "best_val_acc", "select_metric", "threshold_rule", "threshold",
                "ema_decay", "epochs_run", "num_params", "train_images_per_epoch", "train_time_s",
                "test_auc_at_best_val", "test_acc_at_best_val")


class ReleaseError(UserError, ValueError):
    """A release that cannot be made from what the pipeline produced; the message names the file or run."""


# ---------------------------------------------------------------------------------------------- choosing a run

def _read_json(path: Path) -> dict:
    """The JSON object in ``path`` (``metrics_files.read_metrics_json``: missing, a folder, unreadable, empty, not
    UTF-8, truncated or invalid JSON, a list or other value are each one line naming the file and the fix), as a
    ReleaseError."""
    try:
        return read_metrics_json(path)
    except MetricsFileError as e:
        raise ReleaseError(str(e)) from None


def _auc_value(value: Any, path: Path, key: str, required: bool = False) -> float | None:
    """An AUC read from a metrics file: None (absent and not ``required``) or a finite number in [0, 1]; anything
    else (NaN, a string, a bool ...) is a ReleaseError naming the file and the key, never a run silently left out
    of the pick."""
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise ReleaseError(f"{path}: '{key}' must be a number in [0, 1], got {json.dumps(value)[:40]} (a failed or "
                           "broken run?): rerun the stage that writes it (`dvc repro real/dvc.yaml`)")
    return float(value)


def val_auc(run: str, metrics_dir: str | Path) -> float | None:
    """The run's validation AUC at its kept epoch: training's ``best_val_auc``, else the evaluate JSON's
    ``val_auc`` (the same figure, copied); None when neither has it."""
    train = Path(metrics_dir) / "train" / run / "metrics.json"
    if train.exists():
        v = _auc_value(_read_json(train).get("best_val_auc"), train, "best_val_auc")
        if v is not None:
            return v
    ev = Path(metrics_dir) / "evaluate" / f"{run}.json"
    return _auc_value(_read_json(ev).get("val_auc"), ev, "val_auc")


def candidates(runs, dataset: str, metrics_dir: str | Path) -> dict[str, float | None]:
    """{run: validation AUC} of the runs trained on ``dataset`` (the evaluate JSON's ``cross_dataset.trained_on``)."""
    out = {}
    for run in runs:
        path = Path(metrics_dir) / "evaluate" / f"{run}.json"
        cross = _read_json(path).get("cross_dataset")
        if not isinstance(cross, dict):
            raise ReleaseError(f"{path}: 'cross_dataset' must be an object naming the dataset the run trained on "
                               "('trained_on'): rerun the stage that writes it (`dvc repro real/dvc.yaml`)")
        if cross.get("trained_on") == dataset:
            out[run] = val_auc(run, metrics_dir)
    return out


def pick_run(val_aucs: dict[str, float | None]) -> str:
    """The run with the highest validation AUC (a tie: the first name in sorted order); runs without one lose."""
    scored = {r: v for r, v in val_aucs.items() if v is not None and math.isfinite(v)}
    if not scored:
        raise ReleaseError(f"no candidate run has a validation AUC (candidates: {sorted(val_aucs) or 'none'})")
    return min(scored, key=lambda r: (-scored[r], r))


# ------------------------------------------------------------------------------------------------- export

def _small(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= 200


def export_checkpoint(ckpt: Checkpoint, **changes) -> Checkpoint:
    """A copy of ``ckpt`` for shipping: floating-point weights as float16 (others as they are), metrics trimmed to
    the small scalars of ``KEEP_METRICS``; ``changes``: fields set (``task``, ``calibration``, ``output_threshold``)."""
    state = {k: (t.detach().to(torch.float16) if t.is_floating_point() else t.detach()).contiguous()
             for k, t in ckpt.state_dict.items()}
    metrics = {k: ckpt.metrics[k] for k in KEEP_METRICS if k in ckpt.metrics and _small(ckpt.metrics[k])}
    return replace(ckpt, state_dict=state, metrics=metrics, **changes)


# -------------------------------------------------------------------------------------------- calibration

def logit(p, eps: float = EPS) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def sigmoid(z) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def log_loss(y, p, eps: float = EPS) -> float:
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def fit_platt(p, y) -> dict:
    """Platt scaling fitted by maximum likelihood (no regularisation): {"method": "platt", "a", "b"}."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y, dtype=int)
    if len(set(y.tolist())) < 2:
        raise ReleaseError("calibration needs real and fake images in the fitting half of validation")
    lr = LogisticRegression(C=1e10, solver="lbfgs", max_iter=1000).fit(logit(p).reshape(-1, 1), y)
    return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}


def choose_calibration(p, y, seed: int) -> tuple[dict | None, dict]:
    """Platt fitted on a seeded, class-stratified half of (p, y) (validation scores) and kept only if it lowers the
    log-loss on the other half; (calibration or None, what was measured)."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=int)
    rng = np.random.default_rng(seed)
    fit = np.zeros(len(y), dtype=bool)
    for label in (0, 1):  # stratified: each half has both classes in the split's proportion
        idx = rng.permutation(np.flatnonzero(y == label))
        fit[idx[: len(idx) // 2]] = True
    check = ~fit
    info = {"criterion": "log-loss on the held-out half of validation", "seed": int(seed),
            "n_fit": int(fit.sum()), "n_check": int(check.sum())}
    if min(np.bincount(y[fit], minlength=2)) == 0 or min(np.bincount(y[check], minlength=2)) == 0:
        return None, {**info, "kept": False, "why": "too few validation images of a class to fit and check"}
    cal = fit_platt(p[fit], y[fit])
    kept, before, after = calibration_helps(cal, p[check], y[check])
    return (cal if kept else None), {**info, "log_loss_raw": before, "log_loss_calibrated": after,
                                     "fitted": cal, "kept": kept}


def calibration_helps(cal: dict, p, y) -> tuple[bool, float, float]:
    """(whether ``cal`` lowers the log-loss of (p, y) and is increasing, log-loss before, after): a > 0 keeps the
    ranking and, with the mapped threshold, every decision."""
    before, after = log_loss(y, p), log_loss(y, calibrate(p, cal))
    return bool(after < before and cal["a"] > 0), before, after


def map_threshold(threshold: float, calibration: dict | None) -> float:
    """The checkpoint's threshold on the output scale (through the same monotone map as the scores)."""
    return float(calibrate([threshold], calibration)[0])


# ------------------------------------------------------------------------------------------------ reliability

def reliability(y, p, n_bins: int = N_BINS) -> dict:
    """Reliability of p as P(fake): ``n_bins`` equal-width bins of p over [0, 1] (the last one closed), each with
    its mean p, fraction of fakes and count (empty bins: null means); ECE = sum over bins of n/N * |frac - mean|."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    keep = np.isfinite(p)
    y, p = y[keep], p[keep]
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        sel = idx == b
        n = int(sel.sum())
        mean_p = float(p[sel].mean()) if n else None
        frac = float(y[sel].mean()) if n else None
        if n:
            ece += n / len(p) * abs(frac - mean_p)
        bins.append({"lo": b / n_bins, "hi": (b + 1) / n_bins, "p_mean": mean_p, "frac_fake": frac, "n": n})
    return {"bins": bins, "ece": float(ece), "n": int(len(p))}


# ------------------------------------------------------------------------------------------------ scoring sets

def _sha1(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def folder_images(folder: str | Path) -> list[str]:
    files, _ = list_files(folder)
    return [str(f) for f in files if is_image_file(f)]


def false_positive_rates(scored: dict[str, np.ndarray], threshold: float) -> dict:
    """{set: {fpr, n}}: the share of real images called fake (p > threshold) in each set of reals."""
    out = {}
    for name, p in scored.items():
        p = np.asarray(p, dtype=np.float64)
        p = p[np.isfinite(p)]
        out[name] = {"fpr": float(np.mean(p > threshold)) if len(p) else None, "n": int(len(p))}
    return out


def overlaps(sets: dict[str, list[str]]) -> dict[str, list[str]]:
    """{set: the other sets that hold every one of its files (by content)}, for the sets that have such."""
    hashes = {name: {_sha1(p) for p in paths} for name, paths in sets.items()}
    out = {}
    for a in hashes:
        same = [b for b in hashes if b != a and hashes[a] and hashes[a] <= hashes[b]]
        if same:
            out[a] = same
    return out


def overlap_note(n: int, same: list[str], seen: str) -> str:
    """The note of a set of ``n`` reals found within the sets ``same``; ``seen``: the set of reals the detector was
    chosen and calibrated on (its validation reals), which such a set then is not unseen by."""
    note = f"the same {n} images as (or within) " + ", ".join(same)
    if seen in same:
        note += f"; {seen} are the images this detector was chosen and calibrated on, so not unseen by it"
    return note


# ------------------------------------------------------------------------------------------------ the card

def _round(x, nd: int = 4):
    return None if x is None else round(float(x), nd)


def dataset_summary(dataset: str, source: str, manifest: list[dict]) -> dict:
    sizes = {s: {"real": sum(r["split"] == s and r["label"] == LABELS["real"] for r in manifest),
                 "fake": sum(r["split"] == s and r["label"] == LABELS["fake"] for r in manifest)} for s in SPLITS}
    folder = Path(source).name
    return {"name": dataset, "source": folder, "sizes": sizes, "licence": DATA_LICENCES.get(folder, UNKNOWN_LICENCE)}


def not_for(card: dict) -> list[str]:
    """What the detector is not for, each with the measured figure behind it."""
    out = []
    own = card["dataset"]["source"]
    for name, a in (card.get("cross_dataset") or {}).items():
        if name != own and a is not None:
            out.append(f"other manipulation types: on {name} (test split) its AUC is {a:.3f}")
    for name, m in (card.get("cross_generator") or {}).items():
        if m.get("auc") is None or m["auc"] >= card["test"]["auc"] - 0.05:  # as good as on its own test: not a limit
            continue
        out.append(f"other generators: on {name} (evaluation only) its AUC is {m['auc']:.3f} "
                   f"[{m['auc_ci_low']:.3f}, {m['auc_ci_high']:.3f}]")
    drops = sorted(((m["drop"], name) for name, m in (card.get("robustness") or {}).items()
                    if m.get("drop") is not None and m["drop"] >= 0.02), reverse=True)
    for drop, name in drops:
        out.append(f"degraded images: {name} costs {drop:.3f} AUC")
    fprs = {k: v for k, v in card["false_positive_rate"].items() if v["fpr"] is not None and not k.startswith(own)
            and "not unseen" not in v.get("note", "")}
    if fprs:  # real photographs from elsewhere than its training data
        worst = max(fprs, key=lambda k: fprs[k]["fpr"])
        out.append(f"real photographs from other sources: {fprs[worst]['fpr']:.1%} of {worst} are called fake at the "
                   "shipped threshold")
    out.append("deciding about a person on its own: a score is evidence for review, never a verdict")
    return out


def card_markdown(card: dict) -> str:
    """The model card for people, generated from the JSON card."""
    t, ds = card["test"], card["dataset"]
    lines = [f"# Detector `{card['name']}`: {card['task']}", "",
             f"Generated by `{card['provenance']['command']}` from `{card['provenance']['lock']}` "
             f"(commit `{card['provenance']['commit']}`{', dirty' if card['provenance'].get('dirty') else ''}); "
             "do not edit: the JSON card beside this file is the source.", "",
             "| | |", "|---|---|",
             f"| run | `{card['run']}` ({card['arch']}, {card['num_params']:,} parameters) |",
             f"| trained on | {ds['source']} (dataset `{ds['name']}`): "
             + ", ".join(f"{s} {v['real']} real + {v['fake']} fake" for s, v in ds["sizes"].items()) + " |",
             f"| chosen on | {card['chosen_on']['criterion']}: "
             + ", ".join(f"`{r}` {_fmt(v)}" for r, v in card["chosen_on"]["val_auc"].items()) + " |",
             f"| test AUC [95 % CI] | **{t['auc']:.3f}** [{t['auc_ci_low']:.3f}, {t['auc_ci_high']:.3f}] "
             f"({t['n_real']} real, {t['n_fake']} fake) |",
             f"| threshold | {card['threshold']:.4f} on the output p ({card['threshold_rule']}) |",
             f"| calibration | {_calibration_text(card['calibration'])} |",
             f"| ECE (test, {N_BINS} bins) | {card['reliability']['ece']:.3f} |", ""]
    tr = card["training"]
    lines += ["## Training", "", ", ".join(f"{k}: {_fmt(v)}" for k, v in tr.items() if not isinstance(v, dict)), ""]
    lines += ["## Reliability (test split, shipped output p)", "",
              f"![reliability of {card['name']}]({card['name']}_reliability.png)", "",
              "| p bin | mean p | fraction fake | n |",
              "|---|---|---|---|"]
    lines += [f"| {b['lo']:.1f}-{b['hi']:.1f} | {_fmt(b['p_mean'])} | {_fmt(b['frac_fake'])} | {b['n']} |"
              for b in card["reliability"]["bins"]]
    lines += ["", "## Robustness (test subsample, AUC and drop from clean)", "", "| degradation | AUC | drop |",
              "|---|---|---|"]
    lines += [f"| {k} | {_fmt(v['auc'])} | {_fmt(v['drop'])} |" for k, v in card["robustness"].items()]
    lines += ["", "## Off its training distribution", "", "| set | AUC |", "|---|---|"]
    lines += [f"| {k} (test split) | {_fmt(v)} |" for k, v in card["cross_dataset"].items()]
    lines += [f"| {k} (evaluation only) | {_fmt(v['auc'])} [{_fmt(v['auc_ci_low'])}, {_fmt(v['auc_ci_high'])}] |"
              for k, v in card["cross_generator"].items()]
    lines += ["", "## False positives on real images (at the shipped threshold)", "", "| reals | FPR | n | note |",
              "|---|---|---|---|"]
    lines += [f"| {k} | {_fmt(v['fpr'], '.1%')} | {v['n']} | {v.get('note', '')} |"
              for k, v in card["false_positive_rate"].items()]
    op, ps, verdict = card.get("operating_point"), card.get("per_source"), card.get("verdict_false_positive_rate")
    if op:
        lines += ["", "## Operating point: each kind of real photo", "", op["rule"] + ".", "",
                  "| real photos | val FPR | n | test FPR | n |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {_fmt(v['fpr'], '.1%')} | {v['n']} | {_fmt(op['test'].get(k, {}).get('fpr'), '.1%')} | "
                  f"{op['test'].get(k, {}).get('n', '–')} |" for k, v in op["val"].items()]
    if ps and ps.get("fake"):
        lines += ["", "## Per generator (test split; AUC of its fakes against every real)", "",
                  "| source | generator | AUC | caught at the threshold | n |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {v['generator']} | {_fmt(v['auc'])} | {_fmt(v['tpr'], '.1%')} | {v['n']} |"
                  for k, v in ps["fake"].items()]
    if verdict:
        lines += ["", "## With every shipped detector (`deepfake-detect predict`, no --model)", "",
                  verdict["how"], "", "| real photos (test) | called fake | scored | not judged |", "|---|---|---|---|"]
        lines += [f"| {k} | {_fmt(v['fpr'], '.1%')} | {v['n']} | {v['not_judged']} |"
                  for k, v in verdict["sets"].items()]
        joint = verdict.get("joint")
        if joint:
            lines += ["", f"Operating point of both together: {joint['rule']}.", "",
                      "| real photos (validation) | called fake | scored | not judged |", "|---|---|---|---|"]
            lines += [f"| {k} | {_fmt(v['fpr'], '.1%')} | {v['n']} | {v['not_judged']} |"
                      for k, v in joint["val"].items()]
    lines += ["", "## Not for", ""] + [f"- {s}" for s in card["not_for"]]
    lines += ["", "## Licence", "", f"- {card['licence']}", f"- training data: {ds['licence']}", ""]
    return "\n".join(lines)


def _fmt(v, spec: str = ".3f") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _calibration_text(cal: dict | None) -> str:
    if cal is None:
        return "none (Platt scaling did not lower the held-out validation log-loss): the output p is the model's"
    sign = "+" if cal["b"] >= 0 else "−"
    return (f"Platt: p = sigmoid({cal['a']:.4f} · logit(p_model) {sign} {abs(cal['b']):.4f}), logit clipped at "
            f"{EPS:g} (kept: it lowered the held-out validation log-loss)")


def save_reliability_figure(path: str | Path, card: dict) -> Path:
    """A small reliability diagram of the card (fraction of fakes against mean output p per bin; marker area by
    count): a few tens of KB, shipped beside the card."""
    from matplotlib.figure import Figure

    from .io import save_figure

    bins = [b for b in card["reliability"]["bins"] if b["n"]]
    fig = Figure(figsize=(3.6, 3.2))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
    ax.plot([b["p_mean"] for b in bins], [b["frac_fake"] for b in bins], color="C0", lw=1.2)
    n = max(b["n"] for b in bins)
    ax.scatter([b["p_mean"] for b in bins], [b["frac_fake"] for b in bins], s=[10 + 90 * b["n"] / n for b in bins],
               color="C0", zorder=3, label=f"test split, ECE {card['reliability']['ece']:.3f}")
    ax.axvline(card["threshold"], color="C3", lw=1, label=f"threshold {card['threshold']:.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="output p(fake)", ylabel="fraction fake",
           title=f"{card['name']} ({card['run']})")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    fig.tight_layout()
    return save_figure(path, fig, dpi=80, metadata={"Software": None})


CODE_PATHS = (":/src", ":/stages", ":/params.yaml", ":/real/params.yaml", ":/dvc.yaml", ":/real/dvc.yaml",
              ":/pyproject.toml", ":/requirements.txt", ":(exclude,top)src/deepfake_detect/detectors")


def provenance(root: str | Path = ".") -> dict:
    """The commit the release was made from (and whether the working tree differed from it), the command, the lock."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    commit = git("rev-parse", "HEAD")
    # dirty: the code or params differ from the commit; the pipeline's own outputs (metrics, plots, locks, the
    # detectors being written), which change while it runs, do not count
    status = git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
    return {"commit": commit, "dirty": None if status is None else bool(status), "command": COMMAND, "lock": LOCK}


def build_card(task: str, run: str, ckpt: Checkpoint, evaluated: dict, train_metrics: dict, figures: dict) -> dict:
    """The model card of ``run`` shipped as ``task``. ``figures``: what the release stage measured and chose --
    ``dataset`` (``dataset_summary``), ``val_aucs``, ``threshold``, ``calibration``, ``calibration_check``,
    ``reliability``, ``fpr``, ``prov``, ``num_params`` and ``weights_sha256`` (of the shipped .pt)."""
    dataset, val_aucs, threshold = figures["dataset"], figures["val_aucs"], figures["threshold"]
    calibration, calibration_check = figures["calibration"], figures["calibration_check"]
    reliability_, fpr, prov, num_params = figures["reliability"], figures["fpr"], figures["prov"], figures["num_params"]
    weights_sha256 = figures.get("weights_sha256", "")
    m = ckpt.metrics
    panel = ((evaluated.get("robustness") or {}).get("degradations")) or {}
    names = (evaluated.get("cross_dataset") or {}).get("datasets") or {}
    cross = (evaluated.get("cross_dataset") or {}).get("auc") or {}
    training = {k: train_metrics.get(k, m.get(k)) for k in ("epochs_run", "best_epoch", "train_images_per_epoch",
                                                             "train_time_s")}
    training.update({k: m[k] for k in ("select_metric", "threshold_rule", "ema_decay") if k in m})
    training.update(image_size=ckpt.image_size, tta=ckpt.tta, pseudo_fakes=ckpt.pseudo_fakes)
    training["arch_params"] = ckpt.arch_params
    if ckpt.domain:
        training["domain"] = ckpt.domain
    rule, op = m.get("threshold_rule"), figures.get("operating_point")
    card = {
        "format": CARD_FORMAT,
        "name": task,
        "task": TASK_TITLES.get(task, task),
        "run": run,
        "weights_sha256": weights_sha256,  # of the .pt shipped beside the card: Detector.load checks it
        "arch": ckpt.arch,
        "num_params": int(num_params),
        "dataset": dataset,
        "training": training,
        "chosen_on": {"criterion": "validation AUC", "val_auc": {r: _round(v, 6) for r, v in val_aucs.items()}},
        "threshold": float(threshold),
        "threshold_rule": ((op["rule"] + ", on the calibrated output" if op else
                            f"the checkpoint's threshold {float(ckpt.threshold):.6g}"
                            + (f" (training's rule '{rule}' on the validation split)" if rule else "")
                            + (", mapped through the calibration (the same decisions)" if calibration else ""))
                           + "; fake when p > threshold"),
        "operating_point": op,
        "calibration": calibration,
        "calibration_check": calibration_check,
        "test": {k: evaluated[k] for k in ("auc", "auc_ci_low", "auc_ci_high", "n_real", "n_fake")},
        "reliability": reliability_,
        "robustness": {k: {"auc": v.get("auc"), "drop": v.get("auc_drop")} for k, v in panel.items()},
        "cross_dataset": {names.get(d, d): a for d, a in cross.items()},
        "cross_generator": {k: {x: v.get(x) for x in ("auc", "auc_ci_low", "auc_ci_high", "n_real", "n_fake")}
                            for k, v in (evaluated.get("cross_generator") or {}).items()},
        "per_source": (evaluated.get("per_source") or {}).get(ckpt.dataset),
        "false_positive_rate": fpr,
        "verdict_false_positive_rate": None,  # set by run_stage once every task's detector is out (verdict_rates)
        "licence": WEIGHTS_LICENCE,
        "provenance": prov,
    }
    card["not_for"] = not_for(card)
    return {k: card[k] for k in (*CARD_KEYS, "calibration_check")}


# ------------------------------------------------------------------------------------------------ the stage

@dataclass
class ReleaseOptions:
    """Where the release stage reads from and how it scores: the pipeline's folders, the scoring batch size and
    precision (``detector.PRECISIONS``: the evaluate stage's), the tolerance between the shipped weights' test
    AUC and the evaluate JSON the card copies, and the most the shipped .pt files may take together."""
    data_dir: str | Path = "data"
    models_dir: str | Path = "models"
    metrics_dir: str | Path = "metrics"
    batch_size: int = 64
    precision: str = "fp32"
    check_precision: str = "auto"  # the evaluate stage's (params evaluate-roc-det.precision): the test AUC check
    auc_tolerance: float = AUC_TOLERANCE
    max_total_mb: float = 25.0
    # the operating point: None keeps the checkpoint's threshold (training's rule); a number is the most any kind of
    # real photo may be called fake on validation -- the reals of the task's dataset and of ``threshold_reals``
    # (datasets), per source (sources.csv) -- the worst source sets the threshold
    max_source_fpr: float | None = None
    threshold_reals: tuple[str, ...] = ()


@dataclass
class TaskRun:
    """One release of one task: the device it scores on, the provenance its card names (``provenance()``), its raw
    scores by file content (``_score``; kept between two releases of the same task) and the lowest threshold its
    operating point may take (the joint operating point of every shipped detector, ``joint_operating_point``)."""
    device: str = "cpu"
    prov: dict | None = None
    cache: dict[str, float] = field(default_factory=dict)
    threshold_floor: float | None = None


def _score(det, paths, batch_size, desc, cache: dict[str, float] | None = None) -> np.ndarray:
    """Raw p(fake) of the shipped weights (calibration is fitted on these, then applied by ``calibrate``).
    ``cache`` ({file's sha1: p} of this ``det``): a file already scored, here or under another path (dfdc_faces_xl's
    val and test are dfdc_faces' byte copies; the leave-out layout links the same crops), is not scored again."""
    cache = {} if cache is None else cache
    keys = [_sha1(q) for q in paths]
    todo = {k: q for k, q in zip(keys, paths) if k not in cache}  # each new file once, hashed once
    print(f"release: scoring {len(todo)} image(s): {desc}"
          + (f" ({len(keys) - len(todo)} scored already)" if len(todo) < len(keys) else ""), flush=True)
    if todo:
        p, errors = det.score_paths(list(todo.values()), batch_size=batch_size, progress=False, desc=desc)
        if errors:
            raise ReleaseError(f"{len(errors)} image(s) do not decode while scoring {desc}: "
                               + "; ".join(list(errors.values())[:3]))
        cache.update(zip(todo, map(float, p)))
    return np.array([cache[k] for k in keys], dtype=float)


def reals_by_source(params: dict, name: str, rows: list[dict], split: str) -> dict[str, list[str]]:
    """{kind of real photo: paths} of the reals of ``split`` of dataset ``name`` (its manifest ``rows``): by the
    source column of the dataset folder's sources.csv, else one group named after the folder."""
    reals = [r for r in rows if r["split"] == split and r["label"] == LABELS["real"]]
    folder = Path(params["data"][name]["source"]).name
    out: dict[str, list[str]] = {}
    for r, src in zip(reals, sources_of_rows(reals, params["data"][name]["source"])):
        out.setdefault(src["source"] if src else folder, []).append(r["path"])
    return out


def operating_point(det: Detector, groups: dict[str, dict[str, list[str]]], max_fpr: float, calibration,
                    batch_size: int, cache: dict[str, float], floor: float | None = None) -> dict:
    """The threshold at which no kind of real photo of ``groups["val"]`` ({source: paths}) is called fake more
    than ``max_fpr`` of the time (sources.threshold_for_sources: the worst sets it), on the calibrated output, and
    the rate of each source of ``groups["val"]`` and ``groups["test"]`` at it. ``cache``: raw scores already made
    ({file's sha1: p}, ``_score``). ``floor``: the lowest threshold allowed (the joint operating point of every
    shipped detector together, ``joint_operating_point``), when it is above this detector's own."""
    def scores(paths, desc):
        return calibrate(_score(det, paths, batch_size, desc, cache), calibration)

    p = {split: {src: scores(paths, f"{split} reals of {src}") for src, paths in g.items()}
         for split, g in groups.items()}
    flat = [(src, x) for src, xs in p["val"].items() for x in xs]
    threshold, own = threshold_for_sources(np.array([x for _, x in flat]), [s for s, _ in flat], max_fpr)
    worst = max(own, key=own.get)
    rule = (f"the lowest threshold at which at most {max_fpr:.0%} of the validation reals of each kind of real photo "
            f"({', '.join(sorted(own))}) score above it; set by {worst}")
    if floor is not None and floor > threshold:
        rule += (f" ({threshold:.4f}), then raised to {floor:.4f} so that every shipped detector together calls at "
                 f"most {max_fpr:.0%} of each kind's validation reals fake (the joint operating point)")
        threshold, worst = float(floor), "the joint operating point"
    return {"threshold": threshold, "max_fpr": max_fpr, "set_by": worst, "rule": rule,
            **{split: {src: {"fpr": float(np.mean(xs > threshold)), "n": int(len(xs)),
                             **({"threshold_alone": _round(own[src], 6)} if split == "val" else {})}
                       for src, xs in p[split].items()} for split in p}}


def release_task(task: str, dataset: str, params: dict, reals: list[str], out_dir: str | Path,
                 options: ReleaseOptions | None = None, job: TaskRun | None = None) -> dict:
    """Pick, export, calibrate and describe the detector of ``task`` (trained on ``dataset``); writes
    ``<out_dir>/<task>.pt``, ``.json``, ``.md`` and ``_reliability.png``; returns the card. ``job``: the device,
    provenance, score cache and threshold floor of this release (``TaskRun``)."""
    o, job = options or ReleaseOptions(), job or TaskRun()
    device, prov, cache = job.device, job.prov, job.cache
    data_dir, models_dir, batch_size, auc_tolerance = o.data_dir, o.models_dir, o.batch_size, o.auc_tolerance
    out_dir, metrics_dir = Path(out_dir), Path(o.metrics_dir)
    val_aucs = candidates(params[RUNS], dataset, metrics_dir)
    if not val_aucs:
        raise ReleaseError(f"no run of '{RUNS}' was trained on dataset '{dataset}' (task {task})")
    run = pick_run(val_aucs)
    src = Path(models_dir) / f"{run}.pt"
    ckpt = read_checkpoint(src)
    num_params = sum(t.numel() for k, t in ckpt.state_dict.items() if t.is_floating_point()
                     and "running_" not in k)
    evaluated = _read_json(metrics_dir / "evaluate" / f"{run}.json")
    train_file = metrics_dir / "train" / run / "metrics.json"
    train_metrics = _read_json(train_file) if train_file.is_file() else {}
    num_params = int(train_metrics.get("num_params") or evaluated.get("num_params") or num_params)
    shipped = export_checkpoint(ckpt, task=task)
    with tempfile.TemporaryDirectory() as tmp:  # the shipped weights score everything below
        det = Detector.load(shipped.save(Path(tmp) / f"{task}.pt"), device, stage_precision(o.precision, device))

    def manifest(name):
        return read_manifest(Path(data_dir) / name / "manifest.csv")

    own = manifest(dataset)
    val = [r for r in own if r["split"] == "val"]
    # cache: {file's sha1: raw p} of det: every set below shares it (_score)
    p_val = _score(det, [r["path"] for r in val], batch_size, f"{run} on {dataset}/val", cache)
    calibration, check = choose_calibration(p_val, [r["label"] for r in val], params["seed"])
    threshold = map_threshold(ckpt.threshold, calibration)
    op = None
    if o.max_source_fpr is not None:
        groups = {split: {k: v for d in (dataset, *[t for t in o.threshold_reals if t != dataset])
                          for k, v in reals_by_source(params, d, own if d == dataset else manifest(d), split).items()}
                  for split in ("val", "test")}
        op = operating_point(det, groups, o.max_source_fpr, calibration, batch_size, cache, job.threshold_floor)
        threshold = op["threshold"]
        print(f"release: {task} threshold {threshold:.4f} ({op['rule']})")

    test = [r for r in own if r["split"] == "test"]
    y_test = np.array([r["label"] for r in test])
    p_test = _score(det, [r["path"] for r in test], batch_size, f"{run} on {dataset}/test", cache)
    out_test = calibrate(p_test, calibration)
    # the fp16 export beside the card's evaluate figure, in the evaluate stage's precision (the same numbers: a
    # bf16 evaluation and this fp32 scoring differ by more than a changed model would on a small split)
    same = det.with_options(precision=stage_precision(o.check_precision, det.device))
    p_check = p_test if same.precision == det.precision else _score(same, [r["path"] for r in test], batch_size,
                                                                     f"{run} on {dataset}/test ({same.precision})")
    check["test_auc_shipped"] = float(roc_auc(y_test, p_check))
    check["test_auc_evaluate"] = float(evaluated["auc"])
    if abs(check["test_auc_shipped"] - check["test_auc_evaluate"]) > auc_tolerance:
        where = metrics_dir / "evaluate" / f"{run}.json"
        raise ReleaseError(f"{where}: test AUC {check['test_auc_evaluate']:.4f}, but the shipped weights of {src} give "
                           f"{check['test_auc_shipped']:.4f} on the same split (more than {auc_tolerance:g} apart): "
                           f"the metrics describe another model; rerun evaluate-roc-det@{run}")

    sources = {d: Path(params["data"][d]["source"]).name for d in params["data"] if isinstance(params["data"][d], dict)}
    real_sets: dict[str, list[str]] = {}
    scores: dict[str, np.ndarray] = {}
    for name, folder in sources.items():
        if not (Path(data_dir) / name / "manifest.csv").is_file():
            continue
        label = f"{folder} test reals"
        if name == dataset:
            real_sets[label] = [r["path"] for r in test if r["label"] == LABELS["real"]]
            scores[label] = out_test[y_test == LABELS["real"]]
        else:
            rows = [r for r in manifest(name) if r["split"] == "test" and r["label"] == LABELS["real"]]
            real_sets[label] = [r["path"] for r in rows]
            scores[label] = calibrate(_score(det, real_sets[label], batch_size, f"{run} on {label}", cache),
                                      calibration)
    for folder in reals:
        label = f"{Path(folder).parent.name} reals"
        real_sets[label] = folder_images(folder)
        if not real_sets[label]:
            raise ReleaseError(f"{folder}: no images (the reals of an evaluation set)")
        scores[label] = calibrate(_score(det, real_sets[label], batch_size, f"{run} on {label}", cache),
                                  calibration)
    for name in sources:  # where the reals folders came from: the validation reals of a dataset
        if (Path(data_dir) / name / "manifest.csv").is_file():
            real_sets[f"{sources[name]} val reals"] = [r["path"] for r in manifest(name)
                                                       if r["split"] == "val" and r["label"] == LABELS["real"]]
    same = overlaps(real_sets)
    fpr = false_positive_rates(scores, threshold)
    for k in fpr:
        if k in same:
            fpr[k]["note"] = overlap_note(len(real_sets[k]), same[k], f"{sources[dataset]} val reals")

    pt = export_checkpoint(ckpt, task=task, calibration=calibration, output_threshold=threshold).save(
        out_dir / f"{task}.pt")
    card = build_card(task, run, ckpt, evaluated, train_metrics, {
        "dataset": dataset_summary(dataset, params["data"][dataset]["source"], own), "val_aucs": val_aucs,
        "threshold": threshold, "calibration": calibration, "calibration_check": check,
        "reliability": reliability(y_test, out_test), "fpr": fpr, "prov": prov or provenance(),
        "num_params": num_params, "operating_point": op, "weights_sha256": sha256_of(pt)})
    write_json(out_dir / f"{task}.json", card)
    save_reliability_figure(out_dir / f"{task}_reliability.png", card)
    write_text(out_dir / f"{task}.md", card_markdown(card))
    return card


def _predict_reals(params: dict, datasets: list[str], dets: list[Detector], split: str, device,
                   data_dir: str | Path) -> dict[str, dict]:
    """``deepfake-detect predict`` with every detector of ``dets`` (faces found once, framed per detector) on the
    reals of ``split`` of ``datasets``, per kind of real photo: {source: {"p": [pictures x detectors] (a picture's
    highest face score per detector), "not_judged": pictures with no face found or every face too small}}. A kind
    of photo in two datasets is scored once (dfdc_faces_xl's val and test are dfdc_faces')."""
    from .predict import OK, PredictOptions, score_inputs  # lazy: only the release stage's last steps need faces

    out: dict[str, dict] = {}
    for d in datasets:
        rows = read_manifest(Path(data_dir) / d / "manifest.csv")
        for src, paths in reals_by_source(params, d, rows, split).items():
            if src in out:
                continue
            print(f"release: predict with {len(dets)} detector(s) on {len(paths)} {split} reals of {src}", flush=True)
            scored = score_inputs(dets, paths, "faces", None, PredictOptions(device=str(device), precision="fp32",
                                                                             progress=False))
            judged = [x for x in scored if x.status == OK]
            out[src] = {"p": np.array([[x.p_of(k) for k in range(len(dets))] for x in judged],
                                      dtype=float).reshape(len(judged), len(dets)),
                        "not_judged": len(scored) - len(judged)}
    return out


def joint_operating_point(params: dict, datasets: list[str], out_dir: str | Path, tasks: list[str],
                          max_fpr: float, device: str = "cpu", data_dir: str | Path = "data") -> dict:
    """The thresholds at which every shipped detector running together (``predict`` with no ``--model``) calls at
    most ``max_fpr`` of the validation reals of each kind of photo fake (``sources.joint_thresholds``): each
    detector's own threshold (from ``out_dir``) is the floor, raised only as far as the union needs. Validation
    only: the test reals are scored once, at the thresholds this returns (``verdict_rates``)."""
    dets = [Detector.load(Path(out_dir) / f"{t}.pt", device, "fp32") for t in tasks]
    scored = _predict_reals(params, datasets, dets, "val", device, data_dir)
    p = np.concatenate([v["p"] for v in scored.values()]) if scored else np.zeros((0, len(dets)))
    srcs = [s for s, v in scored.items() for _ in range(len(v["p"]))]
    own = [float(det.threshold) for det in dets]
    t, rates, shares = joint_thresholds(p, srcs, max_fpr, own)
    raised = [k for k in range(len(tasks)) if t[k] > own[k]]
    rule = (f"thresholds at which every shipped detector together calls at most {max_fpr:.0%} of the validation "
            f"reals of each kind of photo ({', '.join(sorted(rates))}) fake, each detector allowed a share of that "
            "budget alone (the largest shares in total that hold) and never below its own operating point: "
            + ("; ".join(f"{tasks[k]} {own[k]:.4f} -> {t[k]:.4f} (share {shares[k]:.2f})" for k in raised)
               if raised else "no threshold had to rise"))
    return {"rule": rule, "max_fpr": max_fpr, "shares": {task: shares[k] for k, task in enumerate(tasks)},
            "thresholds": {task: float(t[k]) for k, task in enumerate(tasks)},
            "own_thresholds": {task: own[k] for k, task in enumerate(tasks)},
            "val": {s: {**rates[s], "not_judged": scored[s]["not_judged"]} for s in rates}}


def verdict_rates(params: dict, datasets: list[str], out_dir: str | Path, tasks: list[str], device: str = "cpu",
                  data_dir: str | Path = "data") -> dict:
    """How often ``deepfake-detect predict`` with every shipped detector (``tasks``, from ``out_dir``; fp32, faces
    found once and framed per detector) calls the test reals of ``datasets`` fake, per kind of real photo: a
    picture is fake when any detector fires on any face; pictures with no face large enough to judge are counted
    apart (``not_judged``)."""
    dets = [Detector.load(Path(out_dir) / f"{t}.pt", device, "fp32") for t in tasks]
    t = np.array([det.threshold for det in dets], dtype=float)
    sets = {}
    for src, v in _predict_reals(params, datasets, dets, "test", device, data_dir).items():
        fake = (v["p"] > t).any(axis=1)
        sets[src] = {"fpr": float(np.mean(fake)) if len(fake) else None, "n": int(len(fake)),
                     "not_judged": v["not_judged"]}
    return {"how": (f"`deepfake-detect predict` with {' and '.join(tasks)} (fp32) on the test reals of each kind of "
                    "photo: a picture counts as called fake when any detector fires on any face; 'not judged': no "
                    "face found, or every face too small to judge"), "sets": sets}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_inputs(params: dict, tasks: list[tuple[str, str]], reals: list[str], options: ReleaseOptions) -> None:
    """Every input of the release stage, checked before anything is scored or written: each run's evaluate JSON
    and training metrics (readable JSON objects, validation AUCs finite numbers in [0, 1], the test figures the
    card copies numbers), a candidate for each task, its checkpoint, the datasets' manifests and the reals
    folders. A problem is a ReleaseError of one line naming the file and the fix."""
    metrics_dir, data_dir = Path(options.metrics_dir), Path(options.data_dir)
    for task, dataset in tasks:
        val_aucs = candidates(params[RUNS], dataset, metrics_dir)  # every evaluate JSON read and checked
        if not val_aucs:
            raise ReleaseError(f"no run of '{RUNS}' was trained on dataset '{dataset}' (task {task})")
        run = pick_run(val_aucs)
        ev_path = metrics_dir / "evaluate" / f"{run}.json"
        evaluated = _read_json(ev_path)
        _auc_value(evaluated.get("auc"), ev_path, "auc", required=True)
        for key in ("auc_ci_low", "auc_ci_high", "n_real", "n_fake"):
            if key in evaluated and evaluated[key] is not None and not _number(evaluated[key]):
                raise ReleaseError(f"{ev_path}: '{key}' must be a number, got {json.dumps(evaluated[key])[:40]}: "
                                   "rerun the stage that writes it (`dvc repro real/dvc.yaml`)")
        for key in ("robustness", "cross_generator"):
            if evaluated.get(key) is not None and not isinstance(evaluated[key], dict):
                raise ReleaseError(f"{ev_path}: '{key}' must be an object, got {json.dumps(evaluated[key])[:40]}: "
                                   "rerun the stage that writes it (`dvc repro real/dvc.yaml`)")
        pt = Path(options.models_dir) / f"{run}.pt"
        held = read_checkpoint(pt).run
        if held != run:  # the card names the run: weights of another run under this name would be mislabelled
            raise ReleaseError(f"{pt}: holds run '{held}', not '{run}' (a copied or swapped checkpoint?); rerun "
                               f"its training stage, or restore it (dvc checkout {pt})")
        manifest = data_dir / dataset / "manifest.csv"
        if not manifest.is_file():
            raise ReleaseError(f"{manifest}: not found; the release of {task} scores the validation and test splits "
                               "of its dataset (dvc repro real/dvc.yaml:prepare-splits)")
        if not isinstance((params.get("data") or {}).get(dataset), dict):
            raise ReleaseError(f"params: 'data.{dataset}' is not set (task {task} names dataset '{dataset}')")
    for folder in reals:
        if not Path(folder).is_dir() or not folder_images(folder):
            raise ReleaseError(f"{folder}: no images (the reals of an evaluation set): put them there, or drop "
                               "the --reals option")


def _publish(staging: Path, out_dir: Path) -> None:
    """Every file made in ``staging`` moved into ``out_dir`` (each by one rename: a reader sees the old file or
    the new one)."""
    for f in sorted(staging.iterdir()):
        with output_errors(out_dir / f.name):
            os.replace(f, out_dir / f.name)


def run_stage(params: dict, tasks: list[tuple[str, str]], reals: list[str], out_dir: str | Path,
              options: ReleaseOptions | None = None) -> dict[str, dict]:
    """The release stage: every (task, dataset) of ``tasks``; fails when the shipped .pt files exceed
    ``max_total_mb`` together (a package that ships them must stay small). Every input is checked first
    (``check_inputs``), and the files are made in a scratch folder inside ``out_dir`` and moved over the shipped
    ones only when every task succeeded: a failed release leaves the package's detectors as they were (the stage's
    outs are ``persist: true``, so DVC does not delete them before the run)."""
    from .engine import resolve_device

    o = options or ReleaseOptions()
    check_inputs(params, tasks, reals, o)
    device = resolve_device(params["device"])
    prov = provenance()  # before anything is written: the commit and whether the tree differed from it
    out_dir = Path(out_dir)
    with output_errors(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".release-", dir=out_dir))
    def report(c):
        print(f"{c['name']}: run {c['run']} (val AUC {c['chosen_on']['val_auc'][c['run']]}), test AUC "
              f"{c['test']['auc']:.3f}, threshold {c['threshold']:.4f}, calibration "
              f"{'platt' if c['calibration'] else 'none'}, ECE {c['reliability']['ece']:.3f}")

    try:
        cards, runs = {}, {task: TaskRun(device, prov) for task, _ in tasks}
        for task, dataset in tasks:
            cards[task] = release_task(task, dataset, params, reals, staging, o, runs[task])
            report(cards[task])
        if len(tasks) > 1 and o.max_source_fpr is not None:  # the user's path: every detector at once
            datasets = list(dict.fromkeys([d for _, d in tasks] + list(o.threshold_reals)))
            names = [t for t, _ in tasks]
            joint = joint_operating_point(params, datasets, staging, names, o.max_source_fpr, device, o.data_dir)
            print(f"release: {joint['rule']}")
            for task, dataset in tasks:  # a raised threshold: the task released again at it (scores cached)
                if joint["thresholds"][task] > cards[task]["threshold"]:
                    runs[task].threshold_floor = joint["thresholds"][task]
                    cards[task] = release_task(task, dataset, params, reals, staging, o, runs[task])
                    report(cards[task])
            verdict = {**verdict_rates(params, datasets, staging, names, device, o.data_dir), "joint": joint}
            for task, _ in tasks:
                cards[task]["verdict_false_positive_rate"] = verdict
                write_json(staging / f"{task}.json", cards[task])
                write_text(staging / f"{task}.md", card_markdown(cards[task]))
            print("release: both detectors call fake " + ", ".join(
                f"{k} {_fmt(v['fpr'], '.1%')}" for k, v in verdict["sets"].items()) + " of the test reals")
        total = sum((staging / f"{task}.pt").stat().st_size for task, _ in tasks) / 2**20
        if total > o.max_total_mb:
            raise ReleaseError(f"{out_dir}: the shipped detectors would take {total:.1f} MB together, over the "
                               f"{o.max_total_mb:g} MB limit (--max-total-mb); pick smaller runs or raise the limit "
                               "(the shipped files were left as they were)")
        _publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cards
