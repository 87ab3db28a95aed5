"""The evaluate-roc-det stage (evaluate.py), end to end on a tiny untrained SimpleNet."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from deepfake_detect.checkpoint import load_model
from deepfake_detect.config import load_params
from deepfake_detect.data import read_manifest
from deepfake_detect.evaluate import evaluate_runs

from conftest import REPO, write_image

STAGE_KEYS = {"auc", "auc_score1", "eer", "ap", "acc", "balanced_acc", "tpr_at_fpr_1pct", "tpr_at_fpr_10pct",
              "tn", "fp", "fn", "tp", "auc_ci_low", "auc_ci_high", "n_real", "n_fake", "log_loss",
              "test_acc_at_best_val", "num_params", "train_time_s"}


def _stage_params(runs):
    params = load_params(REPO / "params.yaml")
    params["device"] = "cpu"
    params["evaluate-roc-det"].update(runs=runs, bootstrap=20)
    return params


def test_stage_end_to_end(tmp_path, tiny_ckpt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = []
    for i, (split, label) in enumerate([("test", 0)] * 5 + [("test", 1)] * 4 + [("train", 0), ("train", 1)]):
        rows.append({"path": str(write_image(Path("imgs") / f"{i}.png", i).as_posix()), "label": label,
                     "split": split})
    Path("data/fakes").mkdir(parents=True)
    with open("data/fakes/manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "split"])
        w.writeheader()
        w.writerows(rows)
    params = _stage_params(["tiny"])
    res = evaluate_runs(params, params["evaluate-roc-det"], progress=False)
    m = json.loads(Path("metrics/evaluate/tiny.json").read_text())
    assert set(m) == STAGE_KEYS and m == res["tiny"]
    assert (m["n_real"], m["n_fake"], m["test_acc_at_best_val"]) == (5, 4, 0.5)
    assert m["tn"] + m["fp"] == 5 and m["fn"] + m["tp"] == 4
    assert m["auc_ci_low"] <= m["auc"] <= m["auc_ci_high"]
    for kind, cols in (("roc", ["fpr", "tpr", "threshold"]), ("det", ["fpr_probit", "fnr_probit", "fpr", "fnr",
                                                                      "threshold"])):
        text = Path(f"plots/evaluate/{kind}/tiny.csv").read_text()
        assert text.splitlines()[0].split(",") == cols and "inf" not in text.lower() and "nan" not in text.lower()
        assert np.isfinite(np.loadtxt(text.splitlines()[1:], delimiter=",", ndmin=2)).all()
    for png in ("tiny_roc_det.png", "all_runs_roc_det.png", "cross_dataset_auc.png"):
        assert Path("plots/evaluate/figures", png).read_bytes()[:4] == b"\x89PNG"
    cross = json.loads(Path("metrics/evaluate/cross_dataset.json").read_text())
    assert cross == {"datasets": {"fakes": "demo fakes"}, "runs": {"tiny": {"trained_on": "fakes",
                                                                              "auc": {"fakes": m["auc"]}}}}


def test_every_run_is_scored_on_every_dataset(tmp_path, tiny_ckpt, monkeypatch):
    """The cross-dataset matrix: a run trained on `fakes` is also scored on `synthetic`'s test split."""
    from deepfake_detect.score import score_paths

    monkeypatch.chdir(tmp_path)
    for name, n in (("fakes", 6), ("synthetic", 8)):
        rows = [{"path": str(write_image(Path(name) / f"{i}.png", 10 * n + i).as_posix()), "label": i % 2,
                 "split": "test"} for i in range(n)]
        Path("data", name).mkdir(parents=True)
        with open(f"data/{name}/manifest.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["path", "label", "split"])
            w.writeheader()
            w.writerows(rows)
    params = _stage_params(["tiny"])
    params["data"]["synthetic"]["source"] = "../somewhere/stylegan_faces"
    evaluate_runs(params, params["evaluate-roc-det"], progress=False)
    cross = json.loads(Path("metrics/evaluate/cross_dataset.json").read_text())
    assert cross["datasets"] == {"fakes": "demo fakes", "synthetic": "stylegan_faces"}
    model, ckpt = load_model(tiny_ckpt)
    rows = read_manifest("data/synthetic/manifest.csv")
    p, _ = score_paths(model, ckpt, [r["path"] for r in rows], progress=False)
    assert cross["runs"]["tiny"]["auc"]["synthetic"] == pytest.approx(roc_auc_score([r["label"] for r in rows], p))
    assert cross["runs"]["tiny"]["auc"]["fakes"] == json.loads(Path("metrics/evaluate/tiny.json").read_text())["auc"]


def test_stage_missing_checkpoint_names_file_and_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = _stage_params(["simplenet-synth"])
    with pytest.raises(FileNotFoundError, match=r"models/simplenet-synth\.pt.*train-simplenet-synth"):
        evaluate_runs(params, params["evaluate-roc-det"], progress=False)
    params = _stage_params(["my-new-run"])
    with pytest.raises(FileNotFoundError, match=r"models/my-new-run\.pt.*no training stage"):
        evaluate_runs(params, params["evaluate-roc-det"], progress=False)


def test_dvc_yaml_lists_every_evaluated_run():
    """A run in evaluate-roc-det.runs must be a dependency and a line of the ROC and DET plots."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    runs = load_params(REPO / "params.yaml")["evaluate-roc-det"]["runs"]
    deps = dvc["stages"]["evaluate-roc-det"]["deps"]
    plots = {k: v for p in dvc["plots"] if isinstance(p, dict) for k, v in p.items()}
    for run in runs:
        assert f"models/{run}.pt" in deps
        assert plots["roc"]["y"][f"plots/evaluate/roc/{run}.csv"] == "tpr"
        assert plots["det"]["y"][f"plots/evaluate/det/{run}.csv"] == "fnr_probit"
    assert (REPO / plots["det"]["template"]).exists()
