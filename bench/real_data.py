"""The README's real-data figures: the package's trainer on the shared datasets, one command each.

    python bench/real_data.py dfdc       # SimpleNet (course recipe) vs the compact competition model, ~1 h
    python bench/real_data.py stylegan   # SimpleNet (course recipe) vs the fine-tuned pretrained backbone
    python bench/real_data.py stylegan --runs finetune --set epochs=4 backbone_lr=0.0001   # one run, changed

Each run trains with ``train.fit`` on a course-layout folder (``$DFD_SHARED_DATA``, default
``../shared/data``) in a scratch folder, keeps the checkpoint of the best **validation** accuracy,
scores it once on the test split (sklearn ROC AUC of p_fake) and merges params, test AUC, test
accuracy and train time into one JSON per dataset (runs measured earlier are kept). ``--epochs`` and
``--set KEY=VALUE`` (YAML values) change the selected runs' recipes.

Recipes: SimpleNet uses the course recipe (Adam, lr 0.001, batch 32, 5 epochs, 256 px); the other run
takes its stage's section of params.yaml with the real-data overrides below. Images whose pixels
appear in two splits are left out (``prepare-splits`` with ``on_leak: drop``; dfdc_faces has 5).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import yaml
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

# The course recipe, on top of a SimpleNet stage's section.
SIMPLENET_COURSE = dict(model="simplenet", model_params={}, image_size=256, optimizer="adam", lr=0.001, batch_size=32,
                        epochs=5, weight_decay=0.0, hflip=False, lr_scheduler="none", label_smoothing=0.0,
                        freeze_backbone_epochs=0, frozen_layers=[])
# The compact detector on dfdc_faces, on top of the train-competition section.
COMPETITION_DFDC = dict(run="competition-dfdc", image_size=224, epochs=35)
# The fine-tuned EfficientNet-Lite0 on stylegan_faces, on top of the finetune-xception section: the
# images' own 256 px (no resampling), the early blocks kept at their ImageNet weights and statistics.
FINETUNE_STYLEGAN = dict(run="finetune-stylegan", image_size=256, epochs=12, early_stopping_patience=4,
                         frozen_layers=["backbone.conv_stem", "backbone.bn1", "backbone.blocks.0", "backbone.blocks.1"])

# The other set's specialist, for the full table: the compact model on stylegan_faces (its dfdc recipe at the
# images' 256 px), the fine-tuned backbone on dfdc_faces (its stylegan recipe at the images' 224 px, 3 epochs:
# 6,300 images an epoch at ~20 img/s on 2 CPU cores).
COMPETITION_STYLEGAN = dict(COMPETITION_DFDC, run="competition-stylegan", image_size=256)
FINETUNE_DFDC = dict(FINETUNE_STYLEGAN, run="finetune-dfdc", image_size=224, epochs=3, early_stopping_patience=2)

DATASETS = {  # name: (folder, dataset slot, {run: (params section, overrides)}, report)
    "dfdc": ("dfdc_faces", "fakes", {"simplenet": ("train-simplenet-fakes", dict(SIMPLENET_COURSE, run="simplenet-dfdc")),
                                     "competition": ("train-competition", COMPETITION_DFDC),
                                     "finetune": ("finetune-xception", FINETUNE_DFDC)},
             "bench/results/competition_dfdc.json"),
    "stylegan": ("stylegan_faces", "synthetic",
                 {"simplenet": ("train-simplenet-synth", dict(SIMPLENET_COURSE, run="simplenet-stylegan")),
                  "finetune": ("finetune-xception", FINETUNE_STYLEGAN),
                  "competition": ("train-competition", COMPETITION_STYLEGAN)},
                 "bench/results/finetune_stylegan.json"),
}


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
    ap.add_argument("dataset", choices=sorted(DATASETS))
    ap.add_argument("--source", help="dataset folder (course layout); default $DFD_SHARED_DATA/<folder>")
    ap.add_argument("--params", default=str(REPO / "params.yaml"), help="base params.yaml")
    ap.add_argument("--workdir", help="scratch folder (data/ models/ metrics/); default bench-work/<dataset>")
    ap.add_argument("--out", help="JSON report (default: bench/results/<...>.json)")
    ap.add_argument("--runs", nargs="+", help="which runs (default: all of the dataset's, SimpleNet first)")
    ap.add_argument("--epochs", type=int, default=None, help="override the selected runs' epochs")
    ap.add_argument("--tag", default="", help="suffix for the runs' names and report keys (keeps earlier variants)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra overrides of the selected runs' recipes (YAML values), e.g. lr=0.003")
    args = ap.parse_args()

    folder, slot, runs, report_path = DATASETS[args.dataset]
    selected = args.runs or list(runs)
    unknown = [r for r in selected if r not in runs]
    if unknown:
        raise SystemExit(f"--runs: unknown run(s) {', '.join(unknown)} for {args.dataset} (choose from {', '.join(runs)})")
    source = Path(args.source or SHARED / folder).expanduser().resolve()
    if not source.is_dir():
        raise SystemExit(f"{source}: dataset folder not found (set --source or DFD_SHARED_DATA)")
    out = Path(args.out or REPO / report_path).resolve()
    work = Path(args.workdir or REPO / "bench-work" / args.dataset).resolve()
    work.mkdir(parents=True, exist_ok=True)
    params = load_params(args.params)
    params["device"] = "auto"
    os.chdir(work)
    manifest = work / "data" / slot / "manifest.csv"
    dropped = []
    if not manifest.exists():
        summary = prepare_dataset(slot, {**params["data"][slot], "source": str(source)}, manifest.parent,
                                  seed=params["seed"], on_leak="drop")
        dropped = [str(Path(p).relative_to(source)) for p in summary["leak_dropped"]]
        print(f"left out {len(dropped)} cross-split duplicate(s): {', '.join(dropped) or '-'}")
    device = resolve_device(params["device"])
    previous = json.loads(out.read_text()) if out.exists() else {}  # runs measured earlier are kept
    results = previous.get("runs", {})
    dropped = dropped or previous.get("left_out_duplicates", [])
    for name in selected:
        section, overrides = runs[name]
        cfg = {**params[section], **overrides, "dataset": slot, "eval_test_every_epoch": False}
        if args.epochs:
            cfg["epochs"] = args.epochs
        for kv in args.set:
            key, _, value = kv.partition("=")
            if key not in cfg:
                raise SystemExit(f"--set: unknown key '{key}' (valid: {', '.join(sorted(cfg))})")
            cfg[key] = yaml.safe_load(value)
        if args.tag:
            cfg["run"], name = f"{cfg['run']}-{args.tag}", f"{name}-{args.tag}"
        t0 = time.perf_counter()
        summary = fit(cfg, params, models_dir="models", metrics_dir="metrics/train")
        wall = time.perf_counter() - t0
        scores = test_scores(Path("models") / f"{cfg['run']}.pt", manifest, 64, device)
        results[name] = {
            "model": cfg["model"], "model_params": cfg["model_params"], "num_params": summary["num_params"],
            **scores, "test_acc_at_best_val": summary["test_acc_at_best_val"], "best_epoch": summary["best_epoch"],
            "best_val_acc": summary["best_val_acc"], "epochs_run": summary["epochs_run"],
            "train_time_s": summary["train_time_s"], "wall_time_s": round(wall, 1),
            "recipe": {k: cfg[k] for k in ("image_size", "optimizer", "lr", "backbone_lr", "weight_decay", "batch_size",
                                           "epochs", "freeze_backbone_epochs", "frozen_layers", "lr_scheduler",
                                           "early_stopping_patience", "hflip", "label_smoothing")},
        }
        print(f"{name}: {summary['num_params']:,} params, test AUC {scores['test_auc']:.4f}, "
              f"test acc {summary['test_acc_at_best_val']:.4f} (best val epoch {summary['best_epoch']}), "
              f"{summary['train_time_s']:.0f} s")
        report = {"dataset": str(source), "left_out_duplicates": dropped,
                  "device": str(device), "torch": torch.__version__,
                  "machine": f"{platform.machine()}, {os.cpu_count()} cpu", "runs": results}
        other = [r for r in results if r != "simplenet"]  # the first candidate measured against SimpleNet
        if "simplenet" in results and other:
            s, c = results["simplenet"], results[other[0]]
            report["auc_gain"] = round(c["test_auc"] - s["test_auc"], 4)
            report["param_ratio"] = round(c["num_params"] / s["num_params"], 5)
        write_json(out, report)
    print(f"-> {out}")


if __name__ == "__main__":
    main()
