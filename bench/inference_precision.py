"""Inference throughput of a Detector in fp32 and in bf16 autocast on this machine, in one run: what
``precision: auto`` (params ``evaluate-roc-det.precision``, ``--precision``) buys and what it changes.

A registry model (default ``efficientnet_lite0`` at 224 px, the fine-tunes' backbone; random weights: the cost of
the arithmetic, not the accuracy) is wrapped in a checkpoint and loaded as ``detector.Detector``; ``N`` demo-like
uint8 images (random pixels) are scored with ``Detector.score`` in batches of ``--batch-size``, timed per batch
(median of ``--steps`` after one warm-up batch). Reports images per second of each precision, their ratio and the
largest |p_bf16 - p_fp32| over the images (random labels would make an AUC delta meaningless; the tests compare
AUCs on demo data).

    python bench/inference_precision.py                    # efficientnet_lite0@224, batch 32
    python bench/inference_precision.py --smoke --out /tmp/precision.json
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deepfake_detect.checkpoint import save_checkpoint
from deepfake_detect.detector import Detector, native_bf16
from deepfake_detect.io import write_json
from deepfake_detect.models import get_model

REPO = Path(__file__).resolve().parents[1]
PARAMS = {"efficientnet_lite0": {"weights": "none", "head": "mlp"}}  # as bench/model_speed.py builds it


def timed(det: Detector, images: list[np.ndarray], batch: int, steps: int) -> tuple[float, np.ndarray]:
    """(images per second: the median batch time over ``steps`` batches after a warm-up, p of all images)."""
    det.score(images[:batch], batch)  # warm-up: kernels chosen, buffers allocated
    times = []
    for k in range(steps):
        chunk = images[(k * batch) % len(images):][:batch] or images[:batch]
        start = time.perf_counter()
        det.score(chunk, batch)
        times.append(time.perf_counter() - start)
    return batch / float(np.median(times)), det.score(images, batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_lite0", help="a registry name")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--images", type=int, default=128, help="N images scored for max |dp|")
    ap.add_argument("--steps", type=int, default=5, help="timed batches per precision (median)")
    ap.add_argument("--smoke", action="store_true", help="tiny: simplenet at 64 px, 8 images, batch 4, 1 step")
    ap.add_argument("--out", default=str(REPO / "bench/results/inference_precision.json"))
    args = ap.parse_args()
    if args.smoke:
        args.model, args.image_size, args.batch_size, args.images, args.steps = "simplenet", 64, 4, 8, 1
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8) for _ in range(args.images)]
    model = get_model(args.model, image_size=args.image_size, **PARAMS.get(args.model, {}))
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / "bench.pt", model, args.image_size, run="bench")
        rows = {}
        for precision in ("fp32", "bf16"):
            det = Detector.load(path, "cpu", precision)
            with torch.inference_mode():
                img_s, p = timed(det, images, args.batch_size, args.steps)
            rows[precision] = {"img_s": round(img_s, 2), "p": p}
            print(f"{precision}: {img_s:.1f} img/s", flush=True)
    ratio = rows["bf16"]["img_s"] / rows["fp32"]["img_s"]
    max_dp = float(np.abs(rows["bf16"]["p"] - rows["fp32"]["p"]).max())
    print(f"bf16 / fp32: {ratio:.2f}x; max |dp| {max_dp:.4f}")
    command = ("python bench/inference_precision.py" + (" --smoke" if args.smoke else
               f" --model {args.model} --image-size {args.image_size} --batch-size {args.batch_size} "
               f"--images {args.images} --steps {args.steps}"))
    write_json(args.out, {"command": command, "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "cpu_cores": os.cpu_count(), "machine": platform.processor() or platform.machine(),
                          "native_bf16": native_bf16("cpu"), "model": args.model, "image_size": args.image_size,
                          "batch_size": args.batch_size, "images": args.images, "steps": args.steps,
                          "fp32_img_s": rows["fp32"]["img_s"], "bf16_img_s": rows["bf16"]["img_s"],
                          "bf16_over_fp32": round(ratio, 3), "max_abs_dp": round(max_dp, 6)})
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
