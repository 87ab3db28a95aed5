"""``deepfake-detect predict`` and ``evaluate`` (predict.py), end to end on a tiny untrained SimpleNet: scores as
the model gives them, every file not scored listed with its reason, Grad-CAM overlays for --cam."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from deepfake_detect import cli, predict
from deepfake_detect.checkpoint import load_model
from deepfake_detect.data import Preprocess, load_rgb

from conftest import tiny_checkpoint, write_image


def _p_fake(ckpt_path, image):
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
    monkeypatch.setattr(predict, "write_cam_overlays",
                        lambda model, ckpt, paths, out_dir: calls.append((ckpt["run"], paths, out_dir)))
    img = write_image(tmp_path / "x.png", 5)
    (tmp_path / "y.txt").write_text("no")
    predict.predict_files(tiny_ckpt, [str(img), str(tmp_path / "y.txt")], tmp_path / "s.csv",
                          cam_dir=tmp_path / "cam", device="cpu", progress=False)
    assert calls == [("tiny", [str(img)], tmp_path / "cam")]
    with pytest.raises(FileNotFoundError, match="nope.png"):
        predict.predict_files(tiny_ckpt, [str(tmp_path / "nope.png")], progress=False)


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


def test_write_cam_overlays_one_png_per_input(tmp_path):
    model, ckpt = load_model(tiny_checkpoint(tmp_path / "m.pt"))
    rng = np.random.default_rng(0)
    paths = []
    for i, (sub, size) in enumerate([("a", (80, 60)), ("b", (64, 64)), ("c", (50, 90))]):
        p = tmp_path / sub / ("same.jpg" if i < 2 else "other.png")  # two inputs share a stem
        p.parent.mkdir()
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(p)
        paths.append(p)
    written = predict.write_cam_overlays(model, ckpt, paths, tmp_path / "cams", batch_size=2, progress=False)
    assert len(written) == 3 and len(set(written)) == 3
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == sorted(p.name for p in written)
    for src, out in zip(paths, written):
        with Image.open(src) as a, Image.open(out) as b:
            assert b.format == "PNG" and b.mode == "RGB" and b.size == a.size
