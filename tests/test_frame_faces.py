"""The frame-faces stage (frame_faces.py): a folder with sources.csv cut to its faces in the same layout, the
leave-out layout, and course-layout folders whose train split is added (--train-also)."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from deepfake_detect.frame_faces import REPORT, frame_sourced
from deepfake_detect.sources import SOURCES, SourcesError

from conftest import write_image


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    """Demo face pictures (MTCNN finds a face in each)."""
    from deepfake_detect.demo import generate_dataset

    pool = tmp_path_factory.mktemp("pool")
    generate_dataset(pool, "fakes", n_train=12, n_val=3, n_test=3, progress=False)
    return sorted(pool.glob("*/*/*.png"))


def _sourced(root: Path, pictures: list[Path]) -> None:
    it = iter(pictures)
    lines = ["path,label,source,generator,split"]
    for label, source in (("real", "ffhq"), ("fake", "stylegan"), ("fake", "sdxl")):
        for split in ("train", "val", "test"):
            rel = f"{split}/{label}/{source}_0.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(next(it), root / rel)
            lines.append(f"{rel},{label},{source},{source},{split}")
    (root / SOURCES).write_text("\n".join(lines) + "\n")


def _rows(folder: Path) -> list[dict]:
    with open(folder / SOURCES, newline="") as f:
        return list(csv.DictReader(f))


def test_train_also_adds_only_the_train_split_of_a_course_folder(tmp_path, pictures):
    src, extra, dst = tmp_path / "gen", tmp_path / "stylegan_faces", tmp_path / "out"
    _sourced(src, pictures)
    faces = iter(pictures[9:])
    for split in ("train", "val", "test"):
        for label in ("real", "fake"):
            (extra / split / label).mkdir(parents=True)
            shutil.copy(next(faces), extra / split / label / "a.png")
    write_image(extra / "train" / "real" / "noise.jpg", 7, size=48)  # no face: listed, not lost

    frame_sourced(src, dst, size=64, margin=0.35, exclude=["sdxl"], progress=False, train_also=[str(extra)])

    rows = _rows(dst / "gen")
    added = [r for r in rows if r["source"].startswith("stylegan_faces-")]
    assert sorted((r["path"], r["label"], r["split"]) for r in added) == [
        ("train/fake/stylegan_faces__a.png.png", "fake", "train"),
        ("train/real/stylegan_faces__a.png.png", "real", "train")]
    for r in rows:  # every row's crop exists, at the stage's size
        assert (dst / "gen" / r["path"]).is_file()
    from PIL import Image
    assert Image.open(dst / "gen" / added[0]["path"]).size == (64, 64)
    # val and test are the sourced folder's only; the added train crops go into the leave-out layout too
    assert {r["split"] for r in added} == {"train"}
    without = _rows(dst / "gen_leaveout")
    assert {r["path"] for r in added} <= {r["path"] for r in without}
    assert not [r for r in without if r["source"] == "sdxl" and r["split"] != "test"]
    report = json.loads((dst / REPORT).read_text())
    assert report["n_crops"] == len(rows) and report["n_images"] == 9 + 3  # 9 sourced + extra's train split
    assert any("noise.jpg" in s and "no face" in s for s in report["skipped"])
    # the folder's own sources.csv is its listing, not an image without a face: not counted, not listed
    assert not [s for s in report["skipped"] if "sources.csv" in s]
    assert all(s.endswith("no face found") or "too small" in s or "decode" in s for s in report["skipped"]), \
        report["skipped"]
    assert report["per_split_source"]["train/stylegan_faces-real"] == {"images": 2, "crops": 1}
    assert not list((dst / "gen").glob(".train-also-*"))  # its working folder is gone


def test_train_also_without_a_train_split_names_the_folder(tmp_path, pictures):
    src = tmp_path / "gen"
    _sourced(src, pictures)
    (tmp_path / "flat" / "real").mkdir(parents=True)
    with pytest.raises(SourcesError, match=r"flat: no train/ folder"):
        frame_sourced(src, tmp_path / "out", size=64, margin=0.35, progress=False, train_also=[str(tmp_path / "flat")])
