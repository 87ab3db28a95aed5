"""One-off CPU probe: fine-tune the real pipeline's finetune-fakes recipe for one epoch on a subset of the
dfdc_faces train reals with SBI pseudo-fakes (never a fake image), or (--control) on the same reals plus half
as many real train fakes; score the real val subset. Run from the repository root:

    python docs/_incoming/sbi_probe.py --reals 400 --val 300 [--control] [--epochs 1]
"""
import argparse
import csv
import hashlib
import random
import time
from pathlib import Path

from deepfake_detect.config import load_params
from deepfake_detect.train import fit

ap = argparse.ArgumentParser()
ap.add_argument("--root", default="../shared/data/dfdc_faces")
ap.add_argument("--reals", type=int, default=400)
ap.add_argument("--val", type=int, default=300, help="val images (2:1 real:fake, as the split)")
ap.add_argument("--epochs", type=int, default=1)
ap.add_argument("--control", action="store_true")
ap.add_argument("--out", default="/tmp/sbi_probe")
ap.add_argument("--set", default="{}", help="python dict laid over the finetune-fakes section")
a = ap.parse_args()
root, out = Path(a.root).resolve(), Path(a.out)
rows = list(csv.DictReader(open(root / "groups.csv")))
rng = random.Random(0)
pick = {}
for split, label, n in (("train", "real", a.reals), ("train", "fake", a.reals // 2 if a.control else 0),
                        ("val", "real", a.val * 2 // 3), ("val", "fake", a.val // 3),
                        ("test", "real", 20), ("test", "fake", 10)):
    pool = sorted(r["path"] for r in rows if r["split"] == split and r["label"] == label)
    pick[(split, label)] = rng.sample(pool, n)
manifest = []
for (split, label), paths in pick.items():
    for p in paths:
        manifest.append({"path": str(root / p), "label": int(label == "fake"), "split": split,
                         "sha1": hashlib.sha1((root / p).read_bytes()).hexdigest(), "group": "", "mask": "",
                         "width": 224, "height": 224})
(out / "data/fakes").mkdir(parents=True, exist_ok=True)
with open(out / "data/fakes/manifest.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(manifest[0]))
    w.writeheader()
    w.writerows(manifest)
section = {"run": "probe-control" if a.control else "probe-sbi", "pseudo_fakes": "none" if a.control else "sbi",
           "epochs": a.epochs, "freeze_backbone_epochs": 0, "lr_scheduler": "none", "ema_decay": 0.0, "tta": "none",
           "early_stopping_patience": 0, "eval_test_every_epoch": False, **eval(a.set)}
params = load_params("real/params.yaml", {"device": "cpu", "finetune-fakes": section})
t = time.perf_counter()
res = fit(params["finetune-fakes"], params, data_dir=out / "data", models_dir=out / "models",
          metrics_dir=out / "metrics", cache_dir=out / "cache", progress=False, resume=False)
print(f"{section['run']}: train images/epoch {res['train_images_per_epoch']}, best val AUC {res['best_val_auc']:.3f} "
      f"(epoch {res['best_epoch']}), {time.perf_counter() - t:.0f} s")
