"""evaluate-roc-det: every run scored on its test split (metrics, ROC/DET datapoints and figures), and the
``deepfake-detect evaluate`` (any checkpoint on any labelled folder: cross-dataset evaluation) and
``deepfake-detect predict`` (scores for any images) sub-commands.

Checkpoints carry the architecture, image size, normalisation, class order and threshold, so nothing
but the checkpoint is needed to score images. Scores are p(fake) = softmax output 1.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import log_loss
from torch.utils.data import DataLoader

from . import metrics
from .checkpoint import CheckpointError, load_model
from .config import TRAIN_STAGES
from .data import SPLITS, BadImageError, ManifestDataset, Preprocess, is_image_file, list_files, read_manifest
from .engine import default_num_workers, predict, resolve_device
from .io import check_writable, write_csv, write_json
from .plots.curves import save_run_figure, save_runs_figure, write_curve_points
from .splits import DatasetError, scan_source


class _TolerantDataset(ManifestDataset):
    """ManifestDataset that returns (x, y, index, error) instead of raising on an undecodable file."""

    def __getitem__(self, i: int):
        try:
            x, y = super().__getitem__(i)
            return x, y, i, ""
        except BadImageError as e:
            size = self.transform.image_size
            return torch.zeros(3, size, size), int(self.rows[i]["label"]), i, str(e)


class _Recorder:
    """Wraps a loader of _TolerantDataset for engine.predict: passes (x, y) on, keeps the decode errors."""

    def __init__(self, loader: DataLoader):
        self.loader, self.errors = loader, {}

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y, idx, err in self.loader:
            self.errors.update({int(i): e for i, e in zip(idx, err) if e})
            yield x, y


def score_paths(model, ckpt: dict, paths: list[str], labels: list[int] | None = None,
                device: torch.device | str = "cpu", batch_size: int = 64, num_workers: int = -1,
                progress: bool = True, desc: str = "score") -> tuple[np.ndarray, dict[int, str]]:
    """p(fake) for each image (NaN where it does not decode) and {index: error message} for those."""
    device = torch.device(device)
    labels = [0] * len(paths) if labels is None else labels
    rows = [{"path": str(p), "label": int(y)} for p, y in zip(paths, labels)]
    if not rows:
        return np.zeros(0), {}
    ds = _TolerantDataset(rows, Preprocess(ckpt["image_size"], ckpt["mean"], ckpt["std"]))
    workers = min(default_num_workers(num_workers), max(0, (len(rows) - 1) // batch_size))
    loader = _Recorder(DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                                  pin_memory=device.type == "cuda"))
    probs, _, _ = predict(model, loader, device, amp=False, desc=desc, progress=progress)
    p_fake = probs[:, 1].astype(np.float64)
    p_fake[list(loader.errors)] = np.nan
    return p_fake, loader.errors


def compute_metrics(y, p_fake, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """metrics.binary_metrics (decisions at 0.5) plus the log loss."""
    out = metrics.binary_metrics(y, p_fake, threshold=0.5, n_bootstrap=n_bootstrap, seed=seed)
    out["log_loss"] = float(log_loss(y, np.clip(p_fake, 1e-7, 1 - 1e-7), labels=[0, 1]))
    return out


def _summary_line(name: str, m: dict) -> str:
    ci = f" [{m['auc_ci_low']:.3f}, {m['auc_ci_high']:.3f}]" if np.isfinite(m["auc_ci_low"]) else ""
    return (f"{name}: AUC {m['auc']:.4f}{ci}, EER {m['eer']:.2%}, AP {m['ap']:.4f}, acc {m['acc']:.4f}, "
            f"balanced acc {m['balanced_acc']:.4f}, TPR@1%FPR {m['tpr_at_fpr_1pct']:.3f} "
            f"({m['n_real']} real / {m['n_fake']} fake)")


# --------------------------------------------------------------------------------------- the DVC stage
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


def evaluate_runs(params: dict, cfg: dict, data_dir: str | Path = "data", models_dir: str | Path = "models",
                  metrics_dir: str | Path = "metrics/evaluate", plots_dir: str | Path = "plots/evaluate",
                  progress: bool = True) -> dict[str, dict]:
    """The evaluate-roc-det stage: for each run of ``cfg['runs']``, score the test split of the dataset the
    run was trained on and write metrics/evaluate/<run>.json, plots/evaluate/{roc,det}/<run>.csv and
    plots/evaluate/figures/<run>_roc_det.png; plus figures/all_runs_roc_det.png."""
    runs = list(dict.fromkeys(cfg["runs"]))
    if not runs:
        raise ValueError("params.yaml: 'evaluate-roc-det.runs' is empty")
    paths = {run: checkpoint_path(params, run, models_dir) for run in runs}  # all missing ones fail first
    device = resolve_device(params["device"])
    plots_dir, results, scores = Path(plots_dir), {}, {}
    for run, path in paths.items():
        model, ckpt = load_model(path, device)
        dataset = ckpt.get("dataset")
        if not dataset:
            raise CheckpointError(f"{path}: checkpoint does not say which dataset it was trained on ('dataset')")
        manifest = Path(data_dir) / dataset / "manifest.csv"
        rows = read_manifest(manifest, "test")
        if not rows:
            raise DatasetError(f"{manifest}: no test rows")
        y = np.array([r["label"] for r in rows])
        p, errors = score_paths(model, ckpt, [r["path"] for r in rows], list(y), device, cfg["batch_size"],
                                progress=progress, desc=f"evaluate {run}")
        if errors:
            raise BadImageError(f"{len(errors)} test image(s) of {manifest} do not decode: "
                                + "; ".join(list(errors.values())[:5]))
        m = compute_metrics(y, p, cfg["bootstrap"], params["seed"])
        trained = ckpt.get("metrics", {})  # what training recorded: for the headline row of summarize
        m.update({k: trained.get(k) for k in ("test_acc_at_best_val", "num_params", "train_time_s")})
        write_json(Path(metrics_dir) / f"{run}.json", m)
        write_curve_points(y, p, plots_dir / "roc" / f"{run}.csv", plots_dir / "det" / f"{run}.csv")
        save_run_figure(plots_dir / "figures" / f"{run}_roc_det.png", run, y, p, subtitle=f"{dataset} test split")
        print(_summary_line(f"{run} on {dataset}/test", m))
        results[run], scores[run] = m, (y, p)
    save_runs_figure(plots_dir / "figures" / "all_runs_roc_det.png", scores)
    return results


# --------------------------------------------------------------------------------------- the CLI
def labelled_images(data: str | Path, split: str = "test") -> tuple[list[dict], list[str]]:
    """Rows {path, label} of a folder with real/ and fake/, a course-layout split folder, or a course-layout
    root (then its ``split``); plus every other entry found there, as ``path: reason`` (not an image file,
    symlink loop, permission denied ...)."""
    root = Path(data)
    if not (root / "real").is_dir() and not (root / "fake").is_dir() and (root / split).is_dir():
        root = root / split
    layout, rows, ignored, unreadable = scan_source(root)
    skipped = [f"{f}: not an image file" for f in ignored] + unreadable
    if layout == "course":
        rows = [r for r in rows if r["split"] == split]
    return rows, skipped


def evaluate_folder(model_path: str | Path, data: str | Path, split: str = "test", device: str = "auto",
                    batch_size: int = 64, n_bootstrap: int = 1000, num_workers: int = -1,
                    progress: bool = True) -> dict:
    """Score a checkpoint on a labelled folder: its metrics, ``n_skipped`` and ``skipped`` (every file in
    the folder that was not scored, as ``path: reason``)."""
    dev = resolve_device(device)
    model, ckpt = load_model(model_path, dev)
    rows, skipped = labelled_images(data, split)
    y = np.array([r["label"] for r in rows])
    p, errors = score_paths(model, ckpt, [r["path"] for r in rows], list(y), dev, batch_size, num_workers,
                            progress, desc=f"evaluate {Path(model_path).name}")
    skipped += [errors[i] for i in sorted(errors)]
    ok = np.isfinite(p)
    try:
        m = compute_metrics(y[ok], p[ok], n_bootstrap)
    except ValueError as e:  # e.g. every fake failed to decode: say which files were left out
        raise DatasetError(f"{data}: cannot evaluate ({e})"
                           + (f"; skipped {len(skipped)} file(s): " + "; ".join(skipped[:10]) if skipped else "")
                           + (" ..." if len(skipped) > 10 else "")) from e
    info = {"model": str(model_path), "run": ckpt.get("run", ""), "trained_on": ckpt.get("dataset", ""),
            "data": str(data), "image_size": ckpt["image_size"], "n_skipped": len(skipped)}
    return {**info, **m, "skipped": skipped}


def expand_paths(paths: list[str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files as given and every file under the given folders (sorted), in order; plus the entries under
    those folders that are not readable files, with the reason (``data.list_files``)."""
    files, problems = [], []
    for p in map(Path, paths):
        if p.is_dir():
            found, unreadable = list_files(p)
            files += found
            problems += unreadable
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return files, problems


def predict_files(model_path: str | Path, paths: list[str], out: str | Path | None = None,
                  cam_dir: str | Path | None = None, device: str = "auto", batch_size: int = 64,
                  num_workers: int = -1, progress: bool = True) -> list[dict]:
    """Rows {path, p_fake, label} for every file: label fake/real at the checkpoint's threshold, or
    ``skipped: <reason>`` (with empty p_fake) for non-image files, images that do not decode and entries
    that cannot be read (symlink loops, unreadable folders), which come last."""
    if out is not None:
        check_writable(out)  # before the scoring, not after it
    dev = resolve_device(device)
    model, ckpt = load_model(model_path, dev)
    files, unreadable = expand_paths(paths)
    images = [f for f in files if is_image_file(f)]
    p, errors = score_paths(model, ckpt, [str(f) for f in images], None, dev, batch_size, num_workers, progress,
                            desc=f"predict {Path(model_path).name}")
    score = {str(f): (p[i], errors.get(i)) for i, f in enumerate(images)}
    threshold = float(ckpt["threshold"])
    rows = []
    for f in files:
        if str(f) not in score:
            rows.append({"path": str(f), "p_fake": "", "label": "skipped: not an image file"})
            continue
        pf, err = score[str(f)]
        if err:
            rows.append({"path": str(f), "p_fake": "", "label": "skipped: " + err.removeprefix(f"{f}: ")})
        else:
            rows.append({"path": str(f), "p_fake": f"{pf:.6f}", "label": "fake" if pf > threshold else "real"})
    rows += [{"path": str(f), "p_fake": "", "label": f"skipped: {why}"} for f, why in unreadable]
    skipped = [r for r in rows if r["label"].startswith("skipped")]
    if skipped:
        print(f"skipped {len(skipped)} file(s):\n" + "\n".join(f"  {r['path']}: {r['label'][9:]}" for r in skipped),
              file=sys.stderr)
    if out is None:
        w = csv.DictWriter(sys.stdout, fieldnames=["path", "p_fake", "label"])
        w.writeheader()
        w.writerows(rows)
    else:
        write_csv(out, rows, ["path", "p_fake", "label"])
    n_fake = sum(r["label"] == "fake" for r in rows)
    print(f"scored {len(rows) - len(skipped)} image(s): {n_fake} fake, {len(rows) - len(skipped) - n_fake} real "
          f"(threshold {threshold:g}), {len(skipped)} skipped" + (f" -> {out}" if out else ""), file=sys.stderr)
    if cam_dir is not None:
        from .explain import write_cam_overlays  # lazy: only --cam needs Grad-CAM

        ok = [r["path"] for r in rows if not r["label"].startswith("skipped")]
        write_cam_overlays(model, ckpt, ok, cam_dir)
    return rows


def _cmd_evaluate(args) -> None:
    if args.out:
        check_writable(args.out)  # before the scoring, not after it
    m = evaluate_folder(args.model, args.data, args.split, args.device, args.batch_size, args.bootstrap,
                        args.workers, progress=not args.quiet)
    if m["skipped"]:
        print(f"skipped {m['n_skipped']} file(s):\n  " + "\n  ".join(m["skipped"]), file=sys.stderr)
    for k, v in m.items():
        if k != "skipped":
            print(f"{k:>20}: {v:.4f}" if isinstance(v, float) else f"{k:>20}: {v}")
    if args.out:
        write_json(args.out, m)
        print(f"wrote {args.out}")


def _cmd_predict(args) -> None:
    predict_files(args.model, args.paths, args.out, args.cam, args.device, args.batch_size, args.workers,
                  progress=not args.quiet)


def _int_at_least(low: int):
    """An argparse type: an integer >= ``low``; anything else is a usage error naming the option and the range."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value

    return parse


def add_cli(subparsers) -> None:
    """Register the ``evaluate`` and ``predict`` sub-commands."""
    def common(p):
        p.add_argument("--model", required=True, help="checkpoint, e.g. models/simplenet-fakes.pt")
        p.add_argument("--batch-size", type=_int_at_least(1), default=64)
        p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA when present")
        p.add_argument("--workers", type=_int_at_least(-1), default=-1,
                       help="data-loader processes (-1: sized to the machine, 0: in this process)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = subparsers.add_parser("evaluate", help="score a checkpoint on a labelled folder (AUC, EER, AP, acc ...)")
    common(p)
    p.add_argument("--data", required=True,
                   help="folder with real/ and fake/, a course-layout split folder, or a course-layout root")
    p.add_argument("--split", choices=SPLITS, default="test", help="split used when --data is a course-layout root")
    p.add_argument("--bootstrap", type=_int_at_least(0), default=1000,
                   help="resamples for the AUC 95 %% interval (0: off)")
    p.add_argument("--out", help="write the metrics to this JSON file")
    p.set_defaults(func=_cmd_evaluate)

    p = subparsers.add_parser("predict", help="p(fake) for image files or folders, as CSV")
    common(p)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    p.add_argument("--out", help="CSV path,p_fake,label (default: stdout)")
    p.add_argument("--cam", metavar="DIR", help="also write Grad-CAM overlays to DIR")
    p.set_defaults(func=_cmd_predict)
