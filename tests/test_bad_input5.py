"""Bad input, round five (issue 36): the Detector API, model cards, the release stage, crop-faces --replace and
predict's smaller holes. Each test reproduces a probe that, on f6db3ae, gave a traceback, a silent wrong verdict
or a deleted file, and checks that it now gives one line naming the input and the fix (exit 2 at the CLI, a
TypeError / ValueError in the API), or the right answer. Row 1 (small faces) is tested elsewhere."""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_release import make_release

from deepfake_detect import cli, detector, predict, release
from deepfake_detect.checkpoint import read_checkpoint
from deepfake_detect.detector import Detector, DetectorError, sha256_of
from deepfake_detect.io import OutputError

from conftest import REPO, tiny_checkpoint, write_image

SHIPPED = REPO / "src" / "deepfake_detect" / "detectors"


def _card(pt: Path, **fields) -> Path:
    """A model card beside ``pt`` bound to it (its run, its SHA-256), with ``fields`` changed."""
    card = {"format": "deepfake-detect-card", "name": "mine", "run": read_checkpoint(pt).run,
            "weights_sha256": sha256_of(pt), "threshold": 0.5, "threshold_rule": "balanced", "calibration": None,
            **fields}
    path = pt.with_suffix(".json")
    path.write_text(json.dumps(card))
    return path


def _one_line_exit_2(argv, capsys) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


@pytest.fixture
def tiny(tmp_path) -> Path:
    return tiny_checkpoint(tmp_path / "m" / "tiny.pt")


# ------------------------------------------------------------------------ row 2: a .pt without its card
def test_a_shipped_checkpoint_without_its_card_uses_its_calibrated_threshold(tmp_path):
    """A copy of faceswap.pt alone applied the calibration but compared with the raw threshold (0.2235)."""
    pt = shutil.copy(SHIPPED / "faceswap.pt", tmp_path / "faceswap.pt")
    alone = Detector.load(pt, "cpu", "fp32")
    shipped = Detector.load("faceswap", "cpu", "fp32")
    ckpt = read_checkpoint(pt)
    assert alone.calibration == shipped.calibration is not None
    assert alone.threshold == pytest.approx(ckpt.output_threshold) == pytest.approx(shipped.threshold)
    assert alone.threshold != pytest.approx(ckpt.threshold)
    assert "output_threshold" in alone.threshold_source
    p = np.array([0.2, 0.3, 0.35, 0.5])
    np.testing.assert_array_equal(alone.is_fake(p), shipped.is_fake(p))


# ------------------------------------------------------------------------ row 3: card values
@pytest.mark.parametrize("fields, key", [
    ({"calibration": {"method": "platt", "a": 0, "b": 0}}, "calibration.a"),
    ({"calibration": {"method": "platt", "a": -1.5, "b": 0}}, "calibration.a"),
    ({"calibration": {"method": "platt", "a": 1e308, "b": 0}}, "calibration.a"),
    ({"calibration": {"method": "platt", "a": float("nan"), "b": 0}}, "calibration.a"),
    ({"calibration": {"method": "platt", "a": 1.0, "b": 1e308}}, "calibration.b"),
    ({"calibration": {"method": "platt", "a": 1.0, "b": float("inf")}}, "calibration.b"),
    ({"threshold": True}, "threshold"),
    ({"threshold": "0.99"}, "threshold"),
    ({"threshold": "high"}, "threshold"),
    ({"threshold": None}, "threshold"),
    ({"threshold": [0.5]}, "threshold"),
    ({"threshold": 0}, "threshold"),
    ({"threshold": 1.0}, "threshold"),
    ({"threshold": float("nan")}, "threshold"),
], ids=["a0", "a-neg", "a-huge", "a-nan", "b-huge", "b-inf", "thr-true", "thr-string-number", "thr-string",
        "thr-null", "thr-list", "thr-0", "thr-1", "thr-nan"])
def test_card_values_are_range_checked(tiny, fields, key, capsys, tmp_path):
    card = _card(tiny, **fields)
    with pytest.raises(DetectorError) as e:
        Detector.load(tiny, "cpu", "fp32")
    assert str(card) in str(e.value) and f"'{key}'" in str(e.value) and "\n" not in str(e.value)
    img = write_image(tmp_path / "a.png", 1, size=64)
    err = _one_line_exit_2(["predict", "--model", str(tiny), str(img), "--quiet", "--device", "cpu", "--crop",
                            "whole"], capsys)
    assert str(card) in err and key in err


def test_a_nan_score_is_never_a_verdict(tiny):
    det = Detector.load(tiny, "cpu", "fp32")
    with pytest.raises(DetectorError, match="NaN"):
        det.is_fake([0.2, math.nan])


# ------------------------------------------------------------------------ row 4: card and weights bound
def test_swapped_weights_are_refused_naming_both_files(tmp_path):
    pt = shutil.copy(SHIPPED / "faceswap.pt", tmp_path / "x.pt")
    shutil.copy(SHIPPED / "generated.json", tmp_path / "x.json")
    with pytest.raises(DetectorError) as e:
        Detector.load(pt, "cpu", "fp32")
    msg = str(e.value)
    run = json.loads((SHIPPED / "generated.json").read_text())["run"]  # the card's run, named in the message
    assert str(tmp_path / "x.json") in msg and str(pt) in msg and run in msg and "\n" not in msg


def test_changed_weights_of_the_same_run_are_refused(tiny):
    _card(tiny)
    Detector.load(tiny, "cpu", "fp32")  # bound: loads
    state = torch.load(tiny, weights_only=True)
    name = next(k for k, t in state["state_dict"].items() if t.is_floating_point())
    state["state_dict"][name] = torch.zeros_like(state["state_dict"][name])  # a zeroed layer, same run
    torch.save(state, tiny)
    with pytest.raises(DetectorError, match="made for other weights") as e:
        Detector.load(tiny, "cpu", "fp32")
    assert str(tiny) in str(e.value) and str(tiny.with_suffix(".json")) in str(e.value)


def test_a_card_without_its_checksum_says_to_rerun_the_release(tiny):
    card = _card(tiny)
    data = json.loads(card.read_text())
    del data["weights_sha256"]
    card.write_text(json.dumps(data))
    with pytest.raises(DetectorError, match=r"no 'weights_sha256'.*dvc repro real/dvc.yaml:release"):
        Detector.load(tiny, "cpu", "fp32")


def test_the_shipped_cards_are_bound_to_their_weights():
    for name in detector.SHIPPED:
        card = json.loads((SHIPPED / f"{name}.json").read_text())
        assert card["weights_sha256"] == sha256_of(SHIPPED / f"{name}.pt")
        assert card["run"] == read_checkpoint(SHIPPED / f"{name}.pt").run
        assert Detector.load(name, "cpu", "fp32").card["weights_sha256"] == card["weights_sha256"]


# ------------------------------------------------------------------------ row 5: crop-faces --replace
def _centre_face(im):
    from deepfake_detect.faces import Face

    w, h = im.size
    return [Face((w / 4, h / 4, 3 * w / 4, 3 * h / 4), 0.99)]


def _never(im):
    raise AssertionError("a photo was read before the checks on DST")


@pytest.fixture
def photos(tmp_path) -> Path:
    root = tmp_path / "photos"
    for i in range(4):
        write_image(root / ("real" if i < 2 else "fake") / f"{i}.png", i, size=64)
    return root


def test_replace_never_empties_a_folder_of_other_files(tmp_path, photos):
    from deepfake_detect.crop import crop_folder

    home = tmp_path / "home"
    home.mkdir()
    for name, text in (("thesis.txt", "years of work"), (".bashrc", "alias"), ("crop_faces.json", "{}")):
        (home / name).write_text(text)
    with pytest.raises(OutputError) as e:
        crop_folder(photos, home, detector=_never, progress=False, replace=True)
    assert "--replace" in str(e.value) and "\n" not in str(e.value)
    assert sorted(p.name for p in home.iterdir()) == [".bashrc", "crop_faces.json", "thesis.txt"]


def test_replace_keeps_a_file_a_person_put_in_an_earlier_output(tmp_path, photos, capsys):
    from deepfake_detect import crop

    dst = tmp_path / "crops"
    crop.crop_folder(photos, dst, size=32, detector=_centre_face, progress=False)
    (dst / "groups.csv").write_text("path,group\nreal/0.png.png,a\n")  # where docs/data.md says it goes
    with pytest.raises(OutputError, match=r"groups\.csv is not listed in its crop_faces\.json"):
        crop.crop_folder(photos, dst, size=32, detector=_never, progress=False, replace=True)
    assert (dst / "groups.csv").is_file() and len(list(dst.rglob("*.png"))) == 4
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(crop, "FaceFinder", lambda: _never)
        err = _one_line_exit_2(["crop-faces", str(photos), str(dst), "--replace", "--quiet"], capsys)
    assert "groups.csv" in err
    (dst / "groups.csv").unlink()
    summary = crop.crop_folder(photos, dst, size=48, detector=_centre_face, progress=False, replace=True)
    assert summary["n_crops"] == 4 and sorted(summary["files"]) == sorted(
        p.relative_to(dst).as_posix() for p in dst.rglob("*.png"))
    assert Image.open(dst / "real" / "0.png.png").size == (48, 48)


def test_replace_never_follows_nor_removes_a_link(tmp_path, photos):
    from deepfake_detect.crop import crop_folder

    dst = tmp_path / "crops"
    crop_folder(photos, dst, size=32, detector=_centre_face, progress=False)
    (dst / "src").symlink_to(photos, target_is_directory=True)  # SRC, reached through a link inside DST
    with pytest.raises(OutputError, match="symbolic link"):
        crop_folder(dst / "src", dst, size=32, detector=_never, progress=False, replace=True)
    assert (dst / "src").is_symlink() and len(list(photos.rglob("*.png"))) == 4
    assert len(list((dst / "real").glob("*.png"))) == 2  # nothing removed


# ------------------------------------------------------------------------ row 6: the release fails closed
def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _breakages(root: Path):
    ev, train = root / "metrics/evaluate/steady.json", root / "metrics/train/steady/metrics.json"
    good_ev, good_train = ev.read_text(), train.read_text()
    yield "truncated evaluate JSON", lambda: ev.write_text(good_ev[: len(good_ev) // 2])
    yield "empty evaluate JSON", lambda: ev.write_text("")
    yield "list evaluate JSON", lambda: ev.write_text("[1, 2]")
    yield "folder evaluate JSON", lambda: (ev.unlink(), ev.mkdir())
    yield "bad metrics.json", lambda: train.write_text("{\"best_val_auc\": ")
    yield "NaN best_val_auc", lambda: train.write_text(json.dumps({**json.loads(good_train),
                                                                    "best_val_auc": float("nan")}))
    yield "string auc", lambda: ev.write_text(json.dumps({**json.loads(good_ev), "auc": "0.9"}))
    # valid inputs that fail only after scoring: still nothing replaced
    yield "metrics of another model", lambda: ev.write_text(json.dumps(
        {**json.loads(good_ev), "auc": 1.0 - json.loads(good_ev)["auc"]}))


def test_a_failed_release_leaves_the_shipped_files_intact(tmp_path):
    _, out, params, root, _ = make_release(tmp_path)
    before = _snapshot(out)
    assert set(before) == {"faceswap.pt", "faceswap.json", "faceswap.md", "faceswap_reliability.png"}
    ev, train = root / "metrics/evaluate/steady.json", root / "metrics/train/steady/metrics.json"
    good_ev, good_train = ev.read_bytes(), train.read_bytes()
    options = release.ReleaseOptions(data_dir=root / "data", models_dir=root / "models",
                                     metrics_dir=root / "metrics", batch_size=8)
    for what, breakage in _breakages(root):
        breakage()
        with pytest.raises(release.ReleaseError) as e:
            release.run_stage(params, [("faceswap", "fakes")], [], out, options)
        assert "\n" not in str(e.value), what
        assert _snapshot(out) == before, f"{what}: the shipped files changed"
        if ev.is_dir():
            ev.rmdir()
        ev.write_bytes(good_ev)
        train.write_bytes(good_train)
    cards = release.run_stage(params, [("faceswap", "fakes")], [], out, options)  # the inputs repaired: it works
    assert cards["faceswap"]["weights_sha256"] == sha256_of(out / "faceswap.pt")


def test_the_stage_cli_says_one_line_exit_2(tmp_path, capsys, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("release_stage", REPO / "stages" / "release.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    from deepfake_detect.errors import run_main

    out = tmp_path / "detectors"
    out.mkdir()
    (out / "faceswap.json").write_text("kept")
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    monkeypatch.chdir(tmp_path)  # no metrics/ here: the first evaluate JSON is missing
    assert run_main(stage.main, ["--task", "faceswap=fakes", "--out", str(out), "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "metrics/evaluate" in err and (out / "faceswap.json").read_text() == "kept"


@pytest.mark.parametrize("pipeline", ["dvc.yaml", "real/dvc.yaml"])
def test_the_release_outs_persist(pipeline):
    """DVC deletes a stage's outputs before it runs it: the package's detectors must not be among them."""
    stages = yaml.safe_load((REPO / pipeline).read_text())["stages"]
    if "release" not in stages:
        pytest.skip(f"{pipeline} has no release stage")
    for out in stages["release"]["outs"]:
        (path, flags), = out.items()
        assert flags == {"cache": False, "persist": True}, path


# ------------------------------------------------------------------------ row 7: fp32 on a CPU by default
def test_predict_and_the_api_score_in_fp32_on_a_cpu_and_say_so(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(detector, "native_bf16", lambda device: True)  # a CPU with native bf16
    assert Detector.load(tiny, "cpu").precision == "fp32"
    assert detector.stage_precision("auto", "cpu") == "bf16"  # the evaluation stage keeps its measured choice
    img = write_image(tmp_path / "a.png", 1, size=64)
    assert cli.main(["predict", "--model", str(tiny), str(img), "--quiet", "--device", "cpu", "--crop", "whole",
                     "--format", "json"]) == 0
    captured = capsys.readouterr()
    (row,) = json.loads(captured.out)
    assert row["precision"] == "fp32" and "precision fp32" in captured.err
    assert cli.main(["predict", "--model", str(tiny), str(img), "--quiet", "--device", "cpu", "--crop", "whole",
                     "--precision", "bf16", "--out", str(tmp_path / "p.csv")]) == 0
    assert "precision bf16" in capsys.readouterr().err
    assert "bf16" in (tmp_path / "p.csv").read_text().splitlines()[1]


# ------------------------------------------------------------------------ row 8: what Detector.score takes
def test_score_takes_documented_pictures(tiny):
    det = Detector.load(tiny, "cpu", "fp32")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    ref = det.score([rgb])
    one = det.score(rgb)  # one array is one picture
    assert one.shape == (1,) and one[0] == pytest.approx(ref[0])
    assert det.score(np.stack([rgb, rgb])).shape == (2,)  # a 4-D array is a batch
    grey = rgb[:, :, 0]
    assert det.score([grey])[0] == pytest.approx(det.score([np.repeat(grey[:, :, None], 3, 2)])[0])
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    assert det.score([rgba])[0] == pytest.approx(ref[0])
    wide = rgb.astype(np.uint16) * 257  # 16-bit: scaled to 8 bits
    assert det.score([wide])[0] == pytest.approx(ref[0], abs=1e-6)
    assert det.score([Image.fromarray(rgb)])[0] == pytest.approx(ref[0])
    assert det.score([Image.fromarray(rgba, "RGBA")])[0] == pytest.approx(ref[0])
    assert det.score([Image.fromarray(grey, "L")])[0] == pytest.approx(det.score([grey])[0])
    i16 = Image.fromarray(grey.astype(np.uint16) * 257)  # mode I;16
    assert det.score([i16])[0] == pytest.approx(det.score([grey])[0], abs=1e-6)
    assert det.score([Image.fromarray(rgb).convert("P")]).shape == (1,)


@pytest.mark.parametrize("images, kind, words", [
    ([np.random.default_rng(0).random((32, 32, 3))], TypeError, "float64 array"),
    ([np.zeros((32, 32, 3), dtype=bool)], TypeError, "bool array"),
    ([np.full((32, 32, 3), np.nan, dtype=np.float32)], TypeError, "float32 array"),
    ([np.zeros((0, 0, 3), dtype=np.uint8)], ValueError, "empty picture"),
    ([np.zeros(30, dtype=np.uint8)], ValueError, "shape (30,)"),
    ([np.zeros((8, 8, 5), dtype=np.uint8)], ValueError, "shape (8, 8, 5)"),
    ("face.png", TypeError, "score_paths"),
    (["face.png"], TypeError, "score_paths"),
    ([Path("face.png")], TypeError, "score_paths"),
    (42, TypeError, "takes a list of pictures (uint8 H x W x 3 arrays or PIL images), got int"),
    ([object()], TypeError, "image 0: a object, not a picture"),
], ids=["float", "bool", "nan", "0x0", "1-D", "5-channel", "path", "path-list", "Path", "int", "object"])
def test_score_refuses_anything_else_in_one_line(tiny, images, kind, words):
    det = Detector.load(tiny, "cpu", "fp32")
    with pytest.raises(kind) as e:
        det.score(images)
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("batch_size, kind", [(0, ValueError), (-1, ValueError), (1.5, TypeError),
                                              (True, TypeError)])
def test_batch_size_is_checked(tiny, batch_size, kind):
    det = Detector.load(tiny, "cpu", "fp32")
    with pytest.raises(kind, match="batch_size"):
        det.score([np.zeros((32, 32, 3), np.uint8)], batch_size=batch_size)
    with pytest.raises(kind, match="batch_size"):
        det.score_paths(["a.png"], batch_size=batch_size, progress=False)


def test_score_paths_of_one_string_is_one_file(tiny, tmp_path):
    det = Detector.load(tiny, "cpu", "fp32")
    img = write_image(tmp_path / "a.png", 1, size=64)
    p, errors = det.score_paths(str(img), progress=False)
    assert p.shape == (1,) and not errors
    assert p[0] == pytest.approx(det.score_paths([img], progress=False)[0][0])
    with pytest.raises(TypeError, match="score_paths: item 0"):
        det.score_paths([np.zeros((8, 8, 3), np.uint8)], progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device, words", [("cuda:0", "no CUDA device"), ("cuda", "no CUDA device"),
                                           ("tpu", "unknown device")])
def test_a_device_that_is_not_there_is_one_line(tiny, device, words):
    with pytest.raises(DetectorError, match=words) as e:
        Detector.load(tiny, device, "fp32")
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------ row 9: the smaller ones
@pytest.mark.parametrize("model", ["", ".", "/", "  "])
def test_predict_model_without_a_file_name_is_one_line(model, tmp_path, capsys):
    img = write_image(tmp_path / "a.png", 1, size=64)
    err = _one_line_exit_2(["predict", "--model", model, str(img), "--quiet", "--device", "cpu"], capsys)
    assert "not a checkpoint file" in err


def test_evaluate_cli_has_the_too_few_guard(tiny, tmp_path, capsys):
    data = tmp_path / "few"
    for i in range(3):
        write_image(data / ("real" if i < 2 else "fake") / f"{i}.png", i, size=64)
    out = tmp_path / "m.json"
    assert cli.main(["evaluate", "--model", str(tiny), "--data", str(data), "--quiet", "--device", "cpu",
                     "--crop", "whole", "--bootstrap", "100", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"warning: {data}: too few: 2 real / 1 fake" in captured.err and "auc: None" in " ".join(
        captured.out.split())
    m = json.loads(out.read_text())
    assert m["auc"] is m["auc_ci_low"] is m["auc_ci_high"] is None and m["too_few"].startswith("too few: 2 real")
    assert (m["n_real"], m["n_fake"]) == (2, 1)


def test_odd_file_names_are_shown_escaped(tiny, tmp_path, capsys):
    folder = tmp_path / "odd"
    names = ["a\nforged: whole picture: real.png", "\x1b[31mred.png", "b\u202egnp.exe.png"]
    for i, name in enumerate(names):
        write_image(folder / name, i, size=64)
    write_image(folder / "c\nbroken.png", 9).write_bytes(b"not an image")
    assert cli.main(["predict", "--model", str(tiny), str(folder), "--quiet", "--device", "cpu", "--crop",
                     "whole"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 4 and "\x1b" not in captured.out + captured.err and "\u202e" not in captured.out
    assert any("a\\nforged: whole" in ln for ln in lines) and any("\\x1b[31mred.png" in ln for ln in lines)


def test_a_device_or_fifo_is_not_a_regular_file(tiny, tmp_path, capsys):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    inputs = [str(fifo)] + (["/dev/zero"] if Path("/dev/zero").exists() else [])
    out = tmp_path / "p.json"
    assert cli.main(["predict", "--model", str(tiny), *inputs, "--quiet", "--device", "cpu", "--crop", "whole",
                     "--out", str(out)]) == predict.NOTHING_SCORED
    rows = json.loads(out.read_text())
    assert [r["status"] for r in rows] == ["not a regular file"] * len(inputs)
    assert "no such file" not in capsys.readouterr().err


def test_out_never_overwrites_the_package_nor_a_file_without_force(tiny, tmp_path, capsys):
    img = write_image(tmp_path / "a.png", 1, size=64)
    base = ["predict", "--model", str(tiny), str(img), "--quiet", "--device", "cpu", "--crop", "whole"]
    card = SHIPPED / "faceswap.json"
    before = card.read_bytes()
    for target in (card, SHIPPED / "brand-new.json"):
        err = _one_line_exit_2(base + ["--out", str(target), "--force"], capsys)
        assert "inside the deepfake-detect package" in err
    assert card.read_bytes() == before and not (SHIPPED / "brand-new.json").exists()
    with pytest.raises(predict.PredictError, match="package"):
        predict.predict_files(tiny, [str(img)], out=card, options=predict.PredictOptions(device="cpu",
                                                                                         progress=False))
    assert card.read_bytes() == before
    mine = tmp_path / "scores.csv"
    mine.write_text("my spreadsheet")
    err = _one_line_exit_2(base + ["--out", str(mine)], capsys)
    assert "already exists" in err and "--force" in err and mine.read_text() == "my spreadsheet"
    assert cli.main(base + ["--out", str(mine), "--force"]) == 0 and mine.read_text().startswith("path,")
    assert cli.main(base + ["--out", str(mine)]) == 0  # predict's own earlier output: rerunning replaces it
    capsys.readouterr()
    metrics = tmp_path / "m.json"
    metrics.write_text("{}")
    err = _one_line_exit_2(["evaluate", "--model", str(tiny), "--data", str(tmp_path), "--quiet", "--out",
                            str(metrics)], capsys)
    assert "already exists" in err and metrics.read_text() == "{}"


@pytest.mark.parametrize("frames, ok", [("300", True), ("301", False), ("100000", False)])
def test_frames_has_an_upper_bound(frames, ok, capsys):
    argv = ["predict", "--model", "m.pt", "v.mp4", "--frames", frames]
    if ok:
        assert cli.get_args_parser().parse_args(argv).frames == int(frames)
        return
    with pytest.raises(SystemExit) as e:
        cli.get_args_parser().parse_args(argv)
    assert e.value.code == 2 and "must be an integer in [1, 300]" in capsys.readouterr().err
