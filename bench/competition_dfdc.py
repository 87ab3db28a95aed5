"""The course competition on real data: SimpleNet (course recipe) vs the compact detector.

Trains both with the package's trainer (``train.fit``) on ``dfdc_faces`` (identity-disjoint,
course layout) in a scratch folder, selects each run's checkpoint on validation accuracy
only, then scores that checkpoint once on the test split (sklearn ROC AUC on p_fake) and
writes one JSON with params, test AUC, test accuracy at best validation and train time.

    python bench/competition_dfdc.py                       # both runs, ~1 h on 2 CPU cores
    python bench/competition_dfdc.py --runs competition    # one run (merged into the JSON)

Recipes: SimpleNet uses the course recipe (Adam, lr 0.001, batch 32, 5 epochs, 256 px);
the compact detector uses the ``train-competition`` section of params.yaml with the
real-data overrides in ``COMPETITION_DFDC`` below.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
from sklearn.metrics import roc_auc_score

from deepfake_detect.checkpoint import load_model
from deepfake_detect.config import load_params
from deepfake_detect.data import ManifestDataset, Preprocess, read_manifest
from deepfake_detect.engine import predict, resolve_device
from deepfake_detect.io import write_json
from deepfake_detect.splits import prepare_dataset
from deepfake_detect.train import fit

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DFD_SHARED_DATA", REPO.parent / "shared" / "data"))

# The course recipe, on top of the train-simplenet-fakes section.
SIMPLENET_COURSE = dict(run="simplenet-dfdc", model="simplenet", model_params={}, image_size=256, optimizer="adam",
                        lr=0.001, batch_size=32, epochs=5, weight_decay=0.0, hflip=False, lr_scheduler="none",
                        label_smoothing=0.0)
# The compact detector on real data, on top of the train-competition section.
COMPETITION_DFDC = dict(run="competition-dfdc", image_size=224, epochs=35)

RUNS = {"simplenet": ("train-simplenet-fakes", SIMPLENET_COURSE),
        "competition": ("train-competition", COMPETITION_DFDC)}


def test_scores(ckpt_path: Path, manifest: Path, batch_size: int, device: torch.device) -> dict:
    """ROC AUC and accuracy (argmax) of a checkpoint on the test split."""
    model, ckpt = load_model(ckpt_path, device)
    rows = read_manifest(manifest, "test")
    ds = ManifestDataset(rows, Preprocess(ckpt["image_size"], ckpt["mean"], ckpt["std"]))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=1)
    probs, labels, _ = predict(model, loader, device, desc="test")
    return {"test_auc": float(roc_auc_score(labels, probs[:, 1])),
            "test_acc": float((probs.argmax(1) == labels).mean()), "n_test": int(len(labels))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=str(SHARED / "dfdc_faces"), help="dataset folder (course layout)")
    ap.add_argument("--params", default=str(REPO / "params.yaml"), help="base params.yaml")
    ap.add_argument("--workdir", default="bench-work/competition_dfdc", help="scratch folder (data/ models/ metrics/)")
    ap.add_argument("--out", default="bench/results/competition_dfdc.json")
    ap.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=sorted(RUNS, reverse=True))
    ap.add_argument("--epochs", type=int, default=None, help="override the competition epochs (quick tries)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra overrides of the competition recipe (YAML values), e.g. lr=0.003")
    args = ap.parse_args()

    import yaml

    source = Path(args.source).expanduser().resolve()
    if not source.is_dir():
        raise SystemExit(f"{source}: dataset folder not found (set --source or DFD_SHARED_DATA)")
    out = Path(args.out).resolve()
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    params = load_params(args.params)
    params["device"] = "auto"
    os.chdir(work)
    manifest = work / "data" / "fakes" / "manifest.csv"
    dropped = []
    if not manifest.exists():
        # dfdc_faces holds 5 real images whose pixels also appear in a later split (DFDC reuses source
        # videos): keep only the earliest split's copy
        summary = prepare_dataset("fakes", {**params["data"]["fakes"], "source": str(source)}, manifest.parent,
                                  seed=params["seed"], on_leak="drop")
        dropped = [str(Path(p).relative_to(source)) for p in summary["leak_dropped"]]
        print(f"left out {len(dropped)} cross-split duplicate(s): {', '.join(dropped)}")
    device = resolve_device(params["device"])
    previous = {}
    if out.exists():  # runs measured earlier (same data, same code) are kept
        import json

        previous = json.loads(out.read_text())
    results = previous.get("runs", {})
    dropped = dropped or previous.get("left_out_duplicates", [])
    for name in args.runs:
        section, overrides = RUNS[name]
        cfg = {**params[section], **overrides, "dataset": "fakes", "eval_test_every_epoch": False}
        if name == "competition":
            if args.epochs:
                cfg["epochs"] = args.epochs
            for kv in args.set:
                key, _, value = kv.partition("=")
                cfg[key] = yaml.safe_load(value)
        t0 = time.perf_counter()
        summary = fit(cfg, params, models_dir="models", metrics_dir="metrics/train")
        wall = time.perf_counter() - t0
        scores = test_scores(Path("models") / f"{cfg['run']}.pt", manifest, 64, device)
        results[name] = {
            "model": cfg["model"], "model_params": cfg["model_params"], "num_params": summary["num_params"],
            **scores, "test_acc_at_best_val": summary["test_acc_at_best_val"], "best_epoch": summary["best_epoch"],
            "best_val_acc": summary["best_val_acc"], "epochs_run": summary["epochs_run"],
            "train_time_s": summary["train_time_s"], "wall_time_s": round(wall, 1),
            "recipe": {k: cfg[k] for k in ("image_size", "optimizer", "lr", "weight_decay", "batch_size", "epochs",
                                           "lr_scheduler", "hflip", "label_smoothing")},
        }
        print(f"{name}: {summary['num_params']:,} params, test AUC {scores['test_auc']:.4f}, "
              f"test acc {summary['test_acc_at_best_val']:.4f} (best val epoch {summary['best_epoch']}), "
              f"{summary['train_time_s']:.0f} s")
        report = {"dataset": str(source), "left_out_duplicates": dropped,
                  "device": str(device), "torch": torch.__version__,
                  "machine": f"{platform.machine()}, {os.cpu_count()} cpu", "runs": results}
        if {"simplenet", "competition"} <= results.keys():
            s, c = results["simplenet"], results["competition"]
            report["auc_gain"] = round(c["test_auc"] - s["test_auc"], 4)
            report["param_ratio"] = round(c["num_params"] / s["num_params"], 5)
        write_json(out, report)
    print(f"-> {out}")


if __name__ == "__main__":
    main()
