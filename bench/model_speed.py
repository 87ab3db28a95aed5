"""Training and scoring throughput of registry models on this machine: what a run of each costs before you add it.

Each model is built as the trainer builds it (``get_model``, channels_last), fed random batches, and timed over
``--steps`` steps after one warm-up step: a training step (forward, backward, AdamW) and an inference forward pass.
Images per second, and what one epoch over ``--images`` images would take. Random weights and inputs: the cost
of the arithmetic only (the data path is bench_train.py's business). Also the minor page faults per training step
and the share of CPU time in the kernel: where glibc hands every large activation buffer back to the kernel after
each step, the next step faults it in again, page by page; a caching allocator (jemalloc, preloaded) keeps it.
The JSON records the ``LD_PRELOAD`` it ran under.

    python bench/model_speed.py                     # npr@256, efficientnet_lite0@224, competition@224, simplenet@224
    python bench/model_speed.py --models npr@256 --steps 5 --out /tmp/speed.json
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1 \
        python bench/model_speed.py --out bench/results/model_speed_jemalloc.json
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

import torch

from deepfake_detect.io import write_json
from deepfake_detect.models import get_model, num_params

REPO = Path(__file__).resolve().parents[1]
DEFAULT = ["npr@256", "efficientnet_lite0@224", "competition@224", "simplenet@224"]
PARAMS = {"efficientnet_lite0": {"weights": "none", "head": "mlp"}}  # the fine-tunes' head; weights do not matter


def timed(step, steps: int) -> tuple[float, float, float]:
    """Per call of ``step`` (mean of ``steps`` calls, after one warm-up call): wall seconds, minor page faults,
    and the share of the process's CPU time spent in the kernel."""
    step()
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(steps):
        step()
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    sys_s, user_s = after.ru_stime - before.ru_stime, after.ru_utime - before.ru_utime
    return wall / steps, (after.ru_minflt - before.ru_minflt) / steps, sys_s / max(sys_s + user_s, 1e-9)


def measure(name: str, size: int, batch: int, steps: int) -> dict:
    model = get_model(name, image_size=size, **PARAMS.get(name, {})).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size).to(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    model.train()
    train_s, train_faults, train_sys = timed(train_step, steps)
    model.eval()
    with torch.inference_mode():
        eval_s, _, _ = timed(lambda: model(x), steps)
    return {"model": name, "image_size": size, "batch_size": batch, "num_params": num_params(model),
            "train_img_s": round(batch / train_s, 2), "eval_img_s": round(batch / eval_s, 2),
            "train_page_faults_per_step": round(train_faults), "train_kernel_share": round(train_sys, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=DEFAULT, help="NAME@SIZE (registry names)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per model and mode")
    ap.add_argument("--images", type=int, default=960, help="an epoch of this many images, for the epoch column")
    ap.add_argument("--out", default=str(REPO / "bench/results/model_speed.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for spec in args.models:
        name, _, size = spec.partition("@")
        row = measure(name, int(size or 224), args.batch_size, args.steps)
        row["train_epoch_s"] = round(args.images / row["train_img_s"], 1)
        rows.append(row)
        print(row, flush=True)
    command = (f"python bench/model_speed.py --models {' '.join(args.models)} --batch-size {args.batch_size} "
               f"--steps {args.steps} --images {args.images}")
    write_json(args.out, {"command": command, "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "cpu_cores": os.cpu_count(), "machine": platform.processor() or platform.machine(),
                          "ld_preload": os.environ.get("LD_PRELOAD", ""),
                          "malloc_conf": os.environ.get("MALLOC_CONF", ""),
                          "epoch_images": args.images, "models": rows})
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
