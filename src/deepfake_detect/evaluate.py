"""The evaluate-roc-det stage, one run at a time: the run scored on its test split ->
metrics/evaluate/<run>.json, its test scores (metrics/evaluate/scores/<run>.csv), ROC/DET datapoints
(plots/evaluate/{roc,det}/<run>.csv) and figure (plots/evaluate/figures/<run>_roc_det.png). The run is also
scored on the test split of every other dataset of the pipeline (how a detector transfers); the summarize stage
gathers those into the cross-dataset table and draws the all-runs figures from the scores.

Checkpoints carry the architecture, image size, normalisation, class order and threshold, so nothing
but the checkpoint is needed to score images (``detector.Detector``). Scores are p(fake) = softmax output 1.
Scoring any checkpoint on any folder is ``deepfake-detect evaluate`` (``predict.evaluate_folder``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import metrics, preflight, robustness, sources
from .checkpoint import run_checkpoint, trained_on
from .config import ParamsError, datasets_of, source_of
from .data import LABELS, BadImageError, DatasetError, is_image_file, list_files, read_manifest
from .detector import Detector, stage_precision
from .engine import resolve_device
from .io import write_csv, write_json
from .plots.curves import save_run_figure, write_curve_points
from .score import threshold_metrics

SCORES_FIELDS = ("label", "p_fake")  # metrics/evaluate/scores/<run>.csv: the test split, for the all-runs figure


def _summary_line(name: str, m: dict, threshold_source: str = "checkpoint") -> str:
    ci = f" [{m['auc_ci_low']:.3f}, {m['auc_ci_high']:.3f}]" if np.isfinite(m["auc_ci_low"]) else ""
    thr = (f"; at threshold {m['threshold']:g} ({threshold_source}): acc {m['acc_at_threshold']:.4f}, "
           f"balanced acc {m['balanced_acc_at_threshold']:.4f}" if "threshold" in m else "")
    return (f"{name}: AUC {m['auc']:.4f}{ci}, EER {m['eer']:.2%}, AP {m['ap']:.4f}, TPR@1%FPR "
            f"{m['tpr_at_fpr_1pct']:.3f}; at 0.5: acc {m['acc']:.4f}, balanced acc {m['balanced_acc']:.4f}{thr} "
            f"({m['n_real']} real / {m['n_fake']} fake)")


def _test_rows(dataset: str, data_dir: str | Path) -> tuple[Path, list[dict]]:
    manifest = Path(data_dir) / dataset / "manifest.csv"
    rows = read_manifest(manifest, "test")
    if not rows:
        raise DatasetError(f"{manifest}: no test rows")
    return manifest, rows


def _scored(det: Detector, rows: list[dict], what: str, batch_size: int, progress: bool,
            desc: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, p(fake)) of ``rows``; an image that does not decode stops the stage, naming ``what``."""
    y = np.array([int(r["label"]) for r in rows])
    p, errors = det.score_paths([r["path"] for r in rows], list(y), batch_size, progress=progress, desc=desc)
    if errors:
        raise BadImageError(f"{len(errors)} {what} do not decode: " + "; ".join(list(errors.values())[:5]))
    return y, p


def _at_threshold(y: np.ndarray, p: np.ndarray, threshold: float, n_of: int) -> dict:
    """FPR and TPR at the detector's threshold (fake: p > it), the counts scored and ``n_of`` (how many there
    were before a subsample)."""
    m = metrics.binary_metrics(y, p, threshold=threshold, n_bootstrap=0)
    r = robustness.rates(m)
    return {"fpr_at_threshold": r["fpr_at_threshold"], "tpr_at_threshold": r["tpr_at_threshold"],
            "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum()), "n_of": int(n_of)}


def _subsampled(rows: list[dict], cfg: dict, params: dict) -> list[dict]:
    """``rows`` cut to a seeded stratified subsample of ``cross_max_images`` (0: all of them)."""
    keep = robustness.subsample([int(r["label"]) for r in rows], cfg["cross_max_images"], params["seed"])
    return [rows[i] for i in keep]


def dataset_names(params: dict, data_dir: str | Path) -> dict[str, str]:
    """{dataset: what to call it} for every dataset with a manifest: the source folder's name, or 'demo <name>'."""
    names = {}
    for name in datasets_of(params):
        if (Path(data_dir) / name / "manifest.csv").is_file():
            source = params["data"][name]["source"]
            names[name] = f"demo {name}" if source == "demo" else Path(source).name
    return names


def run_stage(params: dict, run: str, data_dir: str | Path = "data", models_dir: str | Path = "models",
              metrics_dir: str | Path = "metrics/evaluate", plots_dir: str | Path = "plots/evaluate",
              progress: bool = True) -> dict:
    """The evaluate-roc-det stage of ``run``: models/<run>.pt scored on the whole test split of the dataset it was
    trained on (metrics at 0.5 and at the checkpoint's threshold, bootstrap AUC interval) and on the test split
    of every other dataset with a manifest (``cross_dataset``: the AUC on each, and FPR/TPR at the threshold;
    a seeded stratified subsample of ``cross_max_images`` of each other split when that is not 0)."""
    cfg = params["evaluate-roc-det"]
    # every input checked before the first image is scored: a bad folder is one line now, not after minutes
    preflight.check_evaluation_inputs(params, data_dir, run, models_dir)
    path = run_checkpoint(params, run, models_dir)
    device = resolve_device(params["device"])
    names = dataset_names(params, data_dir)
    det = Detector.load(path, device, precision=stage_precision(cfg["precision"], device))  # TTA: the checkpoint's
    dataset = trained_on(det.ckpt, path)
    manifest, rows = _test_rows(dataset, data_dir)
    y, p = _scored(det, rows, f"test image(s) of {manifest}", cfg["batch_size"], progress,
                   f"evaluate {run} on {dataset}")
    m = metrics.binary_metrics(y, p, threshold=0.5, n_bootstrap=cfg["bootstrap"], seed=params["seed"])
    m.update(threshold_metrics(y, p, det.threshold))  # acc and balanced acc at the detector's threshold too
    trained = det.ckpt.metrics  # what training recorded: for the headline row of summarize
    m.update({k: trained.get(k) for k in ("test_acc_at_best_val", "num_params", "train_time_s")})
    m["val_auc"] = trained.get("best_val_auc")  # validation AUC of the kept epoch: the val-test gap beside auc
    m["precision"] = det.precision
    auc, at, by_source = {}, {}, {}
    for d in names:
        if d == dataset:
            yd, pd, rows_d, n_of = y, p, rows, len(y)
        else:
            other, all_rows = _test_rows(d, data_dir)
            rows_d = _subsampled(all_rows, cfg, params)
            yd, pd = _scored(det, rows_d, f"test image(s) of {other}", cfg["batch_size"], progress,
                             f"evaluate {run} on {d}")
            n_of = len(all_rows)
        auc[d] = metrics.auc(yd, pd)
        at[d] = _at_threshold(yd, pd, det.threshold, n_of)
        srcs = sources.sources_of_rows(rows_d, params["data"][d]["source"])
        if any(srcs):  # a dataset of many generators and kinds of real photo: each one's AUC / FPR (sources.py)
            by_source[d] = sources.per_source(yd, pd, srcs, det.threshold)
    m["cross_dataset"] = {"trained_on": dataset, "auc": auc, "datasets": names, "at_threshold": at}
    if by_source:
        m["per_source"] = by_source
        for d, ps in by_source.items():
            print(f"  {d} per source: " + ", ".join(f"{k} AUC {v['auc']:.3f}" for k, v in ps["fake"].items()
                                                   if v["auc"] is not None)
                  + "; FPR " + ", ".join(f"{k} {v['fpr']:.1%}" for k, v in ps["real"].items()))
    if cfg["robustness"]:  # the test split again under each fixed degradation of a shared or uploaded image
        unknown = sorted(set(cfg["robustness"]) - set(robustness.PANEL))
        if unknown:
            raise ParamsError(f"{source_of(params)}: 'evaluate-roc-det.robustness' names {unknown[0]!r}, not a "
                              f"degradation (known: {', '.join(robustness.PANEL)})")
        m[robustness.PANEL_KEY] = robustness.panel(
            det, rows, robustness.PanelOptions(cfg["robustness"], cfg["bootstrap"], params["seed"],
                                               cfg["robustness_max_images"], cfg["batch_size"]),
            clean_scores=p, progress=progress)
        name, drop = robustness.worst(m[robustness.PANEL_KEY])
        print(f"{run}: robustness panel, worst AUC drop {drop:.3f} under {name}")
    for folder in cfg["cross_generator"]:  # evaluation-only sets of other generators (flat real/ + fake/)
        m.setdefault("cross_generator", {})[Path(folder).name] = _cross_generator(det, Path(folder), cfg, params,
                                                                                  progress)
    plots_dir = Path(plots_dir)
    write_json(Path(metrics_dir) / f"{run}.json", m)
    write_csv(Path(metrics_dir) / "scores" / f"{run}.csv",
              ({"label": int(label), "p_fake": f"{score:.9g}"} for label, score in zip(y, p)), SCORES_FIELDS)
    write_curve_points(y, p, plots_dir / "roc" / f"{run}.csv", plots_dir / "det" / f"{run}.csv")
    save_run_figure(plots_dir / "figures" / f"{run}_roc_det.png", run, y, p, subtitle=f"{dataset} test split")
    print(_summary_line(f"{run} on {dataset}/test" + (f" (tta {det.tta})" if det.tta != "none" else ""), m,
                        det.threshold_source))
    return m


def _cross_generator(det: Detector, root: Path, cfg: dict, params: dict, progress: bool) -> dict:
    """The run scored on an evaluation-only folder (a stratified subsample of ``cross_max_images``, 0: all):
    AUC [CI], accuracy, FPR and TPR at the detector's threshold, the counts scored and ``n_of``."""
    if not root.is_dir():
        raise DatasetError(f"{source_of(params)}: 'evaluate-roc-det.cross_generator' names {str(root)!r}, which is "
                           "not a folder (put the set there, or remove it from the list)")
    files, problems = list_files(root)
    rows = [{"path": str(f), "label": LABELS[f.relative_to(root).parts[0]]} for f in files
            if f.relative_to(root).parts[0] in LABELS and is_image_file(f)]
    odd = [str(p) for p, _ in problems] + [str(f) for f in files if str(f) not in {r["path"] for r in rows}]
    if odd or not rows:
        raise DatasetError(f"{root}: an evaluation set holds images in real/ and fake/ only; {len(odd)} other "
                           f"entries: {', '.join(odd[:5])}")
    y, p = _scored(det, _subsampled(rows, cfg, params), f"image(s) of {root}", cfg["batch_size"], progress,
                   f"evaluate on {root.name}")
    m = metrics.binary_metrics(y, p, threshold=0.5, n_bootstrap=cfg["bootstrap"], seed=params["seed"])
    m.update(threshold_metrics(y, p, det.threshold))
    print(f"  on {root.name} (evaluation only): AUC {m['auc']:.4f} [{m['auc_ci_low']:.3f}, {m['auc_ci_high']:.3f}]")
    return {**{k: m[k] for k in ("auc", "auc_ci_low", "auc_ci_high", "acc_at_threshold",
                                  "balanced_acc_at_threshold")},
            **_at_threshold(y, p, det.threshold, len(rows))}
