"""Is ``Detector`` fast enough to carry training's validation? The scoring paths against the model's forward alone.

On a shipped detector (default ``faceswap``: efficientnet_lite0 at 224 px) in fp32 on the CPU, each path timed
on the same images, the paths interleaved (the order rotated every repeat), medians over ``--repeats``:

* ``forward``: the model alone on channels_last float batches of ``--batch-size``, already normalised
  (``torch.inference_mode``): ``--n`` images in ceil(n / batch) calls; the bound the others are measured against.
* ``score``: ``Detector.score`` on ``--n`` decoded 224 px uint8 H x W x 3 arrays (preprocess, batch, forward,
  calibrate), tta none, in batches of ``--batch-size``; ``score_nchw``: the same with ``channels_last=False``,
  how ``Detector.load`` scored before it fed NHWC batches (the NCHW copy and forward).
* ``predict_one`` / ``predict_both``: ``predict.predict_files`` (what ``deepfake-detect predict`` runs) with
  ``--crop whole`` on ``--files`` image files (the StyleGAN test faces of ``../shared/data/stylegan_faces/test``
  when present, else generated 256 px JPEGs), with one detector and with both shipped ones, already loaded,
  PredictOptions' defaults otherwise (batch 64, loader workers sized to the machine); a JSON output file each.

Ratios: ``score`` / ``forward`` (the issue asks >= 0.8), ``predict_one`` / ``forward`` (>= 0.7), and
``predict_both`` against the two models' forwards back to back (1 / (1/f1 + 1/f2)): pictures per second when each
picture costs one forward of each. The JSON records the load average before and after, and the threads.

    python bench/detector_speed.py --out bench/results/detector_speed.json
    python bench/detector_speed.py --smoke --out /tmp/detector_speed.json      # 8 arrays, 4 JPEGs, one repeat
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepfake_detect.data import load_rgb
from deepfake_detect.detector import SHIPPED, Detector
from deepfake_detect.io import write_json
from deepfake_detect.predict import PredictOptions, predict_files

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DFD_SHARED_DATA", REPO.parent / "shared" / "data"))
FACES = SHARED / "stylegan_faces" / "test"


def loadavg() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def face_files(n: int, tmp: Path, smoke: bool) -> tuple[list[str], str]:
    """``n`` picture files: the StyleGAN test faces (sorted, fakes and reals) when present, else JPEGs made here."""
    files = sorted(str(p) for p in FACES.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if files and not smoke:
        return files[:n], str(FACES)
    rng = np.random.default_rng(0)
    made = []
    for i in range(n):  # smooth colour fields with noise: JPEG-sized like a face picture, nothing to find
        base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        im = Image.fromarray(base).resize((256, 256), Image.BILINEAR)
        arr = np.clip(np.asarray(im, np.int16) + rng.integers(-20, 21, (256, 256, 3)), 0, 255).astype(np.uint8)
        made.append(str(tmp / f"pic{i:04d}.jpg"))
        Image.fromarray(arr).save(made[-1], quality=90)
    return made, "generated 256 px JPEGs"


def decoded_arrays(files: list[str], n: int, size: int) -> list[np.ndarray]:
    """``n`` decoded pictures at the model's size as uint8 H x W x 3 (the files' pixels, cycled)."""
    out = []
    for i in range(n):
        im = load_rgb(files[i % len(files)])
        out.append(np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.uint8))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="faceswap", help="shipped name or checkpoint path (the one-detector paths)")
    ap.add_argument("--n", type=int, default=160, help="decoded arrays for forward and score")
    ap.add_argument("--batch-size", type=int, default=32, help="forward and score batch")
    ap.add_argument("--files", type=int, default=300, help="picture files for predict")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="8 arrays, batch 4, 4 generated JPEGs, one repeat")
    ap.add_argument("--out", default=str(REPO / "bench/results/detector_speed.json"))
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.batch_size, args.files, args.repeats = 8, 4, 4, 1
    torch.manual_seed(0)
    load_before = loadavg()
    t0 = time.perf_counter()
    det = Detector.load(args.model, "cpu", "fp32", "none")
    load_s = time.perf_counter() - t0
    both = [det if n == args.model else Detector.load(n, "cpu", "fp32", "checkpoint") for n in SHIPPED]
    size = det.image_size
    tmp_ctx = tempfile.TemporaryDirectory(prefix="detector_speed_")
    tmp = Path(tmp_ctx.name)
    files, source = face_files(args.files, tmp, args.smoke)
    arrays = decoded_arrays(files, args.n, size)
    nchw = replace(det, channels_last=False)

    batches = [torch.randn(min(args.batch_size, args.n - i), 3, size, size).contiguous(
        memory_format=torch.channels_last) for i in range(0, args.n, args.batch_size)]

    def forward(model):
        def run():
            with torch.inference_mode():
                for x in batches:
                    model(x)
        return run

    calls = [0]

    def predict(dets):
        def run():
            calls[0] += 1
            out = tmp / f"predict{calls[0]}.json"
            with contextlib.redirect_stderr(io.StringIO()):  # the summary line of every call
                rows = predict_files(dets, files, out=out, options=PredictOptions(
                    device="cpu", precision="fp32", crop="whole", progress=False))
            assert len(rows) == len(files) and all(r["status"] == "ok" for r in rows), rows[:2]
        return run

    paths = {"forward": (forward(det.model), args.n), "score": (lambda: det.score(arrays, args.batch_size), args.n),
             "score_nchw": (lambda: nchw.score(arrays, args.batch_size), args.n),
             "predict_one": (predict([det]), len(files)), "predict_both": (predict(both), len(files))}
    for d in both:
        if d is not det:
            paths[f"forward_{d.name}"] = (forward(d.model), args.n)
    times: dict[str, list[float]] = {k: [] for k in paths}
    for run, _ in paths.values():  # warm-up: oneDNN primitives, the allocator, the file cache
        run()
    names = list(paths)
    for r in range(args.repeats):
        for k in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            paths[k][0]()
            times[k].append(time.perf_counter() - start)
        print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {paths[k][1] / times[k][-1]:.1f}" for k in names),
              flush=True)
    rate = {k: paths[k][1] / statistics.median(v) for k, v in times.items()}
    # the same check the fix rests on: NHWC batches give the scores of NCHW ones (fp32)
    max_dp_nchw = float(np.abs(det.score(arrays, args.batch_size) - nchw.score(arrays, args.batch_size)).max())
    fwd_both = 1.0 / sum(1.0 / rate["forward" if d is det else f"forward_{d.name}"] for d in both)
    tmp_ctx.cleanup()
    command = "python bench/detector_speed.py" + (" --smoke" if args.smoke else
                                                  f" --model {args.model} --n {args.n} --batch-size {args.batch_size}"
                                                  f" --files {args.files} --repeats {args.repeats}")
    result = {
        "command": command, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu_cores": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "loadavg_before": load_before, "loadavg_after": loadavg(),
        "model": args.model, "arch": det.ckpt.arch, "image_size": size, "precision": det.precision,
        "tta": det.tta, "channels_last": det.channels_last, "load_s": round(load_s, 2),
        "n": args.n, "batch_size": args.batch_size, "repeats": args.repeats,
        "files": len(files), "files_source": source, "predict_batch_size": PredictOptions().batch_size,
        "img_s": {k: round(v, 2) for k, v in rate.items()},
        "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "ratios": {"score_vs_forward": round(rate["score"] / rate["forward"], 3),
                   "score_nchw_vs_forward": round(rate["score_nchw"] / rate["forward"], 3),
                   "predict_one_vs_forward": round(rate["predict_one"] / rate["forward"], 3),
                   "predict_both_vs_forward_both": round(rate["predict_both"] / fwd_both, 3)},
        "forward_both_img_s": round(fwd_both, 2),
        "max_abs_dp_channels_last_vs_nchw": max_dp_nchw,
    }
    write_json(args.out, result)
    print(result["img_s"], result["ratios"], f"loadavg {load_before} -> {result['loadavg_after']}")
    print(f"-> {args.out}")
    return result


if __name__ == "__main__":
    main()
