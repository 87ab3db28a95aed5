"""detector.Detector: every scoring path gives the same p(fake); precision, shipped names, model cards,
calibration, predict with both shipped detectors; no function of src/ takes more than 8 parameters."""
from __future__ import annotations

import ast
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from deepfake_detect import cli, detector, predict
from deepfake_detect.detector import Detector, DetectorError, calibrate, resolve_precision

from conftest import REPO, make_tiny, tiny_checkpoint, write_image


def _test_rows(data):
    from deepfake_detect.data import read_manifest

    return read_manifest(data / "fakes" / "manifest.csv", "test")


def test_no_function_takes_more_than_8_parameters():
    """Every function of src/deepfake_detect but the model zoo (models/) takes at most 8 parameters."""
    pkg = REPO / "src" / "deepfake_detect"
    long = []
    for f in sorted(pkg.rglob("*.py")):
        rel = f.relative_to(pkg).as_posix()
        if rel.startswith("models/"):
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
                if len(names) > 8:
                    long.append(f"{rel}:{node.name} ({len(names)})")
    assert not long, long


def test_every_path_gives_the_same_p(tmp_path, tiny_ckpt):
    data = make_tiny(tmp_path)
    rows = _test_rows(data)
    paths = [r["path"] for r in rows]
    det = Detector.load(tiny_ckpt, "cpu", precision="fp32")
    p, errors = det.score_paths(paths, progress=False)
    assert not errors and p.dtype == np.float64
    arrays = [np.asarray(Image.open(q).convert("RGB")) for q in paths]
    np.testing.assert_allclose(det.score(arrays), p, atol=1e-5)
    np.testing.assert_allclose(det.score([Image.open(q) for q in paths]), p, atol=1e-5)
    whole = predict.predict_files(tiny_ckpt, paths, options=predict.PredictOptions(
        device="cpu", precision="fp32", crop="whole", progress=False), fmt="json")
    np.testing.assert_allclose([r["p_fake"] for r in whole], p, atol=1e-5)
    assert all(r["verdict"] == ("fake" if q > det.threshold else "real") for r, q in zip(whole, p))


def test_evaluate_stage_and_cli_evaluate_match_score_paths(tmp_path, tiny_ckpt):
    import csv

    from deepfake_detect.evaluate import run_stage

    from conftest import tiny_params

    data = make_tiny(tmp_path)
    params = tiny_params()
    params["evaluate-roc-det"].update(robustness=[], precision="fp32", bootstrap=0)
    m = run_stage(params, "tiny", data, tmp_path / "models", tmp_path / "metrics", tmp_path / "plots",
                  progress=False)
    assert m["precision"] == "fp32" and m["cross_dataset"]["at_threshold"]["fakes"]["n_of"] == 8
    with open(tmp_path / "metrics" / "scores" / "tiny.csv") as f:
        stage = np.array([float(r["p_fake"]) for r in csv.DictReader(f)])
    det = Detector.load(tiny_ckpt, "cpu", "fp32")
    p, _ = det.score_paths([r["path"] for r in _test_rows(data)], progress=False)
    np.testing.assert_allclose(stage, p, atol=1e-5)
    folder = tmp_path / "labelled"
    for r in _test_rows(data):
        dst = folder / ("fake" if int(r["label"]) else "real") / r["path"].split("/")[-1]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(r["path"], dst)
    e = predict.evaluate_folder(tiny_ckpt, folder, n_bootstrap=0, options=predict.PredictOptions(
        device="cpu", precision="fp32", crop="whole", progress=False, min_per_class=1))  # 4 + 4 images
    assert e["auc"] == pytest.approx(m["auc"], abs=1e-9) and e["precision"] == "fp32"


def test_bf16_close_to_fp32(tmp_path, tiny_ckpt):
    from deepfake_detect.metrics import auc

    data = make_tiny(tmp_path)
    rows = _test_rows(data)
    y = [int(r["label"]) for r in rows]
    p32, _ = Detector.load(tiny_ckpt, "cpu", "fp32").score_paths([r["path"] for r in rows], progress=False)
    p16, _ = Detector.load(tiny_ckpt, "cpu", "bf16").score_paths([r["path"] for r in rows], progress=False)
    assert np.abs(p16 - p32).max() < 0.02  # bf16 keeps 8 bits of mantissa: about 2 decimal digits
    assert abs(auc(y, p16) - auc(y, p32)) <= 0.002 or np.abs(p16 - p32).max() < 1e-3


def test_fp16_checkpoint_loads_and_scores_like_fp32(tmp_path, tiny_ckpt, demo_faces):
    state = torch.load(tiny_ckpt, weights_only=True)
    state["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in state["state_dict"].items()}
    half = tmp_path / "half.pt"
    torch.save(state, half)
    images = [Image.open(p) for p in demo_faces]
    a = Detector.load(tiny_ckpt, "cpu", "fp32").score(images)
    b = Detector.load(half, "cpu", "fp32").score(images)
    np.testing.assert_allclose(a, b, atol=1e-2)


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_follows_the_cpu(monkeypatch, native):
    """The stages' auto: bf16 on a CPU with native bf16; predict's and the API's: fp32 on every CPU."""
    monkeypatch.setattr(detector, "native_bf16", lambda device: native)
    assert detector.stage_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(DetectorError, match="--precision"):
        resolve_precision("fp16", "cpu")


def _ship(tmp_path, monkeypatch, ckpt, calibration=None):
    shipped = tmp_path / "detectors"
    shipped.mkdir()
    for name, thr in (("faceswap", 0.4), ("generated", 0.6)):
        shutil.copy(ckpt, shipped / f"{name}.pt")
        (shipped / f"{name}.json").write_text(json.dumps({
            "format": "deepfake-detect-card", "name": name, "task": name, "run": "tiny", "dataset": "fakes",
            "threshold": thr, "threshold_rule": "balanced", "calibration": calibration,
            "weights_sha256": detector.sha256_of(ckpt)}))
    monkeypatch.setattr(detector, "SHIPPED_DIR", shipped)
    return shipped


def test_named_detector_missing_is_one_line_naming_file_and_remedies(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(detector, "SHIPPED_DIR", tmp_path / "none")
    with pytest.raises(DetectorError, match=r"faceswap\.pt.*dvc repro real/dvc.yaml:release.*--model"):
        Detector.load("faceswap")
    img = write_image(tmp_path / "a.png", 1)
    assert cli.main(["predict", str(img), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "faceswap.pt" in err and "--model" in err and len(err.splitlines()) == 1


def test_shipped_card_with_calibration(tmp_path, monkeypatch, tiny_ckpt, demo_faces):
    _ship(tmp_path, monkeypatch, tiny_ckpt, {"method": "platt", "a": 2.0, "b": -0.5})
    det = Detector.load("generated", "cpu", "fp32")
    assert det.name == "generated" and det.threshold == 0.6 and det.threshold_rule == "balanced"
    assert "model card" in det.threshold_source and "generated" in repr(det)
    raw = Detector.load(tiny_ckpt, "cpu", "fp32").score([Image.open(p) for p in demo_faces])
    q = np.clip(raw, 1e-6, 1 - 1e-6)
    expected = 1 / (1 + np.exp(-(2.0 * np.log(q / (1 - q)) - 0.5)))
    np.testing.assert_allclose(det.score([Image.open(p) for p in demo_faces]), expected, atol=1e-6)
    np.testing.assert_allclose(calibrate(raw, None), raw)


def test_predict_without_model_runs_both_shipped_detectors(tmp_path, monkeypatch, tiny_ckpt, capsys):
    _ship(tmp_path, monkeypatch, tiny_ckpt)
    img = write_image(tmp_path / "a.png", 1, size=64)
    assert cli.main(["predict", str(img), "--quiet", "--crop", "whole", "--format", "json", "--device", "cpu",
                     "--precision", "fp32"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    p = Detector.load(tiny_ckpt, "cpu", "fp32").score([Image.open(img)])[0]
    assert row["p_fake_faceswap"] == pytest.approx(p, abs=1e-5) == row["p_fake_generated"]
    fired = [n for n, t in (("faceswap", 0.4), ("generated", 0.6)) if p > t]
    assert row["fired"] == ";".join(fired) and row["verdict"] == ("fake" if fired else "real")
    assert row["detectors"] == ["faceswap", "generated"]
    assert cli.main(["predict", str(img), "--quiet", "--crop", "whole", "--device", "cpu"]) == 0
    line = capsys.readouterr().out.strip()
    assert "faceswap" in line and "generated" in line and "fired:" in line


def test_cross_max_images_subsamples_other_sets(tmp_path):
    from deepfake_detect.evaluate import _cross_generator

    root = tmp_path / "xgen"
    for i in range(10):
        write_image(root / ("fake" if i % 2 else "real") / f"{i}.png", i)
    det = Detector.load(tiny_checkpoint(tmp_path / "t.pt"), "cpu", "fp32")
    m = _cross_generator(det, root, {"batch_size": 4, "bootstrap": 0, "cross_max_images": 4}, {"seed": 0},
                         progress=False)
    assert m["n_real"] + m["n_fake"] == 4 and m["n_of"] == 10
    assert 0 <= m["fpr_at_threshold"] <= 1 and 0 <= m["tpr_at_threshold"] <= 1


def test_cli_precision_choices_are_the_detectors():
    assert cli.PRECISIONS == detector.PRECISIONS
