"""What each small-data lever of a trained pipeline is worth, measured on the **validation** split.

For every checkpoint of a pipeline (default: the real one, ``real/``; ``models/*.pt``, or the runs named by
``--runs``), on the validation split of the manifest it was trained from (``data/<dataset>/manifest.csv``):

* ``tta``: validation AUC of the checkpoint scored with each test-time augmentation (``none``, ``flip``, and
  ``flip_shift`` with ``--flip-shift``), the same scoring ``deepfake-detect evaluate --tta`` does;
* ``selection``: the epoch each ``select_metric`` (acc, auc, loss) would keep, from the checkpoint's per-epoch
  history, with the validation AUC there and, where training logged it every epoch, the test AUC there
  (for the note only: nothing here is chosen on test);
* ``threshold``: validation accuracy at 0.5 and at the checkpoint's threshold (the rule training recorded).

    python bench/levers.py                          # real pipeline, needs ../shared/data (~10 min on 2 cores)
    python bench/levers.py --pipeline . --out /tmp/levers.json   # the demo, after dvc repro

Writes ``bench/results/levers.json`` (or ``--out``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from deepfake_detect import metrics
from deepfake_detect.checkpoint import load_model
from deepfake_detect.data import read_manifest
from deepfake_detect.detector import Detector
from deepfake_detect.io import write_json
from deepfake_detect.train import selection_key

REPO = Path(__file__).resolve().parents[1]


def tta_scores(model, ckpt: dict, rows: list[dict], modes: list[str]) -> dict[str, np.ndarray]:
    """Validation p(fake) under each TTA mode (the checkpoint's own among them)."""
    y = [r["label"] for r in rows]
    out = {}
    for mode in dict.fromkeys([*modes, ckpt.tta]):
        det = Detector.from_model(model, ckpt, precision="fp32", tta=mode)  # fp32: training's validation scores
        p, errors = det.score_paths([r["path"] for r in rows], y, desc=f"val tta {mode}")
        if errors:
            raise SystemExit(f"{len(errors)} validation images do not decode, e.g. {next(iter(errors.values()))}")
        out[mode] = p
    return out


def selection(history: list[dict]) -> dict[str, dict]:
    """The epoch each select_metric keeps (the trainer's own ordering), and its figures."""
    out = {}
    for metric in ("acc", "auc", "loss"):
        best = max(history, key=lambda row: selection_key(row, metric))
        out[metric] = {k: round(best[k], 4) if isinstance(best[k], float) else best[k]
                       for k in ("epoch", "val_acc", "val_auc", "val_loss", "test_auc") if k in best}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", default=str(REPO / "real"), help="folder with models/ and data/")
    ap.add_argument("--runs", nargs="+", help="runs to measure (default: every models/<run>.pt)")
    ap.add_argument("--flip-shift", action="store_true", help="also score flip_shift (10 views: slow)")
    ap.add_argument("--out", default=str(REPO / "bench/results/levers.json"))
    args = ap.parse_args()
    folder = Path(args.pipeline).resolve()
    runs = args.runs or sorted(p.stem for p in (folder / "models").glob("*.pt") if not p.name.startswith("."))
    if not runs:
        raise SystemExit(f"{folder / 'models'}: no checkpoints; train the pipeline first (dvc repro)")
    modes = ["none", "flip"] + (["flip_shift"] if args.flip_shift else [])
    report = {"pipeline": str(folder.relative_to(REPO)) if folder.is_relative_to(REPO) else str(folder), "runs": {}}
    for run in runs:
        model, ckpt = load_model(folder / "models" / f"{run}.pt")
        manifest = read_manifest(folder / "data" / ckpt.dataset / "manifest.csv")  # the splits DVC trained on
        rows = [{"path": str(folder / r["path"]), "label": int(r["label"])} for r in manifest if r["split"] == "val"]
        y = np.array([r["label"] for r in rows])
        trained = ckpt.metrics
        scores = tta_scores(model, ckpt, rows, modes)
        entry = {"checkpoint_tta": ckpt.tta,
                 "val_auc_by_tta": {m: round(metrics.auc(y, scores[m]), 4) for m in modes},
                 "selection": selection(trained.get("history", [])), "ema_decay": trained.get("ema_decay"),
                 "select_metric": trained.get("select_metric")}
        p = scores[ckpt.tta]  # as the checkpoint scores: what its threshold was chosen on
        entry["threshold"] = {"rule": trained.get("threshold_rule"), "value": round(ckpt.threshold, 4),
                              "val_acc_at_0.5": round(float(((p > 0.5) == y).mean()), 4),
                              "val_acc_at_threshold": round(float(((p > ckpt.threshold) == y).mean()), 4),
                              "val_balanced_acc_at_0.5": metrics.threshold_metrics(y, p, 0.5)["balanced_acc"],
                              "val_balanced_acc_at_threshold":
                                  metrics.threshold_metrics(y, p, ckpt.threshold)["balanced_acc"]}
        report["runs"][run] = entry
        print(run, entry, flush=True)
    write_json(args.out, report)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
