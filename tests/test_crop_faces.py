"""deepfake-detect crop-faces: a dataset of face crops built from uncropped photos, in the source's layout,
that prepare-splits then reads like any other; a photo without a face is listed, never dropped in silence."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from deepfake_detect import cli
from deepfake_detect.crop import REPORT, crop_folder
from deepfake_detect.data import load_rgb, scan_source
from deepfake_detect.errors import UserError

PASTE = (260, 140)  # where each 128 px demo face sits in its 640 x 480 photo


def _photo(face: Image.Image, background: Image.Image) -> Image.Image:
    pic = background.resize((640, 480)).filter(ImageFilter.GaussianBlur(40))
    pic.paste(face, PASTE)
    return pic


@pytest.fixture
def photos(tmp_path, demo_faces):
    """The demo faces pasted into blurred photos in real/ + fake/, plus one photo with no face."""
    root = tmp_path / "photos"
    faces = [p for p in demo_faces if p.parent.name == "real"][:2] + [p for p in demo_faces
                                                                    if p.parent.name == "fake"][:2]
    for i, path in enumerate(faces):
        out = root / path.parent.name / f"p{i}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        _photo(load_rgb(path), load_rgb(faces[(i + 1) % len(faces)])).save(out, quality=95)
    blank = load_rgb(faces[0]).resize((640, 480)).filter(ImageFilter.GaussianBlur(40))
    blank.save(root / "real" / "empty.jpg", quality=95)
    (root / "notes.txt").write_text("not a photo")
    return root, faces


def test_each_face_becomes_a_crop_at_its_place_and_the_rest_is_listed(tmp_path, photos, capsys):
    root, faces = photos
    out = tmp_path / "crops"
    summary = crop_folder(root, out, size=96, margin=0.35, progress=False)
    made = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    found = {c["crop"].removeprefix(f"{out}/") for c in summary["crops"]}
    assert set(made) == found and len(made) >= 3  # one demo face of the 12 is below MTCNN's threshold
    assert all(m.rsplit("/", 1)[0] in {"real", "fake"} for m in made)
    for c in summary["crops"]:
        with Image.open(c["crop"]) as im:
            assert im.size == (96, 96)
        x0, y0, x1, y1 = c["box"]  # the detected box lies on the pasted face, not elsewhere in the photo
        assert PASTE[0] - 8 <= x0 < x1 <= PASTE[0] + 136 and PASTE[1] - 8 <= y0 < y1 <= PASTE[1] + 136, c
    assert f"{root}/real/empty.jpg: no face found" in summary["skipped"]
    assert f"{root}/notes.txt: not an image file" in summary["skipped"]
    assert summary["n_images"] == 5 and summary["n_crops"] + summary["n_skipped"] >= 6
    assert json.loads((out / REPORT).read_text()) == summary
    err = capsys.readouterr().err
    assert "crop-faces: skipped " in err and "empty.jpg: no face found" in err


def test_a_crop_is_close_to_the_face_it_was_pasted_from(tmp_path, photos):
    """Cropped at the demo's own framing (margin: its picture is ~2x the face box), resized back to 128 px,
    the crop is the original picture within a small mean error (the detector's box moves a few pixels)."""
    root, faces = photos
    summary = crop_folder(root, tmp_path / "crops", size=128, margin=1.05, progress=False)
    src_of = {f"p{i}": path for i, path in enumerate(faces)}
    errors = []
    for c in summary["crops"]:
        original = np.asarray(load_rgb(src_of[c["source"].rsplit("/", 1)[1].split(".")[0]]), np.float32)
        errors.append(np.abs(np.asarray(load_rgb(c["crop"]), np.float32) - original).mean())
    assert errors and max(errors) < 25.0, errors  # 0..255 scale; a crop of the blurred background is ~45


def test_prepare_splits_reads_the_crops_in_the_sources_layout(tmp_path, photos):
    root, _ = photos
    summary = crop_folder(root, tmp_path / "crops", size=64, progress=False)
    layout, rows, ignored, unreadable = scan_source(tmp_path / "crops")  # what prepare-splits lists
    assert layout == "flat" and len(rows) == summary["n_crops"] and not unreadable
    assert not ignored  # the report beside real/ and fake/ is not read as data
    assert all(r["label"] == (Path(r["path"]).parent.name == "fake") for r in rows)


def test_cli_and_its_errors(tmp_path, photos, capsys):
    root, _ = photos
    assert cli.main(["crop-faces", str(root), str(tmp_path / "c"), "--size", "64", "--quiet"]) == 0
    assert "crop(s) of 5 image(s)" in capsys.readouterr().out
    assert cli.main(["crop-faces", str(tmp_path / "nope"), str(tmp_path / "c")]) == 2
    assert "not a folder" in capsys.readouterr().err
    with pytest.raises(UserError, match="must lie outside"):
        crop_folder(root, root / "crops", progress=False)
