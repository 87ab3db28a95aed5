"""evaluate-roc-det stage and the evaluate / predict CLI, end to end on a tiny untrained SimpleNet."""
import csv
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score

from deepfake_detect import cli
from deepfake_detect.checkpoint import save_checkpoint
from deepfake_detect.config import load_params
from deepfake_detect.data import Preprocess, load_rgb
from deepfake_detect.evaluate import evaluate_runs, predict_files
from deepfake_detect.models import get_model

from conftest import REPO, write_image

STAGE_KEYS = {"auc", "auc_score1", "eer", "ap", "acc", "balanced_acc", "tpr_at_fpr_1pct", "tpr_at_fpr_10pct",
              "tn", "fp", "fn", "tp", "auc_ci_low", "auc_ci_high", "n_real", "n_fake", "log_loss",
              "test_acc_at_best_val", "num_params", "train_time_s"}


@pytest.fixture
def tiny_ckpt(tmp_path):
    torch.manual_seed(0)
    model = get_model("simplenet", image_size=64)
    return save_checkpoint(tmp_path / "models" / "tiny.pt", model, 64, run="tiny", extra={"dataset": "fakes"},
                           metrics={"test_acc_at_best_val": 0.5})


def _p_fake(ckpt_path, image):
    from deepfake_detect.checkpoint import load_model

    model, ckpt = load_model(ckpt_path)
    x = Preprocess(ckpt["image_size"], ckpt["mean"], ckpt["std"])(load_rgb(image))[None]
    with torch.no_grad():
        return torch.softmax(model(x), 1)[0, 1].item()


def test_predict_cli(tmp_path, tiny_ckpt, capsys):
    d = tmp_path / "in"
    write_image(d / "a.png", 1, size=80)
    write_image(d / "sub" / "b.jpg", 2, size=40)
    write_image(d / "grey.png", 3, mode="L")
    (d / "notes.txt").write_text("not an image")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    extra = write_image(tmp_path / "single.png", 4)
    out = tmp_path / "scores.csv"
    assert cli.main(["predict", "--model", str(tiny_ckpt), str(d), str(extra), "--out", str(out), "--quiet",
                     "--device", "cpu"]) == 0
    rows = {Path(r["path"]).name: r for r in csv.DictReader(open(out))}
    assert set(rows) == {"a.png", "b.jpg", "grey.png", "notes.txt", "broken.png", "single.png"}
    assert rows["notes.txt"] == {"path": str(d / "notes.txt"), "p_fake": "", "label": "skipped: not an image file"}
    assert rows["broken.png"]["p_fake"] == "" and rows["broken.png"]["label"].startswith("skipped: cannot decode")
    for name in ("a.png", "b.jpg", "grey.png", "single.png"):
        p = float(rows[name]["p_fake"])
        assert 0 <= p <= 1 and rows[name]["label"] == ("fake" if p > 0.5 else "real")
    assert float(rows["a.png"]["p_fake"]) == pytest.approx(_p_fake(tiny_ckpt, d / "a.png"), abs=1e-5)
    err = capsys.readouterr().err
    assert "skipped 2 file(s)" in err and "notes.txt" in err and "broken.png" in err


def test_predict_cam_and_missing_path(tmp_path, tiny_ckpt, monkeypatch):
    calls = []
    fake_explain = types.ModuleType("deepfake_detect.explain")
    fake_explain.write_cam_overlays = lambda model, ckpt, paths, out_dir: calls.append((ckpt["run"], paths, out_dir))
    monkeypatch.setitem(sys.modules, "deepfake_detect.explain", fake_explain)
    img = write_image(tmp_path / "x.png", 5)
    (tmp_path / "y.txt").write_text("no")
    predict_files(tiny_ckpt, [str(img), str(tmp_path / "y.txt")], tmp_path / "s.csv", cam_dir=tmp_path / "cam",
                  device="cpu", progress=False)
    assert calls == [("tiny", [str(img)], tmp_path / "cam")]
    with pytest.raises(FileNotFoundError, match="nope.png"):
        predict_files(tiny_ckpt, [str(tmp_path / "nope.png")], progress=False)


def test_evaluate_cli(tmp_path, tiny_ckpt, course_folder, capsys):
    (course_folder / "test" / "fake" / "readme.txt").write_text("listed as skipped")
    out = tmp_path / "m.json"
    argv = ["evaluate", "--model", str(tiny_ckpt), "--bootstrap", "20", "--quiet", "--device", "cpu", "--out", str(out)]
    assert cli.main(argv + ["--data", str(course_folder)]) == 0  # course root -> its test/ split
    m = json.loads(out.read_text())
    assert (m["n_real"], m["n_fake"], m["n_skipped"]) == (4, 2, 1)
    assert {"auc", "acc", "eer", "ap"} <= set(m) and "auc" in capsys.readouterr().out
    # the same numbers as sklearn on the scores predict gives
    paths = sorted((course_folder / "test").glob("*/*.png"))
    y = [int(p.parent.name == "fake") for p in paths]
    s = [_p_fake(tiny_ckpt, p) for p in paths]
    assert m["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    assert m["acc"] == pytest.approx(np.mean((np.array(s) > 0.5) == np.array(y)))
    # a split folder gives the same metrics
    assert cli.main(argv[:-1] + [str(tmp_path / "m2.json"), "--data", str(course_folder / "test")]) == 0
    assert json.loads((tmp_path / "m2.json").read_text())["auc"] == m["auc"]
    # a folder without real/ fake/ is a clear error (exit 2)
    assert cli.main(["evaluate", "--model", str(tiny_ckpt), "--data", str(tmp_path / "models"), "--quiet"]) == 2
    assert "real/ and fake/" in capsys.readouterr().err


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
    for png in ("tiny_roc_det.png", "all_runs_roc_det.png"):
        assert Path("plots/evaluate/figures", png).read_bytes()[:4] == b"\x89PNG"


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
