"""The evaluate-roc-det stage: every run scored on its test split -> metrics/evaluate/<run>.json, ROC/DET
datapoints (plots/evaluate/{roc,det}/<run>.csv) and figures (plots/evaluate/figures/).

Checkpoints carry the architecture, image size, normalisation, class order and threshold, so nothing
but the checkpoint is needed to score images (``score.score_paths``). Scores are p(fake) = softmax output 1.
Scoring any checkpoint on any folder (cross-dataset evaluation) is ``deepfake-detect evaluate``
(``predict.evaluate_folder``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import metrics
from .checkpoint import CheckpointError, load_model
from .config import DATASETS, TRAIN_STAGES, ParamsError
from .data import BadImageError, DatasetError, read_manifest
from .engine import resolve_device
from .io import write_json
from .plots.curves import save_cross_dataset_figure, save_run_figure, save_runs_figure, write_curve_points
from .score import resolve_tta, score_paths, threshold_metrics, threshold_source

CROSS_DATASET_JSON = "cross_dataset.json"  # beside the runs' JSON: every run's test AUC on every dataset


def _summary_line(name: str, m: dict, ckpt: dict | None = None) -> str:
    ci = f" [{m['auc_ci_low']:.3f}, {m['auc_ci_high']:.3f}]" if np.isfinite(m["auc_ci_low"]) else ""
    thr = (f"; at threshold {m['threshold']:g} ({threshold_source(ckpt or {})}): acc {m['acc_at_threshold']:.4f}, "
           f"balanced acc {m['balanced_acc_at_threshold']:.4f}" if "threshold" in m else "")
    return (f"{name}: AUC {m['auc']:.4f}{ci}, EER {m['eer']:.2%}, AP {m['ap']:.4f}, TPR@1%FPR "
            f"{m['tpr_at_fpr_1pct']:.3f}; at 0.5: acc {m['acc']:.4f}, balanced acc {m['balanced_acc']:.4f}{thr} "
            f"({m['n_real']} real / {m['n_fake']} fake)")


def _producer(params: dict, run: str) -> str | None:
    return next((s for s in TRAIN_STAGES if params.get(s, {}).get("run") == run), None)


def checkpoint_path(params: dict, run: str, models_dir: str | Path = "models") -> Path:
    """models/<run>.pt, or FileNotFoundError naming it and the stage that makes it."""
    path = Path(models_dir) / f"{run}.pt"
    if not path.exists():
        stage = _producer(params, run)
        how = (f"it is made by stage '{stage}' (dvc repro {stage})" if stage else
               f"no training stage in params.yaml has 'run: {run}' (evaluate-roc-det.runs lists it)")
        raise FileNotFoundError(f"{path}: checkpoint not found; {how}")
    return path


def _test_scores(run: str, model, ckpt: dict, dataset: str, data_dir: str | Path, device, batch_size: int,
                 progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """(labels, p(fake)) of the test split of ``dataset``; every test image must decode."""
    manifest = Path(data_dir) / dataset / "manifest.csv"
    rows = read_manifest(manifest, "test")
    if not rows:
        raise DatasetError(f"{manifest}: no test rows")
    y = np.array([r["label"] for r in rows])
    p, errors = score_paths(model, ckpt, [r["path"] for r in rows], list(y), device, batch_size,
                            progress=progress, desc=f"evaluate {run} on {dataset}")
    if errors:
        raise BadImageError(f"{len(errors)} test image(s) of {manifest} do not decode: "
                            + "; ".join(list(errors.values())[:5]))
    return y, p


def _trained_on(ckpt: dict, path: Path) -> str:
    if not ckpt.get("dataset"):
        raise CheckpointError(f"{path}: checkpoint does not say which dataset it was trained on ('dataset')")
    return ckpt["dataset"]


def dataset_names(params: dict, data_dir: str | Path) -> dict[str, str]:
    """{dataset: what to call it} for every dataset with a manifest: the source folder's name, or 'demo <name>'."""
    names = {}
    for name in DATASETS:
        if (Path(data_dir) / name / "manifest.csv").is_file():
            source = params["data"][name]["source"]
            names[name] = f"demo {name}" if source == "demo" else Path(source).name
    return names


def evaluate_runs(params: dict, cfg: dict, data_dir: str | Path = "data", models_dir: str | Path = "models",
                  metrics_dir: str | Path = "metrics/evaluate", plots_dir: str | Path = "plots/evaluate",
                  progress: bool = True) -> dict[str, dict]:
    """The evaluate-roc-det stage: for each run of ``cfg['runs']``, score the test split of the dataset the
    run was trained on and write metrics/evaluate/<run>.json, plots/evaluate/{roc,det}/<run>.csv and
    plots/evaluate/figures/<run>_roc_det.png; plus figures/all_runs_roc_det.png. Every run is also scored on
    the test split of every other dataset of the pipeline (how a detector transfers):
    metrics/evaluate/cross_dataset.json and figures/cross_dataset_auc.png."""
    runs = list(dict.fromkeys(cfg["runs"]))
    if not runs:
        raise ParamsError("params.yaml: 'evaluate-roc-det.runs' is empty")
    paths = {run: checkpoint_path(params, run, models_dir) for run in runs}  # all missing ones fail first
    device = resolve_device(params["device"])
    names = dataset_names(params, data_dir)
    plots_dir, results, scores, cross = Path(plots_dir), {}, {}, {}
    for run, path in paths.items():
        model, ckpt = load_model(path, device)
        dataset = _trained_on(ckpt, path)
        tta = resolve_tta(ckpt, source=str(path))  # the checkpoint's, as deepfake-detect evaluate/predict use it
        y, p = _test_scores(run, model, ckpt, dataset, data_dir, device, cfg["batch_size"], progress)
        m = metrics.binary_metrics(y, p, threshold=0.5, n_bootstrap=cfg["bootstrap"], seed=params["seed"])
        m.update(threshold_metrics(y, p, ckpt))  # acc and balanced acc at the checkpoint's threshold too
        auc = {d: m["auc"] if d == dataset else metrics.auc(*_test_scores(run, model, ckpt, d, data_dir, device,
                                                                           cfg["batch_size"], progress))
               for d in names}
        cross[run] = {"trained_on": dataset, "auc": auc}
        trained = ckpt.get("metrics", {})  # what training recorded: for the headline row of summarize
        m.update({k: trained.get(k) for k in ("test_acc_at_best_val", "num_params", "train_time_s")})
        m["val_auc"] = trained.get("best_val_auc")  # validation AUC of the kept epoch: the val-test gap beside auc
        write_json(Path(metrics_dir) / f"{run}.json", m)
        write_curve_points(y, p, plots_dir / "roc" / f"{run}.csv", plots_dir / "det" / f"{run}.csv")
        save_run_figure(plots_dir / "figures" / f"{run}_roc_det.png", run, y, p, subtitle=f"{dataset} test split")
        print(_summary_line(f"{run} on {dataset}/test" + (f" (tta {tta})" if tta != "none" else ""), m, ckpt))
        results[run], scores[run] = m, (y, p)
    save_runs_figure(plots_dir / "figures" / "all_runs_roc_det.png", scores)
    write_json(Path(metrics_dir) / CROSS_DATASET_JSON, {"datasets": names, "runs": cross})
    save_cross_dataset_figure(plots_dir / "figures" / "cross_dataset_auc.png", cross, names)
    return results
