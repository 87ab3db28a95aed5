"""Every benchmark in bench/ runs, a few steps on demo data, in its own process as a reader runs it, and writes
the JSON its docs quote from: a change of the package's API that breaks one fails here, not in a reader's hands."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, make_tiny, tiny_params

SMOKE_TESTED = {"bench_train.py", "repro_threads.py", "levers.py", "stylegan_probe.py", "model_speed.py",
                "faces.py", "inference_precision.py",  # faces.py: tests/test_bench_faces.py
                "detector_speed.py",  # tests/test_bench_detector_speed.py
                "serve_load.py"}  # tests/test_bench_serve.py


def _bench(script: str, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / f"{Path(script).stem}.json"
    env = dict(os.environ, DFD_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    res = subprocess.run([sys.executable, str(REPO / "bench" / script), *args, "--out", str(out)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{script} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return json.loads(out.read_text())


def test_every_bench_script_has_a_smoke_test():
    assert {p.name for p in (REPO / "bench").glob("*.py")} == SMOKE_TESTED


def test_bench_train_smoke(tmp_path):
    report = _bench("bench_train.py", tmp_path, "--smoke")
    assert report["data"] == "demo-fakes" and report["steps"] == 2 and report["batch_size"] == 8
    loops = report["loops"]
    levers = {"compute_contiguous", "ours_no_channels_last", "ours_no_cache_0_workers", "ours_no_cache_auto_workers",
              "ours_cache_1_worker"}
    assert {"a_compute", "b_ours", "c_course"} | levers <= set(loops)
    assert all(loop["train_img_s"] > 0 and loop["eval_img_s"] > 0 for loop in loops.values())
    assert len(report["repeats"]) == 2 and all(math.isfinite(v) and v > 0 for v in report["ratios"].values())
    assert 0 < report["profile_b"]["data_share_of_step"] < 1
    assert report["fit_peak_rss"]["full"]["peak_rss_mb"] > 100  # a torch process, measured from /proc
    assert "dvc" not in report  # the smoke run skips the whole-pipeline timing (tests/test_pipeline.py runs it)


def test_repro_threads_smoke(tmp_path):
    report = _bench("repro_threads.py", tmp_path, "--smoke", "--stage", "train-simplenet-fakes")
    runs = report["runs"]
    assert [(r["mode"], r["threads"], r["isa"]) for r in runs] == [("default", 1, "native"), ("default", 2, "native")]
    assert all(len(r["checkpoint_sha256"]) == 64 and 0 <= r["test_auc_at_best_val"] <= 1 for r in runs)
    same = runs[0]["checkpoint_sha256"] == runs[1]["checkpoint_sha256"]
    assert report["summary"]["default"]["identical_across_threads"] is same


def test_levers_on_a_tiny_trained_pipeline(tmp_path):
    """levers.py on a pipeline folder holding one really trained run (models/, data/ as the DVC stages write
    them). With TTA none and no EMA it scores validation exactly as training did, so its AUC is training's."""
    from deepfake_detect.checkpoint import read_checkpoint
    from deepfake_detect.train import fit

    data = make_tiny(tmp_path / "pipeline")
    params = tiny_params(epochs=2)
    fit(params["tiny"], params, data_dir=data, models_dir=tmp_path / "pipeline" / "models",
        metrics_dir=tmp_path / "pipeline" / "metrics", cache_dir=tmp_path / "cache", progress=False)
    report = _bench("levers.py", tmp_path, "--pipeline", str(tmp_path / "pipeline"))
    entry = report["runs"]["tiny"]
    trained = read_checkpoint(tmp_path / "pipeline" / "models" / "tiny.pt").metrics
    assert set(entry["val_auc_by_tta"]) == {"none", "flip"} and entry["checkpoint_tta"] == "none"
    assert entry["val_auc_by_tta"]["none"] == pytest.approx(trained["best_val_auc"], abs=1e-3)
    assert set(entry["selection"]) == {"acc", "auc", "loss"}
    assert entry["selection"]["acc"]["epoch"] == trained["best_epoch"]  # the trainer's own choice (select: acc)
    assert entry["threshold"]["rule"] == "balanced" and 0 <= entry["threshold"]["val_acc_at_threshold"] <= 1


def test_model_speed_smoke(tmp_path):
    """Each NAME@SIZE is timed in both modes and its epoch time follows from its training throughput."""
    report = _bench("model_speed.py", tmp_path, "--models", "npr@32", "competition@32", "--batch-size", "2",
                    "--steps", "1", "--images", "10")
    rows = {r["model"]: r for r in report["models"]}
    assert set(rows) == {"npr", "competition"} and rows["npr"]["num_params"] == 1_437_761
    for row in rows.values():
        assert row["image_size"] == 32 and row["train_img_s"] > 0 and row["eval_img_s"] > 0
        assert row["train_page_faults_per_step"] >= 0 and 0 <= row["train_kernel_share"] <= 1
        assert row["train_epoch_s"] == pytest.approx(10 / row["train_img_s"], abs=0.06)
    assert report["command"].startswith("python bench/model_speed.py --models npr@32 competition@32")


def test_inference_precision_smoke(tmp_path):
    """fp32 and bf16 both timed in one run; their ratio and the largest score difference reported."""
    report = _bench("inference_precision.py", tmp_path, "--smoke")
    assert report["model"] == "simplenet" and report["images"] == 8
    assert report["fp32_img_s"] > 0 and report["bf16_img_s"] > 0
    assert report["bf16_over_fp32"] == pytest.approx(report["bf16_img_s"] / report["fp32_img_s"], rel=0.01)
    assert 0 <= report["max_abs_dp"] < 0.1 and report["command"] == "python bench/inference_precision.py --smoke"


def test_stylegan_probe_on_demo_data(tmp_path):
    from deepfake_detect.demo import DemoOptions, generate_dataset

    generate_dataset(tmp_path / "synthetic", kind="synthetic", n_train=24, n_val=12, n_test=12,
                     options=DemoOptions(image_size=64),
                     progress=False)
    shutil.copytree(tmp_path / "synthetic" / "test", tmp_path / "other")  # an evaluation-only set: the test images
    report = _bench("stylegan_probe.py", tmp_path, "--source", str(tmp_path / "synthetic"), "--sizes", "64",
                    "--eval", str(tmp_path / "other"))
    assert report["n"] == {"train": 24, "val": 12, "test": 12, "other": 12}
    assert report["jpeg"] == {"real": {"PNG": 24}, "fake": {"PNG": 24}}  # the demo writes PNGs: no JPEG tables
    for probe in (report["spectrum"], report["features@64"]["all"]):
        assert 0 <= probe["val_auc"] <= 1 and 0 <= probe["test_auc"] <= 1 and probe["C"] in (0.001, 0.01, 0.1, 1.0)
        assert probe["other_auc"] == pytest.approx(probe["test_auc"], abs=1e-4)  # the same images, scored alike
    assert list(report["features@64"]["blocks"])[-1] == "final"
