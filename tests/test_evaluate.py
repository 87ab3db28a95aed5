"""The evaluate-roc-det stage (evaluate.py), end to end on a tiny untrained SimpleNet."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from deepfake_detect import evaluate, summary
from deepfake_detect.config import load_params
from deepfake_detect.data import read_manifest

from conftest import REPO, write_image

STAGE_KEYS = {"auc", "auc_score1", "eer", "ap", "acc", "balanced_acc", "tpr_at_fpr_1pct", "tpr_at_fpr_10pct",
              "tn", "fp", "fn", "tp", "auc_ci_low", "auc_ci_high", "n_real", "n_fake", "log_loss",
              "test_acc_at_best_val", "num_params", "train_time_s",
              "threshold", "acc_at_threshold", "balanced_acc_at_threshold", "val_auc", "precision"}


def _stage_params():
    params = load_params(REPO / "params.yaml")
    params["device"] = "cpu"
    params["evaluate-roc-det"].update(bootstrap=20, precision="fp32")  # fp32: compared with fp32 hand runs
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
    params = _stage_params()
    res = evaluate.run_stage(params, "tiny", progress=False)
    m = json.loads(Path("metrics/evaluate/tiny.json").read_text())
    assert set(m) == STAGE_KEYS | {"cross_dataset", "robustness"} and m == res
    panel = m["robustness"]  # the test split again under each degradation of params.yaml, clean first
    assert list(panel["degradations"]) == ["clean", *params["evaluate-roc-det"]["robustness"]]
    assert panel["degradations"]["clean"]["auc"] == pytest.approx(m["auc"], abs=1e-12)  # the stage's own scores
    at = m["cross_dataset"].pop("at_threshold")  # FPR/TPR at the threshold per dataset; the own split whole
    assert m["cross_dataset"] == {"trained_on": "fakes", "auc": {"fakes": m["auc"]},
                                  "datasets": {"fakes": "demo fakes"}}
    assert (at["fakes"]["n_real"], at["fakes"]["n_fake"], at["fakes"]["n_of"]) == (5, 4, 9)
    assert m["precision"] == "fp32"
    assert (m["n_real"], m["n_fake"], m["test_acc_at_best_val"]) == (5, 4, 0.5)
    assert m["tn"] + m["fp"] == 5 and m["fn"] + m["tp"] == 4
    assert m["auc_ci_low"] <= m["auc"] <= m["auc_ci_high"]
    for kind, cols in (("roc", ["fpr", "tpr", "threshold"]), ("det", ["fpr_probit", "fnr_probit", "fpr", "fnr",
                                                                      "threshold"])):
        text = Path(f"plots/evaluate/{kind}/tiny.csv").read_text()
        assert text.splitlines()[0].split(",") == cols and "inf" not in text.lower() and "nan" not in text.lower()
        assert np.isfinite(np.loadtxt(text.splitlines()[1:], delimiter=",", ndmin=2)).all()
    assert Path("plots/evaluate/figures/tiny_roc_det.png").read_bytes()[:4] == b"\x89PNG"
    scores = list(csv.DictReader(open("metrics/evaluate/scores/tiny.csv")))
    assert [int(r["label"]) for r in scores] == [r["label"] for r in rows if r["split"] == "test"]
    assert roc_auc_score([int(r["label"]) for r in scores], [float(r["p_fake"]) for r in scores]) == \
        pytest.approx(m["auc"], abs=1e-6)

    # summarize gathers the run's outputs: its headline row, the cross-dataset table, the all-runs figures
    headlines = summary.run_stage({**params, "runs": {"tiny": "train-simplenet-fakes"}})
    assert headlines["tiny"]["auc"] == round(m["auc"], 4)
    cross = json.loads(Path("metrics/summary/cross_dataset.json").read_text())
    assert cross == {"datasets": {"fakes": "demo fakes"}, "runs": {"tiny": {"trained_on": "fakes",
                                                                              "auc": {"fakes": m["auc"]}}}}
    for png in ("all_runs_roc_det.png", "cross_dataset_auc.png"):
        assert Path("plots/summary", png).read_bytes()[:4] == b"\x89PNG"


def test_every_run_is_scored_on_every_dataset(tmp_path, tiny_ckpt, monkeypatch):
    """The cross-dataset matrix: a run trained on `fakes` is also scored on `synthetic`'s test split."""
    from deepfake_detect.detector import Detector

    monkeypatch.chdir(tmp_path)
    for name, n in (("fakes", 6), ("synthetic", 8)):
        rows = [{"path": str(write_image(Path(name) / f"{i}.png", 10 * n + i).as_posix()), "label": i % 2,
                 "split": "test"} for i in range(n)]
        Path("data", name).mkdir(parents=True)
        with open(f"data/{name}/manifest.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["path", "label", "split"])
            w.writeheader()
            w.writerows(rows)
    params = _stage_params()
    params["data"]["synthetic"]["source"] = "../somewhere/stylegan_faces"
    evaluate.run_stage(params, "tiny", progress=False)
    cross = json.loads(Path("metrics/evaluate/tiny.json").read_text())["cross_dataset"]
    assert cross["datasets"] == {"fakes": "demo fakes", "synthetic": "stylegan_faces"}
    rows = read_manifest("data/synthetic/manifest.csv")
    p, _ = Detector.load(tiny_ckpt, "cpu", "fp32").score_paths([r["path"] for r in rows], progress=False)
    assert cross["auc"]["synthetic"] == pytest.approx(roc_auc_score([r["label"] for r in rows], p))
    assert cross["auc"]["fakes"] == json.loads(Path("metrics/evaluate/tiny.json").read_text())["auc"]


def test_stage_missing_checkpoint_names_file_and_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = _stage_params()
    with pytest.raises(FileNotFoundError, match=r"models/simplenet-synth\.pt.*made by stage 'train-simplenet-synth'"):
        evaluate.run_stage(params, "simplenet-synth", progress=False)
    with pytest.raises(FileNotFoundError, match=r"models/my-new-run\.pt.*'runs' in .*params.yaml has no run 'my-new"):
        evaluate.run_stage(params, "my-new-run", progress=False)


@pytest.mark.parametrize("dvcfile", ["dvc.yaml", "real/dvc.yaml"])
def test_dvc_yaml_plots_every_run(dvcfile):
    """Every run of `runs` is a line of the ROC and DET plots (the one place DVC needs the run list again)."""
    dvc = yaml.safe_load((REPO / dvcfile).read_text())
    runs = load_params(REPO / Path(dvcfile).parent / "params.yaml")["runs"]
    plots = {k: v for p in dvc["plots"] if isinstance(p, dict) for k, v in p.items()}
    assert set(plots["roc"]["y"]) == {f"plots/evaluate/roc/{run}.csv" for run in runs}
    assert set(plots["det"]["y"]) == {f"plots/evaluate/det/{run}.csv" for run in runs}
    assert set(plots["roc"]["y"].values()) == {"tpr"} and set(plots["det"]["y"].values()) == {"fnr_probit"}
    assert (REPO / plots["det"]["template"]).exists()


def test_stage_and_cli_score_alike_with_the_checkpoints_tta_and_threshold(tmp_path, monkeypatch, capsys):
    """A checkpoint with tta 'flip' and threshold 0.3: the stage, `deepfake-detect evaluate` and `predict` give
    the same scores (not the tta-none ones), and accuracy / labels at 0.3 next to accuracy at 0.5."""
    import torch
    from sklearn.metrics import balanced_accuracy_score, log_loss

    from deepfake_detect import cli
    from deepfake_detect.checkpoint import save_checkpoint
    from deepfake_detect.detector import Detector
    from deepfake_detect.models import get_model

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    ckpt_path = save_checkpoint("models/tta.pt", get_model("simplenet", image_size=64), 64, run="tta", threshold=0.3,
                                metrics={"threshold_rule": "balanced"}, tta="flip", dataset="fakes")
    paths = [write_image(Path("imgs") / cls / f"{i}.png", i, size=64).as_posix()
             for cls, idx in (("fake", range(4)), ("real", range(4, 9))) for i in idx]
    y = np.array([int("/fake/" in p) for p in paths])
    Path("data/fakes").mkdir(parents=True)
    with open("data/fakes/manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "split"])
        w.writeheader()
        w.writerows({"path": p, "label": label, "split": "test"} for p, label in zip(paths, y))
    params = _stage_params()
    params["evaluate-roc-det"]["batch_size"] = 4  # batches of 4, 4, 1; the CLI and score_paths below: one of 9
    m = evaluate.run_stage(params, "tta", progress=False)
    assert "at threshold 0.3 (checkpoint, rule 'balanced'" in capsys.readouterr().out

    p, _ = Detector.load(ckpt_path, "cpu", "fp32").score_paths(paths, progress=False)  # the checkpoint's tta: flip
    p_none, _ = Detector.load(ckpt_path, "cpu", "fp32", tta="none").score_paths(paths, progress=False)
    assert not np.allclose(p, p_none, rtol=0, atol=1e-7)
    # the stage scored with tta flip; its accuracies at 0.5 and at the checkpoint's 0.3, computed by hand
    assert m["log_loss"] == pytest.approx(log_loss(y, p), abs=1e-6)  # other batches: see below
    assert m["threshold"] == 0.3
    assert m["acc"] == np.mean((p > 0.5) == y) and m["acc_at_threshold"] == np.mean((p > 0.3) == y)
    assert m["balanced_acc_at_threshold"] == pytest.approx(balanced_accuracy_score(y, p > 0.3))
    assert m["acc"] != m["acc_at_threshold"]  # the threshold matters on these scores

    # deepfake-detect evaluate: the same numbers
    assert cli.main(["evaluate", "--model", str(ckpt_path), "--data", "imgs", "--bootstrap", "0", "--device", "cpu",
                     "--precision", "fp32", "--quiet", "--min-per-class", "1", "--out", "cli.json"]) == 0  # 9 images
    c = json.loads(Path("cli.json").read_text())
    assert c["tta"] == "flip" and "rule 'balanced'" in c["threshold_source"]
    # batched otherwise (and the CLI scans real/ before fake/): oneDNN's float32 results depend on the batch and
    # on the CPU's instruction set in the last bits (~1e-7), so the numbers agree to 1e-6, not bit for bit
    for key in ("auc", "log_loss", "acc", "balanced_acc", "threshold", "acc_at_threshold", "balanced_acc_at_threshold"):
        assert c[key] == pytest.approx(m[key], abs=1e-6), key

    # deepfake-detect predict: the same scores, labelled at 0.3
    def predicted(*extra):
        assert cli.main(["predict", "--model", str(ckpt_path), "imgs", "--out", "p.csv", "--device", "cpu",
                         "--precision", "fp32", "--quiet", *extra]) == 0
        return {r["path"]: r for r in csv.DictReader(open("p.csv"))}

    rows = predicted()
    assert "(threshold 0.3 from the checkpoint, rule 'balanced' on the validation split; tta flip; precision fp32)" in \
        capsys.readouterr().err
    for path, score in zip(paths, p):
        assert float(rows[path]["p_fake"]) == pytest.approx(score, abs=1e-6)  # written with 6 decimals
        assert rows[path]["verdict"] == ("fake" if score > 0.3 else "real")
    assert any((score > 0.3) != (score > 0.5) for score in p)
    rows = predicted("--tta", "none")  # --tta overrides the checkpoint's
    assert [float(rows[path]["p_fake"]) for path in paths] == pytest.approx(p_none, abs=1e-6)


def test_unknown_tta_is_a_clear_error(tmp_path, capsys):
    import torch

    from deepfake_detect import cli
    from deepfake_detect.checkpoint import save_checkpoint
    from deepfake_detect.models import get_model

    torch.manual_seed(0)
    bad = save_checkpoint(tmp_path / "bad.pt", get_model("simplenet", image_size=64), 64, tta="rotate")
    img = write_image(tmp_path / "a.png", 0)
    assert cli.main(["predict", "--model", str(bad), str(img), "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: checkpoint field 'tta': unknown test-time augmentation 'rotate'" in err
    with pytest.raises(SystemExit):
        cli.main(["predict", "--model", str(bad), str(img), "--tta", "rotate"])
    assert "--tta" in capsys.readouterr().err
