"""``deepfake-detect predict`` and ``evaluate`` (predict.py), end to end on tiny SimpleNets: scores as the model
gives them, one row per face in whole pictures and videos, every input not scored listed with its reason, the
CSV and JSON outputs (and what they must survive), exit codes, Grad-CAM overlays, the demo-domain warning."""
import csv
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from sklearn.metrics import roc_auc_score

from deepfake_detect import cli, faces, predict
from deepfake_detect.checkpoint import load_model
from deepfake_detect.data import Preprocess, load_rgb
from deepfake_detect.io import OutputError

from conftest import sensitive_checkpoint, tiny_checkpoint, write_image

DEMO_FRAMING = {"scale": 2.0, "ox": -0.02, "oy": -0.07}  # what training records for the demo faces


def _p_fake(ckpt_path, image):
    model, ckpt = load_model(ckpt_path)
    im = load_rgb(image) if not isinstance(image, Image.Image) else image
    x = Preprocess(ckpt.image_size, ckpt.mean, ckpt.std)(im)[None]
    with torch.no_grad():
        return torch.softmax(model(x), 1)[0, 1].item()


def _predict(ckpt, *paths, extra=()):
    return ["predict", "--model", str(ckpt), *map(str, paths), "--quiet", "--device", "cpu", "--precision", "fp32",
            *extra]


OPTS = predict.PredictOptions(device="cpu", precision="fp32", progress=False)  # fp32: compared with hand runs


def _det(ckpt_path):
    from deepfake_detect.detector import Detector

    return Detector.load(ckpt_path, "cpu", "fp32")


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def face_ckpt(tmp_path, demo_faces):
    """A checkpoint trained (so it says) on the demo's face crops, framed as the demo frames them."""
    domain = {"data": "demo", "image_size": 64, "native_size": [128, 128], "face_crops": True,
              "framing": DEMO_FRAMING}
    return sensitive_checkpoint(tmp_path / "models" / "faces.pt", demo_faces, domain=domain)


def _blurred(face: Image.Image, size=(800, 600)) -> Image.Image:
    return face.resize(size).filter(ImageFilter.GaussianBlur(40))


# ----------------------------------------------------------------------------- whole pictures (the old path)
def test_predict_cli_rows_and_reasons(tmp_path, tiny_ckpt, capsys):
    d = tmp_path / "in"
    write_image(d / "a.png", 1, size=80)
    write_image(d / "sub" / "b.jpg", 2, size=40)
    write_image(d / "grey.png", 3, mode="L")
    (d / "notes.txt").write_text("not an image")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    extra = write_image(tmp_path / "single.png", 4)
    out = tmp_path / "scores.csv"
    assert cli.main(_predict(tiny_ckpt, d, extra, extra=["--out", str(out)])) == 0
    rows = {Path(r["path"]).name: r for r in _csv(out)}
    assert list(_csv(out)[0]) == predict.FIELDS
    assert set(rows) == {"a.png", "b.jpg", "grey.png", "notes.txt", "broken.png", "single.png"}
    assert rows["notes.txt"] == {"path": str(d / "notes.txt"), "frame": "", "face": "", "box": "", "region": "",
                                 "p_fake": "", "verdict": "", "threshold": "0.5", "model": str(tiny_ckpt),
                                 "precision": "fp32", "status": "not an image or video file"}
    assert rows["broken.png"]["p_fake"] == "" and rows["broken.png"]["status"].startswith("cannot decode")
    for name in ("a.png", "b.jpg", "grey.png", "single.png"):
        r = rows[name]
        p = float(r["p_fake"])
        assert r["status"] == "ok" and r["face"] == "whole" and r["threshold"] == "0.5"
        assert 0 <= p <= 1 and r["verdict"] == ("fake" if p > 0.5 else "real")
    assert float(rows["a.png"]["p_fake"]) == pytest.approx(_p_fake(tiny_ckpt, d / "a.png"), abs=1e-5)
    err = capsys.readouterr().err
    assert "skipped 2 file(s)" in err and "notes.txt" in err and "broken.png" in err
    # --crop auto: whole pictures, and why
    assert "scored 4 image(s) (whole pictures: the checkpoint has no record of face-crop training; --crop faces " in err


def test_no_out_prints_one_verdict_per_face_and_formats_go_to_stdout(tmp_path, tiny_ckpt, capsys):
    img = write_image(tmp_path / "a.png", 1, size=80)
    (tmp_path / "b.txt").write_text("x")
    assert cli.main(_predict(tiny_ckpt, img, tmp_path / "b.txt")) == 0
    out = capsys.readouterr().out.splitlines()
    p = _p_fake(tiny_ckpt, img)
    assert out == [f"{img}: whole picture: {'fake' if p > 0.5 else 'real'} (p_fake {p:.3f}, threshold 0.5)",
                   f"{tmp_path / 'b.txt'}: skipped (not an image or video file)"]
    assert cli.main(_predict(tiny_ckpt, img, extra=["--format", "json"])) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["p_fake"] == pytest.approx(p, abs=1e-5) and row["face"] == "whole" and row["box"] is None
    assert cli.main(_predict(tiny_ckpt, img, extra=["--format", "csv"])) == 0
    (row,) = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert float(row["p_fake"]) == pytest.approx(p, abs=1e-5)


def test_out_suffix_is_the_format_or_refused(tmp_path, tiny_ckpt, capsys):
    img = write_image(tmp_path / "a.png", 1)
    assert cli.main(_predict(tiny_ckpt, img, extra=["--out", str(tmp_path / "p.json")])) == 0
    assert json.loads((tmp_path / "p.json").read_text())[0]["path"] == str(img)
    assert cli.main(_predict(tiny_ckpt, img, extra=["--out", str(tmp_path / "p.CSV")])) == 0
    assert _csv(tmp_path / "p.CSV")[0]["path"] == str(img)
    capsys.readouterr()
    for extra, message in ((["--out", str(tmp_path / "p.txt")], "unknown suffix '.txt'"),
                           (["--out", str(tmp_path / "p")], "unknown suffix '(none)'"),
                           (["--out", str(tmp_path / "q.csv"), "--format", "json"], "is .csv but --format is json")):
        assert cli.main(_predict(tiny_ckpt, img, extra=extra)) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p.txt").exists() and not (tmp_path / "q.csv").exists()


def test_nothing_scored_is_exit_3_with_the_reasons_written(tmp_path, tiny_ckpt, capsys):
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.png").write_bytes(b"not a png")
    out = tmp_path / "p.csv"
    assert cli.main(_predict(tiny_ckpt, tmp_path / "a.txt", tmp_path / "b.png", extra=["--out", str(out)])) == 3
    assert [r["status"][:14] for r in _csv(out)] == ["not an image o", "cannot decode "]
    assert "scored 0 image(s)" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(_predict(tiny_ckpt, empty)) == predict.NOTHING_SCORED == 3


def test_csv_cells_cannot_run_as_formulas():
    for cell in ("=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx"):
        assert predict.csv_cell(cell) == "'" + cell
    assert predict.csv_cell("a=b") == "a=b" and predict.csv_cell(0.25) == "0.25" and predict.csv_cell(None) == ""


def test_hostile_and_non_utf8_file_names_are_written_safely_and_losslessly(tmp_path, tiny_ckpt, capsys,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths: the cell starts with the name itself
    formula = Path('=HYPERLINK("http:evil.example","x").png')  # a file name holds no "/"
    write_image(formula, 1)
    raw = b"caf\xe9.png"  # Latin-1 bytes: not UTF-8
    write_image(Path(os.fsdecode(raw)), 2)
    d = [formula, os.fsdecode(raw)]
    assert cli.main(_predict(tiny_ckpt, *d, extra=["--out", str(tmp_path / "p.csv")])) == 0
    data = (tmp_path / "p.csv").read_bytes()
    assert raw in data  # the name's own bytes
    assert b'"\'' + os.fsencode(formula).replace(b'"', b'""') + b'"' in data  # quoted, behind a single quote
    with open(tmp_path / "p.csv", newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = list(csv.DictReader(f))
    assert sorted(os.fsencode(r["path"]) for r in rows) == sorted([raw, "'".encode() + os.fsencode(formula)])
    assert all(r["status"] == "ok" for r in rows)
    # JSON: valid UTF-8 text, the name as \udce9, back to the same bytes
    assert cli.main(_predict(tiny_ckpt, *d, extra=["--out", str(tmp_path / "p.json")])) == 0
    text = (tmp_path / "p.json").read_bytes().decode("utf-8")
    assert sorted(os.fsencode(r["path"]) for r in json.loads(text)) == sorted([raw, os.fsencode(formula)])
    # the terminal: one line each, the odd byte shown as \xe9
    capsys.readouterr()
    assert cli.main(_predict(tiny_ckpt, *d)) == 0
    assert "caf\\xe9.png: whole picture:" in capsys.readouterr().out


def test_outputs_are_checked_before_any_scoring(tmp_path, tiny_ckpt, monkeypatch, capsys):
    img = write_image(tmp_path / "a.png", 1)
    (tmp_path / "blocker").write_text("a file where --cam wants a folder")
    monkeypatch.setattr(predict, "score_inputs", lambda *a, **k: pytest.fail("scored before checking outputs"))
    assert cli.main(_predict(tiny_ckpt, img, extra=["--cam", str(tmp_path / "blocker")])) == 2
    err = capsys.readouterr().err
    assert f"--cam {tmp_path / 'blocker'}: cannot write overlays there" in err and len(err.splitlines()) == 1

    class Usage:
        free = 100  # bytes: less than one row

    monkeypatch.setattr(predict.shutil, "disk_usage", lambda path: Usage())
    assert cli.main(_predict(tiny_ckpt, img, extra=["--out", str(tmp_path / "p.csv")])) == 2
    assert "--out" in (err := capsys.readouterr().err) and "not enough free space (0.0 MB free" in err
    with pytest.raises(OutputError, match=r"--cam .*not enough free space"):
        predict.check_outputs(None, tmp_path / "cams", 10)
    assert not (tmp_path / "p.csv").exists()


def test_quiet_silences_every_bar(tmp_path, tiny_ckpt, capsys):
    img = write_image(tmp_path / "a.png", 1, size=64)
    argv = ["predict", "--model", str(tiny_ckpt), str(img), "--device", "cpu", "--cam", str(tmp_path / "cams"),
            "--out", str(tmp_path / "p.csv")]
    assert cli.main(argv) == 0
    loud = capsys.readouterr().err
    assert "grad-cam" in loud and "predict tiny.pt" in loud
    assert cli.main(argv + ["--quiet"]) == 0
    quiet = capsys.readouterr().err
    assert "grad-cam" not in quiet and "it/s" not in quiet and "%|" not in quiet
    assert quiet.splitlines()[-1].startswith("scored 1 image(s)")


def test_evaluate_cli(tmp_path, tiny_ckpt, course_folder, capsys):
    (course_folder / "test" / "fake" / "readme.txt").write_text("listed as skipped")
    out = tmp_path / "m.json"
    argv = ["evaluate", "--model", str(tiny_ckpt), "--bootstrap", "20", "--quiet", "--device", "cpu", "--precision",
            "fp32", "--min-per-class", "1", "--out", str(out)]  # a tiny set: its AUC all the same
    assert cli.main(argv + ["--data", str(course_folder)]) == 0  # course root -> its test/ split
    m = json.loads(out.read_text())
    assert (m["n_real"], m["n_fake"], m["n_skipped"]) == (4, 2, 1) and m["crop"] == "whole"
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


# ----------------------------------------------------------------------------- faces
def test_face_in_a_larger_picture_is_scored_like_the_crop(tmp_path, face_ckpt, demo_faces):
    """Each demo face pasted into an 800x600 blurred picture, scored with the framing of that face's own
    picture (what training records; here exact): the square found is the pasted picture within 8 pixels (the
    detector's box moves a little with the surroundings), and p(fake) is much closer to the picture's own than
    when the whole 800x600 picture is squashed. Measured with this deliberately over-sensitive model: mean
    |shift| 0.11 (crop) vs 0.39 (whole); with a trained model see bench/results/faces.json (``padded``)."""
    shifts_crop, shifts_whole = [], []
    for i, path in enumerate(demo_faces[:7]):
        face = load_rgb(path)
        measured = faces.measure_framing([face])
        if not measured["face_crops"]:  # one demo face of the 12 is below the detector's threshold
            continue
        x, y = 100 + 37 * i, 400 - 23 * i
        pic = _blurred(load_rgb(demo_faces[(i + 1) % len(demo_faces)]))
        pic.paste(face, (x, y))
        pic.save(tmp_path / f"pic{i}.png")
        own, inside = predict.score_inputs(_det(face_ckpt), [str(path), str(tmp_path / f"pic{i}.png")], "faces",
                                           faces.Framing(**measured["framing"]), OPTS)
        assert own.views[0][1][0].whole and own.p_fake == pytest.approx(_p_fake(face_ckpt, path), abs=1e-5)
        (_, (region,), _), = inside.views
        assert all(abs(a - b) <= 8 for a, b in zip(region.crop, (x, y, x + 128, y + 128))), region.crop
        shifts_crop.append(abs(inside.p_fake - own.p_fake))
        (whole,) = predict.score_inputs(_det(face_ckpt), [str(tmp_path / f"pic{i}.png")], "whole", faces.Framing(),
                                        OPTS)
        shifts_whole.append(abs(whole.p_fake - own.p_fake))
    assert len(shifts_crop) >= 6
    assert np.mean(shifts_crop) < 0.5 * np.mean(shifts_whole)


def test_face_crops_framed_by_the_checkpoint(tmp_path, face_ckpt, demo_faces):
    """The CLI with the checkpoint's recorded framing (one for all demo faces, whose own boxes vary): every
    scored square is centred on the pasted face picture (within 16 px) and about its size (not the 800x600
    picture): 95-150 px for the 128 px pictures."""
    pics, places = [], []
    for i, path in enumerate(demo_faces):
        pic = _blurred(load_rgb(demo_faces[(i + 1) % len(demo_faces)]))
        places.append((100 + 37 * i, 400 - 23 * i))
        pic.paste(load_rgb(path), places[-1])
        pics.append(tmp_path / f"pic{i}.png")
        pic.save(pics[-1])
    out = tmp_path / "p.json"
    assert cli.main(_predict(face_ckpt, *pics, extra=["--out", str(out)])) == 0
    rows = {r["path"]: r for r in json.loads(out.read_text())}
    found = 0
    for pic, (x, y) in zip(pics, places):
        r = rows[str(pic)]
        if r["status"] == "ok":
            found += 1
            left, top, right, bottom = r["region"]
            assert r["face"] == 1 and abs((left + right) / 2 - x - 64) <= 16 and abs((top + bottom) / 2 - y - 64) <= 16
            assert 90 <= right - left <= 160
        else:
            assert r["status"] == "no face found"
    assert found >= 9


def test_two_faces_two_rows_no_face_listed_and_whole_on_request(tmp_path, face_ckpt, demo_faces, capsys):
    a, b = load_rgb(demo_faces[1]), load_rgb(demo_faces[2])
    pic = _blurred(a)
    pic.paste(a, (60, 200))
    pic.paste(b.resize((192, 192)), (520, 150))  # the larger face is face 1
    pic.save(tmp_path / "two.jpg", quality=95)
    _blurred(a).save(tmp_path / "none.png")
    out = tmp_path / "p.csv"
    assert cli.main(_predict(face_ckpt, tmp_path / "two.jpg", tmp_path / "none.png", extra=["--out", str(out)])) == 0
    rows = _csv(out)
    assert [(Path(r["path"]).name, r["face"], r["status"]) for r in rows] == [
        ("two.jpg", "1", "ok"), ("two.jpg", "2", "ok"), ("none.png", "", "no face found")]
    x0, y0, x1, y1 = map(int, rows[0]["box"].split())
    assert 520 < x0 < x1 < 712 and 150 < y0 < y1 < 342
    x0, y0, x1, y1 = map(int, rows[1]["box"].split())
    assert 60 < x0 < x1 < 188 and 200 < y0 < y1 < 328
    assert "scored 1 image(s) (faces): " in capsys.readouterr().err
    # --crop whole: the picture as it is, one row, and the picture without a face gets a score too
    assert cli.main(_predict(face_ckpt, tmp_path / "two.jpg", tmp_path / "none.png",
                             extra=["--out", str(out), "--crop", "whole"])) == 0
    rows = _csv(out)
    assert [r["face"] for r in rows] == ["whole", "whole"]
    assert float(rows[0]["p_fake"]) == pytest.approx(_p_fake(face_ckpt, tmp_path / "two.jpg"), abs=1e-5)
    # the one-line answers name each face and where it is
    assert cli.main(_predict(face_ckpt, tmp_path / "two.jpg")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{tmp_path / 'two.jpg'}: face 1 at ")


def test_evaluate_with_faces_scores_each_picture_by_its_faces(tmp_path, face_ckpt, demo_faces):
    root = tmp_path / "labelled"
    for i, path in enumerate(demo_faces):
        cls = path.parent.name
        pic = _blurred(load_rgb(path))
        pic.paste(load_rgb(path), (300, 200))
        (root / cls).mkdir(parents=True, exist_ok=True)
        pic.save(root / cls / f"{i}.png")
    m = predict.evaluate_folder(face_ckpt, root, n_bootstrap=0, options=replace(OPTS, min_per_class=1))
    assert m["crop"] == "faces" and 1 <= m["n_skipped"] <= 3  # demo faces near the detector's threshold
    assert all(why.endswith(": no face found") for why in m["skipped"]) and m["n_real"] + m["n_fake"] >= 9
    det = _det(face_ckpt)
    scored = predict.score_inputs(det, sorted(str(p) for p in root.glob("*/*.png")), "faces",
                                  faces.Framing.of_checkpoint(det.ckpt), OPTS)
    ok = [s for s in scored if s.status == "ok"]
    y = [int("/fake/" in s.path) for s in ok]
    assert m["auc"] == pytest.approx(roc_auc_score(y, [s.p_fake for s in ok]), abs=1e-6)


# ----------------------------------------------------------------------------- videos
def _clip(path: Path, pictures, n: int = 20, rate: int = 10) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate, options={"crf": "12"})
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for k in range(n):
            frame = _blurred(pictures[0], (320, 240))
            frame.paste(pictures[k % len(pictures)], (40 + 4 * k, 50))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(frame), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_video_gets_the_mean_of_its_face_scores(tmp_path, face_ckpt, demo_faces, capsys):
    clip = _clip(tmp_path / "clip.mp4", [load_rgb(p) for p in demo_faces[1:4]])
    out = tmp_path / "v.json"
    assert cli.main(_predict(face_ckpt, clip, extra=["--out", str(out), "--frames", "6", "--per-frame"])) == 0
    rows = json.loads(out.read_text())
    frames, (mean,) = rows[:-1], rows[-1:]
    assert [r["frame"] for r in frames] == [2, 5, 8, 12, 15, 18] and all(r["face"] == 1 for r in frames)
    assert mean["face"] == "mean" and mean["frame"] is None
    assert mean["p_fake"] == pytest.approx(np.mean([r["p_fake"] for r in frames]), abs=1e-9)
    assert mean["verdict"] == ("fake" if mean["p_fake"] > 0.5 else "real")
    assert "and 1 video(s)" in capsys.readouterr().err
    # without --per-frame: the video's one row
    assert cli.main(_predict(face_ckpt, clip, extra=["--out", str(out), "--frames", "6"])) == 0
    assert json.loads(out.read_text()) == [mean]
    # a broken video and a video without a face are listed
    (tmp_path / "bad.webm").write_bytes(b"\x1aE\xdf\xa3 not really")
    blank = tmp_path / "blank.mp4"
    with av.open(str(blank), "w") as o:
        s = o.add_stream("mpeg4", rate=5)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for packet in [*s.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")),
                       *s.encode()]:
            o.mux(packet)
    assert cli.main(_predict(face_ckpt, tmp_path / "bad.webm", blank, extra=["--out", str(out)])) == 3
    status = {Path(r["path"]).name: r["status"] for r in json.loads(out.read_text())}
    assert status["bad.webm"].startswith("cannot decode video") and status["blank.mp4"] == "no face found in 1 frame(s)"


# ----------------------------------------------------------------------------- Grad-CAM
def test_cam_overlays_one_titled_figure_per_face(tmp_path, face_ckpt, demo_faces, monkeypatch):
    from deepfake_detect.plots import images

    titles = []
    real_scored_cam = images.scored_cam
    monkeypatch.setattr(images, "scored_cam", lambda overlay, title: titles.append(title) or real_scored_cam(
        overlay, title))
    a = load_rgb(demo_faces[1])
    pic = _blurred(a)
    pic.paste(a, (60, 200))
    pic.paste(load_rgb(demo_faces[2]), (520, 150))
    pic.save(tmp_path / "two.png")
    (tmp_path / "sub").mkdir()
    shutil.copy(demo_faces[3], tmp_path / "sub" / "two.png")  # the same stem twice
    rows = predict.predict_files(face_ckpt, [str(tmp_path / "two.png"), str(tmp_path / "sub" / "two.png")],
                                 tmp_path / "p.csv", cam_dir=tmp_path / "cams", options=OPTS)
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == ["two_0_face1_cam.png", "two_0_face2_cam.png",
                                                                      "two_1_face1_cam.png"]
    assert titles == [f"p(fake) {r['p_fake']:.3f}: {r['verdict']} (threshold 0.5)" for r in rows]
    with Image.open(tmp_path / "cams" / "two_1_face1_cam.png") as im:
        assert im.format == "PNG" and im.width > 128  # the 128 px face, a title and a colour bar


def test_scored_cam_has_title_and_colour_bar():
    from deepfake_detect.plots.images import scored_cam

    fig = scored_cam(np.zeros((100, 80, 3), np.uint8), "p(fake) 0.900: fake (threshold 0.5)")
    image_ax, bar = fig.axes
    assert image_ax.get_title() == "p(fake) 0.900: fake (threshold 0.5)"
    assert "Grad-CAM" in bar.get_ylabel() and bar.get_ylim() == (0.0, 1.0)


# ----------------------------------------------------------------------------- the checkpoint's domain
def test_demo_checkpoint_warns_once_on_other_pictures(tmp_path, demo_faces, capsys):
    domain = {"data": "demo", "image_size": 64, "native_size": [128, 128], "face_crops": False}
    ckpt = tiny_checkpoint(tmp_path / "demo.pt")
    state = torch.load(ckpt, weights_only=True)
    state["domain"] = domain
    torch.save(state, ckpt)
    assert cli.main(_predict(ckpt, *demo_faces[:3])) == 0
    assert "warning" not in capsys.readouterr().err  # demo pictures: nothing to say
    photos = [write_image(tmp_path / f"photo{i}.jpg", i, size=300) for i in range(3)]
    assert cli.main(_predict(ckpt, demo_faces[0], *photos)) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "trained on the procedural demo faces" in err
    assert "real/models/finetune-synth.pt" in err and "dvc pull" in err
    m = predict.evaluate_folder(ckpt, _labelled(tmp_path, photos), n_bootstrap=0, options=OPTS)
    assert m["n_real"] == 2 and "trained on the procedural demo faces" in capsys.readouterr().err


def _labelled(tmp_path, photos):
    root = tmp_path / "labelled"
    for i, p in enumerate(photos[:2] + photos[2:] * 2):
        dst = root / ("real" if i < 2 else "fake") / f"{i}.jpg"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dst)
    return root


def test_each_detector_gets_its_own_framing_and_the_same_p_as_alone(tmp_path, demo_faces):
    """Two detectors with different recorded framings (tight, like the face-swap one; loose, like the generated
    one): the face is found once and each is handed its own crop, so each one's p_fake in the two-detector path
    equals its p_fake with that detector alone on the same picture (fp32, 1e-5); a whole-face picture is scored
    whole by the loose one and cropped by the tight one."""
    from deepfake_detect.detector import Detector

    def ckpt(name, scale):
        domain = {"data": "demo", "image_size": 64, "native_size": [128, 128], "face_crops": True,
                  "framing": {"scale": scale, "ox": 0.0, "oy": 0.0}}
        ckpt_path = sensitive_checkpoint(tmp_path / f"{name}.pt", demo_faces, domain=domain, run=name)
        return Detector.load(ckpt_path, "cpu", "fp32")

    tight, loose = ckpt("tight", 0.8), ckpt("loose", 2.0)
    pic = _blurred(load_rgb(demo_faces[1]))
    pic.paste(load_rgb(demo_faces[0]), (300, 200))
    pic.save(tmp_path / "pic.png")
    paths = [str(tmp_path / "pic.png"), str(demo_faces[0])]
    both = predict.predict_files([tight, loose], paths, fmt="json", out=tmp_path / "both.json", options=OPTS)
    for det in (tight, loose):
        alone = predict.predict_files(det, paths, fmt="json", out=tmp_path / f"{det.name}.json", options=OPTS)
        assert [r["p_fake"] for r in alone] == pytest.approx([r[f"p_fake_{det.name}"] for r in both], abs=1e-5)
        assert [r["region"] for r in alone] == [r[f"region_{det.name}"] for r in both]
    in_photo, face_crop = both
    tight_crop, loose_crop = in_photo["region_tight"], in_photo["region_loose"]
    assert tight_crop[2] - tight_crop[0] < loose_crop[2] - loose_crop[0]
    assert face_crop["region_loose"] == [0, 0, 128, 128] and face_crop["region_tight"] != [0, 0, 128, 128]


def test_faces_too_small_to_judge_are_listed_not_scored(tmp_path, demo_faces):
    """A 224 px detector with a tight framing: a demo face pasted at 64 px into a 1000 px picture is found, but its
    crop would be blown up more than faces.MAX_UPSCALE times: its row says so, with no p_fake and no verdict, and
    it counts neither real nor fake; the same face pasted at 400 px is scored."""
    from deepfake_detect.detector import Detector

    domain = {"data": "demo", "image_size": 224, "native_size": [128, 128], "face_crops": True,
              "framing": {"scale": 0.8, "ox": 0.0, "oy": 0.0}}
    det = Detector.load(sensitive_checkpoint(tmp_path / "tight.pt", demo_faces, image_size=224, domain=domain),
                        "cpu", "fp32")
    for side, name in ((64, "small.png"), (400, "large.png")):
        pic = _blurred(load_rgb(demo_faces[1]), size=(1000, 750))
        pic.paste(load_rgb(demo_faces[0]).resize((side, side)), (300, 200))
        pic.save(tmp_path / name)
    rows = predict.predict_files(det, [str(tmp_path / "small.png"), str(tmp_path / "large.png")], fmt="json",
                                 out=tmp_path / "rows.json", options=OPTS)
    small = [r for r in rows if r["path"].endswith("small.png")]
    large = [r for r in rows if r["path"].endswith("large.png")]
    assert small and all(r["verdict"] is None and r["p_fake"] is None and "too small to judge" in r["status"]
                         for r in small), small
    assert any(r["status"] == predict.OK and r["verdict"] in ("real", "fake") for r in large), large
