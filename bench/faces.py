"""What face detection does for predict and evaluate, measured: the detector on the shared face crops, faces
pasted into larger pictures, pictures with two faces and with none, EXIF-rotated photos, and the AUC of tight
crops with and without detection.

* ``detection``: per dataset (test split, ``--n`` images, half real, half fake): share of crops with a face at
  the detector's threshold (``faces.MIN_CONFIDENCE``) and at MTCNN's own 0.7, faces per crop, the framing the
  crops have (``faces.measure_framing``) and how many are scored as they are (``faces.regions``), seconds/image.
* ``padded``: each crop pasted at a random place into an 800x600 picture (a blurred, enlarged corner of another
  crop: no face in it). Box agreement: IoU of the box found in the picture with the box found in the crop
  (moved by the paste offset), and IoU of the square predict scores with the pasted crop. Score shift against
  the crop's own p(fake): before (the whole picture squashed, ``--crop whole``) and after (``--crop faces``),
  and how often the verdict agrees with the crop's.
* ``no_face``: the same backgrounds with nothing pasted: pictures with a detection (false positives).
* ``two_faces``: two crops side by side in one picture: how many give two rows.
* ``orientation``: crops stored rotated with EXIF orientation 6: p(fake) against the upright file, as read
  now and as the pixels were read before (orientation ignored).
* ``tight_auc``: tight face crops scored ``--crop whole`` and ``--crop faces``: stylegan_faces' whole test split
  (or ``--tight``) and the dfdc_faces sample.

The model: ``--model`` (e.g. real/models/finetune-synth.pt where the real pipeline ran); without one a frozen
EfficientNet-Lite0 feature probe is trained on stylegan_faces at 128 px for 2 short epochs (about a minute on
2 cores; into bench-work/), through the project's own trainer.

    python bench/faces.py                                # ~4 min on 2 cores, needs ../shared/data
    python bench/faces.py --model real/models/finetune-synth.pt --n 100
    python bench/faces.py --smoke --out /tmp/faces.json  # demo faces only, seconds (tests/test_bench_faces.py)

Writes ``bench/results/faces.json`` (or ``--out``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from sklearn.metrics import roc_auc_score

from deepfake_detect import faces
from deepfake_detect.checkpoint import load_model
from deepfake_detect.data import load_rgb
from deepfake_detect.detector import Detector
from deepfake_detect.io import write_json
from deepfake_detect.predict import OK, PredictOptions, labelled_images, score_inputs

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DFD_SHARED_DATA", REPO.parent / "shared" / "data"))
CANVAS = (800, 600)


def sample(root: Path, n: int, split: str = "test") -> list[dict]:
    """``n`` rows of a labelled folder, half of each class, evenly spaced in path order."""
    rows, _ = labelled_images(root, split)
    out = []
    for label in (0, 1):
        cls = sorted((r for r in rows if r["label"] == label), key=lambda r: r["path"])
        k = min(len(cls), n // 2)
        out += [cls[int(i * len(cls) / k)] for i in range(k)] if k else []
    return out


def iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def background(src: Image.Image) -> Image.Image:
    """An 800x600 picture without a face: the top-left eighth of ``src`` enlarged and blurred."""
    corner = src.crop((0, 0, src.width // 8, src.height // 8))
    return corner.resize(CANVAS, Image.BICUBIC).filter(ImageFilter.GaussianBlur(8))


def paste(face: Image.Image, bg: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, tuple[int, int]]:
    x = int(rng.integers(0, CANVAS[0] - face.width))
    y = int(rng.integers(0, CANVAS[1] - face.height))
    pic = bg.copy()
    pic.paste(face, (x, y))
    return pic, (x, y)


def _stats(v) -> dict:
    v = np.asarray(v, np.float64)
    if not len(v):
        return {"n": 0}
    return {"n": int(len(v)), "mean": round(float(v.mean()), 4), "median": round(float(np.median(v)), 4),
            "p10": round(float(np.percentile(v, 10)), 4), "p90": round(float(np.percentile(v, 90)), 4),
            "max": round(float(v.max()), 4)}


def detection(rows: list[dict], framing: faces.Framing) -> dict:
    det, loose = faces.FaceFinder(), faces.FaceFinder(min_confidence=0.7)
    t0, counts, n_loose, as_is = time.perf_counter(), [], 0, 0
    images = [load_rgb(r["path"]) for r in rows]
    for im in images:
        found = det(im)
        counts.append(len(found))
        n_loose += bool(loose(im))
        rs = faces.regions(im.size, found, framing)
        as_is += bool(rs and rs[0].whole)
    seconds = (time.perf_counter() - t0) / max(len(rows), 1) / 2
    n = len(rows)
    return {"n": n, "detection_rate": round(sum(c > 0 for c in counts) / n, 4),
            "detection_rate_at_0.7": round(n_loose / n, 4),
            "faces_per_image": {str(k): int(v) for k, v in enumerate(np.bincount(counts))},
            "scored_as_is": round(as_is / n, 4), "framing": faces.measure_framing(images, det),
            "seconds_per_image": round(seconds, 4)}


def _score(model, ckpt, paths, crop, framing) -> list:
    det = Detector.from_model(model, ckpt, precision="fp32").with_options(num_workers=0)
    return score_inputs(det, [str(p) for p in paths], crop, framing,
                        PredictOptions(device="cpu", batch_size=32, num_workers=0, progress=False))


def padded(rows: list[dict], model, ckpt, framing: faces.Framing, work: Path, seed: int = 0) -> dict:
    """Faces pasted into 800x600 pictures; the other sections' pictures are made here too."""
    rng = np.random.default_rng(seed)
    det = faces.FaceFinder()
    crops = [load_rgb(r["path"]) for r in rows]
    box_iou, crop_iou, no_face_fp = [], [], 0
    pics, bgs = [], []
    for i, face in enumerate(crops):
        bg = background(crops[(i + 1) % len(crops)])
        pic, (x, y) = paste(face, bg, rng)
        pics.append(pic.copy())
        bgs.append(bg)
        pic_path, bg_path = work / f"padded{i}.png", work / f"empty{i}.png"
        pic.save(pic_path)
        bg.save(bg_path)
        found_crop, found_pic = det(face), det(pic)
        no_face_fp += bool(det(bg))
        if found_crop and found_pic:
            b = found_crop[0].box
            box_iou.append(iou((b[0] + x, b[1] + y, b[2] + x, b[3] + y), found_pic[0].box))
            sq = faces.regions(pic.size, found_pic, framing)[0].crop
            crop_iou.append(iou(sq, (x, y, x + face.width, y + face.height)))
    out = {"n": len(rows), "box_iou": _stats(box_iou), "scored_square_iou_with_pasted_crop": _stats(crop_iou),
           "no_face": {"n": len(rows), "pictures_with_a_detection": no_face_fp}}
    if model is None:
        return out
    threshold = float(ckpt.threshold)
    own = _score(model, ckpt, [r["path"] for r in rows], "whole", framing)
    squash = _score(model, ckpt, [work / f"padded{i}.png" for i in range(len(rows))], "whole", framing)
    cropped = _score(model, ckpt, [work / f"padded{i}.png" for i in range(len(rows))], "faces", framing)
    empty = _score(model, ckpt, [work / f"empty{i}.png" for i in range(len(rows))], "faces", framing)
    pairs = [(a.p_fake, b.p_fake, c.p_fake) for a, b, c in zip(own, squash, cropped) if c.status == OK]
    p0, p_sq, p_cr = (np.array(v) for v in zip(*pairs)) if pairs else (np.zeros(0),) * 3
    out["score_shift"] = {
        "threshold": threshold, "n_scored_after": len(pairs),
        "before_whole_squash": {"abs_shift": _stats(np.abs(p_sq - p0)),
                                "verdict_agrees": int(((p_sq > threshold) == (p0 > threshold)).sum())},
        "after_detect_and_crop": {"abs_shift": _stats(np.abs(p_cr - p0)),
                                  "verdict_agrees": int(((p_cr > threshold) == (p0 > threshold)).sum())}}
    out["no_face"]["listed_as_no_face"] = sum(s.status == "no face found" for s in empty)
    # two faces side by side, each at its own size
    n_two = 0
    for i in range(0, len(crops) - 1, 2):
        a, b = crops[i], crops[i + 1]
        pic = bgs[i].copy()
        pic.paste(a, (40, (CANVAS[1] - a.height) // 2))
        pic.paste(b, (CANVAS[0] - 40 - b.width, (CANVAS[1] - b.height) // 2))
        pic.save(work / f"two{i}.png")
        n_two += 1
    rows_per_picture = [len(s.views) if s.status == OK else 0
                        for s in _score(model, ckpt, [work / f"two{i}.png" for i in range(0, 2 * n_two, 2)], "faces",
                                        framing)]
    out["two_faces"] = {"n": n_two, "pictures_with_two_rows": rows_per_picture.count(2),
                        "rows_per_picture": {str(k): rows_per_picture.count(k) for k in sorted(set(rows_per_picture))}}
    return out


def orientation(rows: list[dict], model, ckpt, framing: faces.Framing, work: Path) -> dict:
    """Upright PNG vs the same pixels stored rotated with EXIF orientation 6 (as a phone stores a portrait)."""
    up, turned, raw = [], [], []
    for i, r in enumerate(rows):
        im = load_rgb(r["path"])
        im.save(work / f"up{i}.png")
        stored = im.transpose(Image.Transpose.ROTATE_90)  # orientation 6: the viewer turns it 90 deg clockwise
        exif = Image.Exif()
        exif[0x0112] = 6
        stored.save(work / f"exif6_{i}.png", exif=exif)
        stored.save(work / f"raw{i}.png")  # the pixels as the old reader saw them
        up.append(work / f"up{i}.png")
        turned.append(work / f"exif6_{i}.png")
        raw.append(work / f"raw{i}.png")
    p_up, p_turned, p_raw = ([s.p_fake for s in _score(model, ckpt, ps, "whole", framing)] for ps in (up, turned, raw))
    return {"n": len(rows), "abs_shift_now": _stats(np.abs(np.subtract(p_turned, p_up))),
            "abs_shift_orientation_ignored": _stats(np.abs(np.subtract(p_raw, p_up)))}


def _auc(y, p) -> float | None:
    return round(float(roc_auc_score(y, p)), 4) if len(set(y)) == 2 else None  # None: one class only


def tight_auc(rows: list[dict], model, ckpt, framing: faces.Framing) -> dict:
    y = np.array([r["label"] for r in rows])
    out = {"n": len(rows)}
    for crop in ("whole", "faces"):
        s = _score(model, ckpt, [r["path"] for r in rows], crop, framing)
        ok = np.array([x.status == OK for x in s])
        p = np.array([x.p_fake if x.status == OK else np.nan for x in s])
        out[crop] = {"auc_scored": _auc(y[ok], p[ok]), "n_not_scored": int((~ok).sum())}
        if crop == "faces":
            out[crop]["scored_as_is"] = int(sum(x.status == OK and x.views[0][1] is not None
                                                and x.views[0][1][0].whole
                                                for x in s))
            # the images without a face scored whole: the AUC a user gets with --crop faces, falling back
            p_fallback = np.where(ok, p, out["p_whole"])
            out[crop]["auc_with_no_face_scored_whole"] = _auc(y, p_fallback)
        else:
            out["p_whole"] = p
    out.pop("p_whole")
    return out


def quick_probe(work: Path, source: Path) -> Path:
    """A frozen EfficientNet-Lite0 probe on ``source`` at 128 px, 2 epochs of 320 images, with the project's
    trainer (about a minute on 2 cores): a model whose scores mean something, for the score sections."""
    from deepfake_detect.config import load_params
    from deepfake_detect.splits import prepare_dataset
    from deepfake_detect.train import fit

    params = load_params(REPO / "params.yaml", {"device": "cpu", "data": {"synthetic": {"source": str(source)}},
                                                "finetune-synth": {
        "run": "faces-probe", "model": "probe", "image_size": 128, "epochs": 2, "max_steps_per_epoch": 10,
        "batch_size": 32,
        "model_params": {"backbone": "efficientnet_lite0", "weights": "packaged", "dropout": 0.2},
        "lr": 0.003, "backbone_lr": None, "freeze_backbone_epochs": 0, "frozen_layers": [], "tta": "none",
        "eval_test_every_epoch": False, "early_stopping_patience": 0}})
    cfg = params["finetune-synth"]
    ckpt = work / "models" / "faces-probe.pt"
    if not ckpt.exists():
        prepare_dataset("synthetic", params["data"]["synthetic"], work / "data" / "synthetic", progress=False)
        fit(cfg, params, data_dir=work / "data", models_dir=work / "models", metrics_dir=work / "metrics",
            cache_dir=work / "cache")
    return ckpt


def smoke_inputs(work: Path) -> tuple[list[dict], Path]:
    """Demo faces (test split) and an untrained tiny checkpoint: every section, in seconds."""
    from deepfake_detect.checkpoint import save_checkpoint
    from deepfake_detect.demo import generate_dataset
    from deepfake_detect.models import get_model

    generate_dataset(work / "demo", "fakes", n_train=2, n_val=2, n_test=9, progress=False)
    torch.manual_seed(0)
    ckpt = save_checkpoint(work / "tiny.pt", get_model("simplenet", image_size=64), 64, run="tiny")
    return sample(work / "demo", 4), ckpt


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint to score with (default: train a quick probe)")
    ap.add_argument("--n", type=int, default=200, help="images per dataset for detection (half real)")
    ap.add_argument("--n-scores", type=int, default=100, help="stylegan test images for the score sections")
    ap.add_argument("--tight", help="labelled folder for tight_auc (default: stylegan_faces, all of its test split)")
    ap.add_argument("--work", default=str(REPO / "bench-work" / "faces"))
    ap.add_argument("--smoke", action="store_true", help="demo faces and an untrained model: a quick check")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "faces.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    result: dict = {"command": "python bench/faces.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "detector": faces.DETECTOR, "min_confidence": faces.MIN_CONFIDENCE}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.smoke:
            rows, model_path = smoke_inputs(tmp)
            sets, score_rows, tight = {"demo": rows}, rows, {"demo": rows}
        else:
            sets = {name: sample(SHARED / name, args.n) for name in ("stylegan_faces", "dfdc_faces")
                    if (SHARED / name).is_dir()}
            if "stylegan_faces" not in sets:
                raise SystemExit(f"{SHARED / 'stylegan_faces'}: not found (set DFD_SHARED_DATA, or --smoke)")
            model_path = Path(args.model) if args.model else quick_probe(Path(args.work), SHARED / "stylegan_faces")
            score_rows = sample(SHARED / "stylegan_faces", args.n_scores)
            tight = {"stylegan_faces (all of test)": labelled_images(args.tight or SHARED / "stylegan_faces")[0],
                     **({"dfdc_faces": sets["dfdc_faces"]} if "dfdc_faces" in sets else {})}
        model, ckpt = load_model(model_path)
        framing = faces.Framing.of_checkpoint(ckpt)
        result.update(model=str(model_path), domain=ckpt.domain, framing_used=vars(framing))
        result["detection"] = {name: detection(rows, framing) for name, rows in sets.items()}
        result["padded"] = padded(score_rows, model, ckpt, framing, tmp)
        result["orientation"] = orientation(score_rows[:20], model, ckpt, framing, tmp)
        result["tight_auc"] = {name: tight_auc(rows, model, ckpt, framing) for name, rows in tight.items()}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(args.out, result)
    print(f"wrote {args.out} ({result['seconds']} s)")
    return result


if __name__ == "__main__":
    main()
