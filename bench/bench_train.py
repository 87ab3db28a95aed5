"""Training throughput benchmark: where does the time of a SimpleNet epoch go?

Trains the course SimpleNet (256 px, batch 32, Adam) on real JPEGs -- ``$DFD_SHARED_DATA/dfdc_faces``
(default ``../shared/data/dfdc_faces``), else the demo generator -- and measures, in one process:

(a) ``compute``   train steps / eval batches on pre-decoded tensors already in memory (the ceiling);
(b) ``ours``      the trainer's own loaders and loops (``train.make_loaders`` / ``train_one_epoch`` /
                  ``train.evaluate``) with the decoded cache, plus one variant per lever;
(c) ``course``    the course-style loop: PIL decode + Resize/ToTensor/Normalize in the training
                  process, ``num_workers=0``, validation and test re-evaluated every epoch.

Every loop runs a bounded number of steps; a full dfdc epoch (train + validation, + test for the
course) is computed from the measured rates. Then, in subprocesses: the trainer's peak RSS on a
small and on the full manifest (memory flat as the dataset grows), and the time of a whole demo
``dvc repro`` and of its no-op rerun in a temporary copy of the repository (``--skip-repro``).

    python bench/bench_train.py --skip-repro --levers none --steps 16 --repeats 6 --out bench/results-cpu-quiet.json
    python bench/bench_train.py --out bench/results-cpu.json    # + every lever, peak RSS and a whole dvc repro
    python bench/bench_train.py --smoke --out /tmp/bench.json   # seconds, on generated data: proves it runs
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from deepfake_detect.config import load_params, rename_run
from deepfake_detect.data import Preprocess, build_decoded_cache, load_rgb, scan_source
from deepfake_detect.engine import cpu_cores, grad_scaler, resolve_device, seed_everything
from deepfake_detect.models import get_model
from deepfake_detect.train import Trainer, evaluate, make_loaders, make_optimizer, train_one_epoch

REPO = Path(__file__).resolve().parents[1]


def find_data(arg: str | None, tmp: Path, smoke: bool = False) -> tuple[Path, str]:
    if arg:
        return Path(arg), Path(arg).name
    shared = Path(os.environ.get("DFD_SHARED_DATA", REPO.parent / "shared" / "data")) / "dfdc_faces"
    if shared.is_dir() and not smoke:
        return shared, "dfdc_faces"
    from deepfake_detect.demo import DemoOptions, generate_dataset

    n, size = (48, 64) if smoke else (480, 256)
    generate_dataset(tmp / "demo", kind="fakes", n_train=n, n_val=n // 3, n_test=n // 3,
                     options=DemoOptions(image_size=size, seed=0),
                     progress=False)
    return tmp / "demo", "demo-fakes"


def subset(rows: list[dict], split: str, n: int, seed: int = 0) -> list[dict]:
    """n rows of a split, both classes, fixed choice."""
    split_rows = [r for r in rows if r["split"] == split]
    idx = np.random.default_rng(seed).permutation(len(split_rows))[:n]
    return [split_rows[i] for i in sorted(idx)]


def section(**kw) -> dict:
    params = rename_run(load_params(REPO / "params.yaml", {"device": kw.pop("device", "auto"),
                                                           "simplenet-fakes": kw}), "simplenet-fakes", "bench")
    return params, params["bench"]


class Timer:
    def __init__(self, device):
        self.device = device

    def __enter__(self):
        self._sync()
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self._sync()
        self.s = time.perf_counter() - self.t

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()


# ------------------------------------------------------------------ (a) pure compute

def bench_compute(cfg, device, x_u8: torch.Tensor, y: torch.Tensor, steps: int, channels_last: bool) -> dict:
    seed_everything(0)
    model = get_model("simplenet", image_size=cfg["image_size"]).to(device)
    prep = Preprocess(cfg["image_size"], model.mean, model.std)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = prep.normalise(x_u8).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = y.to(device)
    opt = make_optimizer(model, cfg)
    b = cfg["batch_size"]
    from deepfake_detect.engine import autocast

    def step(i):
        xb, yb = x[i * b % len(x):][:b], y[i * b % len(y):][:b]
        with autocast(device, cfg["amp"]):
            loss = F.cross_entropy(model(xb).float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    step(steps)  # warm-up, on the batch the timed steps do not use
    with Timer(device) as t:
        for i in range(steps):
            step(i)
    model.eval()
    with torch.inference_mode(), autocast(device, cfg["amp"]):
        model(x[steps * b:][:b])
        with Timer(device) as te:
            for i in range(steps):
                model(x[i * b % len(x):][:b])
    return {"train_img_s": steps * b / t.s, "eval_img_s": steps * b / te.s}


# ------------------------------------------------------------------ (b) our data path

def bench_ours(cfg, params, device, rows_train, rows_val, cache_dir, steps) -> dict:
    seed_everything(0)
    model = get_model("simplenet", image_size=cfg["image_size"]).to(device)
    if cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    run_model = torch.compile(model) if cfg["compile"] else model
    rows = [dict(r, split="train") for r in rows_train] + [dict(r, split="val") for r in rows_val] \
        + [dict(r, split="test") for r in rows_val[:1]]
    loaders = make_loaders(cfg, rows, model, params["seed"], device, cache_dir, progress=False)
    opt, scaler = make_optimizer(model, cfg), grad_scaler(device, cfg["amp"])
    t = Trainer(cfg, model, loaders, opt, scaler, device, run_model, progress=False).with_scorer(run_model)
    train_one_epoch(dataclasses.replace(t, cfg=dict(cfg, max_steps_per_epoch=1)), 1)  # warm-up
    with Timer(device) as tt:
        train_one_epoch(dataclasses.replace(t, cfg=dict(cfg, max_steps_per_epoch=steps)), 2)
    evaluate(t, "val", "val")  # warm-up, as (a) and (c) have
    with Timer(device) as te:
        evaluate(t, "val", "val")
    n_train = min(steps, len(loaders["train"])) * cfg["batch_size"]
    # profile: the data path alone (read, stack, to the device, normalise) for the same training batches
    from deepfake_detect.engine import InputBuffer, to_device

    loader, buffer = loaders["train"], InputBuffer() if device.type == "cpu" else None
    with Timer(device) as td:
        for i, (x, _) in enumerate(loader):
            if i >= steps:
                break
            to_device(x, device, cfg["channels_last"], loader.dataset.transform.normalise, buffer)
    del loaders
    return {"train_img_s": n_train / tt.s, "eval_img_s": len(rows_val) / te.s,
            "data_ms_per_batch": 1000 * td.s / min(steps, len(loader)),
            "step_ms": 1000 * tt.s / min(steps, len(loader))}


# ------------------------------------------------------------------ (c) course loop

def bench_course(cfg, device, rows_train, rows_val, steps) -> dict:
    """The course notebook's loop: ImageFolder-style PIL loading, torchvision transforms, 0 workers."""
    import torchvision.transforms as T

    seed_everything(0)
    model = get_model("simplenet", image_size=cfg["image_size"]).to(device)
    tf = T.Compose([T.Resize((cfg["image_size"], cfg["image_size"])), T.ToTensor(), T.Normalize(model.mean, model.std)])

    class Folder(torch.utils.data.Dataset):
        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return tf(Image.open(self.rows[i]["path"]).convert("RGB")), self.rows[i]["label"]

    train = torch.utils.data.DataLoader(Folder(rows_train), batch_size=cfg["batch_size"], shuffle=True, num_workers=0)
    val = torch.utils.data.DataLoader(Folder(rows_val), batch_size=cfg["batch_size"], num_workers=0)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    model.train()

    def run(n):
        for i, (x, y) in enumerate(train):
            if i >= n:
                break
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    run(1)
    with Timer(device) as t:
        run(steps)
    model.eval()
    with torch.no_grad():
        model(next(iter(val))[0].to(device))  # warm-up, as (a) and (b) have
        with Timer(device) as te:
            for x, y in val:
                model(x.to(device))
    return {"train_img_s": min(steps, len(train)) * cfg["batch_size"] / t.s, "eval_img_s": len(rows_val) / te.s}


# ------------------------------------------------------------------ subprocess measurements

RSS_SCRIPT = r'''
import json, resource, sys, time
from pathlib import Path
from deepfake_detect.config import load_params, rename_run
from deepfake_detect.train import fit
data, out, cache, size, steps = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
params = rename_run(load_params(sys.argv[6], {"simplenet-fakes": {"image_size": size, "epochs": 1,
                    "max_steps_per_epoch": steps, "eval_test_every_epoch": False}}), "simplenet-fakes", "rss")
t = time.perf_counter()
fit(params["rss"], params, data_dir=data, models_dir=out / "models",
    metrics_dir=out / "metrics", cache_dir=cache, progress=False)
# VmHWM: this process's own peak (ru_maxrss would include the parent's peak, inherited across exec);
# the loader runs in-process on CPU (0 workers), so it is all of the trainer's memory
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")][0].split()[1]
print("RESULT", json.dumps({"peak_rss_mb": int(hwm) / 1024, "wall_s": time.perf_counter() - t}))
'''


def write_manifest(rows: list[dict], path: Path) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "split", "sha1", "group", "mask", "width", "height"])
        w.writeheader()
        w.writerows({k: r.get(k, "") for k in w.fieldnames} for r in rows)


def bench_rss(rows: list[dict], tmp: Path, size: int, steps: int, parts=(("eighth", 8), ("full", 1))) -> dict:
    """Peak RSS of a real ``fit`` (1 epoch of ``steps`` steps + full val + test) at 1/8 and all of the data."""
    out = {}
    for name, frac in parts:
        part = [r for key in dict.fromkeys((r["split"], r["label"]) for r in rows)  # both classes in every split
                for i, r in enumerate([r for r in rows if (r["split"], r["label"]) == key]) if i % frac == 0]
        data = tmp / f"rss-{name}" / "data"
        write_manifest(part, data / "fakes" / "manifest.csv")
        proc = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(data), str(tmp / f"rss-{name}"),
                               str(tmp / "rss-cache"), str(size), str(steps), str(REPO / "params.yaml")],
                              capture_output=True, text=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
        if proc.returncode or not line:  # a benchmark that cannot measure says so, never a partial JSON
            raise SystemExit(f"peak-RSS run on {name} of the data failed:\n{(proc.stdout + proc.stderr)[-1500:]}")
        out[name] = {"images": len(part), **json.loads(line[0][7:])}
    return out


def bench_repro(tmp: Path) -> dict:
    """A whole demo ``dvc repro`` in a temporary copy of the repository, then a no-op rerun."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    work = tmp / "repo"
    for f in filter(None, files):
        if (REPO / f).is_file():
            (work / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, work / f)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "bench copy"]):  # dvclive wants a commit
        subprocess.run(git + cmd, cwd=work, check=True, capture_output=True)
    env = dict(os.environ, DFD_CACHE_DIR=str(tmp / "repro-cache"), PYTHONPATH=str(work / "src"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    dvc = [str(Path(sys.executable).with_name("dvc"))]
    out = {}
    for name in ("repro_s", "noop_rerun_s"):
        t = time.perf_counter()
        proc = subprocess.run(dvc + ["repro"], cwd=work, env=env, capture_output=True, text=True)
        out[name] = round(time.perf_counter() - t, 1)
        if proc.returncode:
            raise SystemExit(f"dvc repro in {work} failed:\n{(proc.stdout + proc.stderr)[-1500:]}")
    return out


# ------------------------------------------------------------------ main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="course-layout dataset (default: dfdc_faces under $DFD_SHARED_DATA, else demo)")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=12, help="timed training steps per loop")
    ap.add_argument("--repeats", type=int, default=5,
                    help="rounds of (a) and (b): the best of each, and the median of the paired ratios")
    ap.add_argument("--epochs", type=int, default=5, help="epochs per run, to amortise the one-off cache build")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--levers", default="all", help="comma list of lever variants to run, or all / none")
    ap.add_argument("--skip-repro", action="store_true", help="skip the whole-pipeline dvc repro timing")
    ap.add_argument("--skip-rss", action="store_true", help="skip the peak-RSS subprocess runs")
    ap.add_argument("--split-sizes", help="train,val,test sizes for the full-epoch figures (default: the data's)")
    ap.add_argument("--out", default="bench/results.json")
    ap.add_argument("--smoke", action="store_true",
                    help="a run that only proves the benchmark works: generated 64 px demo data, batch 8, 2 steps, "
                         "2 rounds, every lever, one peak-RSS run; no dvc repro (the test suite runs it)")
    args = ap.parse_args()
    if args.smoke:
        args.image_size, args.batch_size, args.steps, args.repeats, args.epochs = 64, 8, 2, 2, 1
        args.skip_repro = True

    device = resolve_device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="dfd-bench-"))
    cache_dir = tmp / "cache"
    try:
        root, name = find_data(args.data, tmp, args.smoke)
        _, rows, _, _ = scan_source(root)
        for r in rows:  # the cache key wants a content id; the file's size and mtime stand in for the pixel hash
            st = os.stat(r["path"])
            r["sha1"] = f"{st.st_size}-{st.st_mtime_ns}"
        counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
        if args.split_sizes:
            counts = dict(zip(("train", "val", "test"), map(int, args.split_sizes.split(","))))
        b, steps = args.batch_size, args.steps
        rows_train = subset(rows, "train", b * (steps + 1))
        rows_val = subset(rows, "val", b * steps)
        params, cfg = section(device=args.device, image_size=args.image_size, batch_size=b)
        report = {"command": "python " + " ".join([sys.argv[0].replace(str(REPO) + "/", "")] + sys.argv[1:]),
                  "device": str(device), "torch": torch.__version__, "cpu_cores": cpu_cores(),
                  "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                  "load_avg_start": os.getloadavg(), "data": name, "split_sizes": counts,
                  "image_size": args.image_size, "batch_size": b, "steps": steps}
        print(f"bench on {device}, {name} {counts}, {args.image_size}px batch {b}, {steps} steps per loop, "
              f"load {os.getloadavg()[0]:.1f}", flush=True)

        # the one-off decode into the cache, per image (a real run pays it once per dataset and size)
        with Timer(device) as t:
            build_decoded_cache(rows_train + rows_val, args.image_size, cache_dir, progress=False)
        report["cache_build_ms_per_image"] = 1000 * t.s / len(rows_train + rows_val)
        # identical caches for the loops below (the split subsets are cached separately)
        for part in (rows_train, rows_val, rows_val[:1]):
            build_decoded_cache(part, args.image_size, cache_dir, progress=False)
        # (a) trains on the same images as (b), pre-decoded and normalised in memory: a distinct batch per step
        # (cycling through two batches would let them sit in the CPU's cache and flatter the ceiling)
        x_u8 = torch.stack([Preprocess(args.image_size, (0,) * 3, (1,) * 3).to_uint8(load_rgb(r["path"]))
                            for r in rows_train])
        y = torch.tensor([r["label"] for r in rows_train])

        cl = cfg["channels_last"]
        loops, pairs = {}, []
        for rnd in range(args.repeats):  # (a) and (b) interleaved, in alternating order: the noise hits both
            pair = {}
            order = (("a_compute", lambda: bench_compute(cfg, device, x_u8, y, steps, channels_last=cl)),
                     ("b_ours", lambda: bench_ours(cfg, params, device, rows_train, rows_val, cache_dir, steps)))
            for key, fn in order if rnd % 2 == 0 else order[::-1]:
                pair[key] = r = fn()
                print(key, r, flush=True)
                loops[key] = {k: max(v, loops.get(key, {}).get(k, 0.0)) for k, v in r.items()  # best of each
                              if k.endswith("img_s")}
            pairs.append(pair)
        report["repeats"] = pairs
        loops["c_course"] = bench_course(cfg, device, rows_train, rows_val, steps)
        print("c", loops["c_course"], flush=True)

        levers = {
            "compute_contiguous": lambda: bench_compute(cfg, device, x_u8, y, steps, channels_last=False),
            "ours_no_channels_last": lambda: bench_ours(dict(cfg, channels_last=False), params, device, rows_train,
                                                        rows_val, cache_dir, steps),
            "ours_no_cache_0_workers": lambda: bench_ours(dict(cfg, decode_cache=False, num_workers=0), params,
                                                          device, rows_train, rows_val, cache_dir, steps),
            "ours_no_cache_auto_workers": lambda: bench_ours(dict(cfg, decode_cache=False), params, device,
                                                             rows_train, rows_val, cache_dir, steps),
            "ours_cache_1_worker": lambda: bench_ours(dict(cfg, num_workers=1), params, device, rows_train,
                                                      rows_val, cache_dir, steps),
        }
        if device.type == "cuda":
            levers.update({
                "ours_no_amp": lambda: bench_ours(dict(cfg, amp=False), params, device, rows_train, rows_val,
                                                  cache_dir, steps),
                "ours_compile": lambda: bench_ours(dict(cfg, compile=True), params, device, rows_train, rows_val,
                                                   cache_dir, steps),
            })
        wanted = levers if args.levers == "all" else [] if args.levers == "none" else args.levers.split(",")
        for key in wanted:
            loops[key] = levers[key]()
            print(key, loops[key], flush=True)
        report["loops"] = loops

        # a full dfdc-sized epoch from the measured rates
        a, bb, c = loops["a_compute"], loops["b_ours"], loops["c_course"]
        n_tr, n_va, n_te, E = counts["train"], counts["val"], counts["test"], args.epochs
        cache_s = report["cache_build_ms_per_image"] / 1000 * sum(counts.values()) / E  # amortised per epoch
        epoch = {
            "a_compute_train_val": n_tr / a["train_img_s"] + n_va / a["eval_img_s"],
            "b_ours_train_val_test_once": n_tr / bb["train_img_s"] + (n_va + n_te / E) / bb["eval_img_s"] + cache_s,
            "b_ours_train_val_test_every_epoch": n_tr / bb["train_img_s"] + (n_va + n_te) / bb["eval_img_s"] + cache_s,
            "c_course_train_val_test": n_tr / c["train_img_s"] + (n_va + n_te) / c["eval_img_s"],
        }
        report["epoch_s"] = {k: round(v, 1) for k, v in epoch.items()}
        report["ratios"] = {
            "b_over_a_train_img_s": bb["train_img_s"] / a["train_img_s"],
            "b_over_a_eval_img_s": bb["eval_img_s"] / a["eval_img_s"],
            "b_over_c_epoch_test_once": epoch["c_course_train_val_test"] / epoch["b_ours_train_val_test_once"],
            "b_over_c_epoch_test_every_epoch": epoch["c_course_train_val_test"]
            / epoch["b_ours_train_val_test_every_epoch"],
        }
        for kind in ("train", "eval"):  # robust to one lucky or unlucky round: the median of the paired ratios
            report["ratios"][f"b_over_a_{kind}_median_of_pairs"] = float(np.median(
                [p["b_ours"][f"{kind}_img_s"] / p["a_compute"][f"{kind}_img_s"] for p in pairs]))
        report["profile_b"] = {  # where a step of (b) goes: the data path's share, median over the rounds
            "data_ms_per_batch": float(np.median([p["b_ours"]["data_ms_per_batch"] for p in pairs])),
            "step_ms": float(np.median([p["b_ours"]["step_ms"] for p in pairs]))}
        prof = report["profile_b"]
        prof["data_share_of_step"] = prof["data_ms_per_batch"] / prof["step_ms"]
        report["targets_met"] = {"b_ge_95pct_a": report["ratios"]["b_over_a_train_img_s"] >= 0.95,
                                 "b_ge_95pct_a_median_of_pairs": report["ratios"]["b_over_a_train_median_of_pairs"]
                                 >= 0.95,
                                 "b_ge_1.5x_c_epoch": report["ratios"]["b_over_c_epoch_test_once"] >= 1.5}
        report["bench_process_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if not args.skip_rss:
            print("peak RSS of fit() on 1/8 and all of the data ...", flush=True)
            report["fit_peak_rss"] = bench_rss(rows, tmp, args.image_size, 2,
                                               (("full", 1),) if args.smoke else (("eighth", 8), ("full", 1)))
        if not args.skip_repro:
            print("dvc repro of the demo pipeline in a temporary copy ...", flush=True)
            report["dvc"] = bench_repro(tmp)
        report["load_avg_end"] = os.getloadavg()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from deepfake_detect.io import write_json

    write_json(args.out, report)
    print(json.dumps({k: report.get(k) for k in ("ratios", "epoch_s", "targets_met", "fit_peak_rss", "dvc")}, indent=1))


if __name__ == "__main__":
    main()
