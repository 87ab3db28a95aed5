"""Does a CPU training result depend on the thread count or the CPU's instruction set?

Trains one training stage of params.yaml (default ``train-competition``, the demo run most sensitive to it) on
demo data, each run in a fresh process, for every combination of

* ``--threads`` (default 1 and 2): ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``torch.set_num_threads``;
* mode ``default`` (the package as it is) and ``strict`` (oneDNN off, ``channels_last: false`` and
  ``MKL_CBWR=AVX2,STRICT``, set in the process before its first MKL call);
* with ``--avx2``, the native instruction set and AVX2 only (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``,
  ``MKL_ENABLE_INSTRUCTIONS``: "another CPU" on a machine with AVX-512);

and reports, per mode, whether the best checkpoints are bit-identical across threads (and instruction sets),
the test AUC at the best validation epoch of each run, and the training time. docs/reproducibility.md has
the findings and the study they come from.

    python bench/repro_threads.py --avx2 --out bench/results/repro_threads_check.json   # the demo recipe
    python bench/repro_threads.py --smoke --out /tmp/repro.json    # 2 tiny runs: proves the script works
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STRICT_ENV = {"MKL_CBWR": "AVX2,STRICT"}
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
SMOKE = {"image_size": 64, "batch_size": 8, "epochs": 1, "max_steps_per_epoch": 2}  # + 16/8/8 demo images


def run_of(params_path: Path, stage: str) -> str:
    """The run that training ``stage`` trains (``runs`` of the params file; its section has the run's name)."""
    from deepfake_detect.config import RUNS, ParamsError, load_params

    runs = load_params(params_path)[RUNS]
    run = next((r for r, s in runs.items() if s == stage), None)
    if run is None:
        raise ParamsError(f"{params_path}: no run of '{RUNS}' is trained by stage {stage!r} "
                          f"(stages: {', '.join(runs.values())})")
    return run


def make_data(params_path: Path, run: str, data_dir: Path, smoke: bool) -> None:
    """The run's dataset as prepare-splits writes it (the demo sizes of the params file, or tiny ones)."""
    from deepfake_detect.config import load_params
    from deepfake_detect.splits import SplitOptions, prepare_dataset

    params = load_params(params_path)
    dataset, demo = params[run]["dataset"], dict(params["demo"])
    if smoke:
        demo = {**demo, "image_size": 64, dataset: {**demo[dataset], "train": 16, "val": 8, "test": 8}}
    prepare_dataset(dataset, params["data"][dataset], data_dir / dataset,
                    SplitOptions(seed=params["seed"], demo_cfg=demo), progress=False)


def worker(spec: dict) -> dict:
    """One training run in this fresh process: (checkpoint hash, test AUC at the best val epoch, seconds)."""
    import torch

    os.environ.update(spec["inproc_env"])  # before any torch op: MKL reads MKL_CBWR at its first call
    torch.set_num_threads(spec["threads"])
    if spec["strict"]:
        torch.backends.mkldnn.enabled = False
    from deepfake_detect.checkpoint import read_checkpoint
    from deepfake_detect.config import load_params
    from deepfake_detect.train import fit

    changes = {"device": "cpu", spec["run"]: dict(spec["changes"], **({"channels_last": False}
                                                                      if spec["strict"] else {}))}
    params = load_params(spec["params"], changes)
    cfg, out = params[spec["run"]], Path(spec["out_dir"])
    summary = fit(cfg, params, data_dir=spec["data_dir"], models_dir=out / "models", metrics_dir=out / "metrics",
                  cache_dir=out / "cache", progress=False)
    state = read_checkpoint(out / "models" / f"{cfg['run']}.pt").state_dict
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode() + state[key].contiguous().numpy().tobytes())
    return {"checkpoint_sha256": h.hexdigest(), "test_auc_at_best_val": summary["test_auc_at_best_val"],
            "train_time_s": summary["train_time_s"], "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def run(spec: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"]),
           **(AVX2_ENV if spec["isa"] == "avx2" else {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env, capture_output=True,
                          text=True)
    if proc.returncode:
        raise SystemExit(f"run {spec['name']} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return {**{k: spec[k] for k in ("mode", "threads", "isa")}, **json.loads(proc.stdout.splitlines()[-1])}


def compare(runs: list[dict]) -> dict:
    """Per mode: are the checkpoints identical across thread counts, across instruction sets; slowdown."""
    out = {}
    for mode in dict.fromkeys(r["mode"] for r in runs):
        rs = [r for r in runs if r["mode"] == mode]
        native = [r for r in rs if r["isa"] == "native"]
        entry = {"identical_across_threads": len({r["checkpoint_sha256"] for r in native}) == 1,
                 "test_auc": {f"{r['threads']} threads, {r['isa']}": r["test_auc_at_best_val"] for r in rs}}
        other = [r for r in rs if r["isa"] == "avx2"]
        if other:
            same = next(r for r in native if r["threads"] == other[0]["threads"])
            entry["identical_across_isa"] = same["checkpoint_sha256"] == other[0]["checkpoint_sha256"]
        out[mode] = entry
    time = {m: sum(r["train_time_s"] for r in runs if r["mode"] == m) for m in out}
    if "strict" in time and time.get("default"):
        out["strict_time_over_default"] = round(time["strict"] / time["default"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", default="train-competition", help="training stage of the params file")
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--modes", nargs="+", default=["default", "strict"], choices=["default", "strict"])
    ap.add_argument("--avx2", action="store_true", help="also train at the highest thread count with AVX2 only")
    ap.add_argument("--smoke", action="store_true", help="tiny data, 2 steps, default mode only")
    ap.add_argument("--out", default=str(REPO / "bench/results/repro_threads_check.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    modes = ["default"] if args.smoke else args.modes
    with tempfile.TemporaryDirectory(prefix="repro-threads-") as tmp:
        train_run = run_of(Path(args.params), args.stage)
        make_data(Path(args.params), train_run, Path(tmp) / "data", args.smoke)
        combos = [(m, n, "native") for m in modes for n in args.threads]
        combos += [(m, max(args.threads), "avx2") for m in modes] if args.avx2 else []
        runs = []
        for mode, n, isa in combos:
            name = f"{mode}-{n}t-{isa}"
            runs.append(run({"name": name, "mode": mode, "threads": n, "isa": isa, "strict": mode == "strict",
                             "inproc_env": STRICT_ENV if mode == "strict" else {}, "run": train_run,
                             "params": args.params, "changes": SMOKE if args.smoke else {},
                             "data_dir": str(Path(tmp) / "data"), "out_dir": str(Path(tmp) / name)}))
            print(name, runs[-1], flush=True)
    from deepfake_detect.io import write_json

    report = {"command": " ".join(["python bench/repro_threads.py", *sys.argv[1:]]),
              "stage": args.stage, "runs": runs, "summary": compare(runs)}
    write_json(args.out, report)
    print(json.dumps(report["summary"], indent=1), f"-> {args.out}", sep="\n")


if __name__ == "__main__":
    main()
