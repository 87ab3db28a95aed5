"""prepare-splits: both layouts, group-disjoint splits, bad images, leakage, clear errors."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from deepfake_detect.splits import DatasetError, prepare_dataset, scan_source

from conftest import write_image

CFG = {"source": None, "groups": None, "val_fraction": 0.2, "test_fraction": 0.2}


def _prepare(root: Path, out: Path, **kw) -> tuple[dict, list[dict]]:
    cfg = {**CFG, "source": str(root), **kw.pop("cfg", {})}
    summary = prepare_dataset("fakes", cfg, out, progress=False, **kw)
    with open(out / "manifest.csv", newline="") as f:
        return summary, list(csv.DictReader(f))


def test_course_layout_counts_and_ratio(course_folder, tmp_path):
    summary, rows = _prepare(course_folder, tmp_path / "out")
    assert summary["layout"] == "course"
    for split in ("train", "val", "test"):
        assert (summary[f"{split}_real"], summary[f"{split}_fake"]) == (4, 2)
        assert summary[f"{split}_fake_real_ratio"] == 0.5
    assert len(rows) == 18
    assert {r["label"] for r in rows} == {"0", "1"}
    assert all(r["label"] == ("1" if "/fake/" in r["path"] else "0") for r in rows)
    assert all(len(r["sha1"]) == 40 and r["width"] == "32" for r in rows)


def test_flat_layout_group_disjoint(flat_folder, tmp_path):
    summary, rows = _prepare(flat_folder, tmp_path / "out", seed=3)
    assert summary["layout"] == "flat" and summary["n_images"] == 40
    groups: dict[str, set] = {}
    for r in rows:
        assert r["group"].startswith("id")
        groups.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in groups.values()), "a group spans two splits"
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    # deterministic given the seed
    _, again = _prepare(flat_folder, tmp_path / "out2", seed=3)
    assert [(r["path"], r["split"]) for r in rows] == [(r["path"], r["split"]) for r in again]


def test_flat_layout_without_groups_splits_by_image(flat_folder, tmp_path):
    (flat_folder / "groups.csv").unlink()
    summary, rows = _prepare(flat_folder, tmp_path / "out")
    assert summary["n_groups"] == 0
    assert sum(summary[f"{s}_real"] + summary[f"{s}_fake"] for s in ("train", "val", "test")) == 40
    assert summary["test_real"] >= 2 and summary["test_fake"] >= 2


def test_corrupt_image_is_named_or_skipped_and_listed(course_folder, tmp_path):
    bad = course_folder / "train" / "fake" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DatasetError, match="broken.jpg"):
        _prepare(course_folder, tmp_path / "out")
    summary, rows = _prepare(course_folder, tmp_path / "out", on_bad_image="skip")
    assert summary["n_bad_skipped"] == 1 and "broken.jpg" in summary["bad_skipped"][0]
    assert not any("broken" in r["path"] for r in rows)


def test_truncated_png_is_an_error(course_folder, tmp_path):
    p = course_folder / "val" / "real" / "real0.png"
    p.write_bytes(p.read_bytes()[:60])
    with pytest.raises(DatasetError, match="real0.png"):
        _prepare(course_folder, tmp_path / "out")


def test_duplicate_across_splits_lists_the_pair(course_folder, tmp_path, capsys):
    shutil.copy(course_folder / "train" / "real" / "real0.png", course_folder / "test" / "real" / "copy.png")
    with pytest.raises(DatasetError, match=r"leakage[\s\S]*(real0.png[\s\S]*copy.png|copy.png[\s\S]*real0.png)"):
        _prepare(course_folder, tmp_path / "out", on_leak="error")
    # default: warn, keep, and list the pair in the metrics
    summary, rows = _prepare(course_folder, tmp_path / "out")
    assert summary["n_leaked_across_splits"] == 1 and "copy.png" in summary["leaked_across_splits"][0]
    assert summary["test_real"] == 5 and "leakage" in capsys.readouterr().err
    # drop: the later split's copy is left out, the train copy stays
    summary, rows = _prepare(course_folder, tmp_path / "out", on_leak="drop")
    assert summary["test_real"] == 4 and summary["n_leak_dropped"] == 1
    assert not any(r["path"].endswith("copy.png") for r in rows)
    assert any(r["path"].endswith("train/real/real0.png") for r in rows)


def test_non_image_file_is_listed_not_dropped_silently(course_folder, tmp_path):
    (course_folder / "train" / "real" / "notes.txt").write_text("hello")
    summary, rows = _prepare(course_folder, tmp_path / "out")
    assert summary["n_ignored_files"] == 1 and summary["ignored_files"][0].endswith("notes.txt")
    assert len(rows) == 18


def test_grayscale_rgba_palette_16bit_are_converted(course_folder, tmp_path):
    import numpy as np
    from PIL import Image

    from deepfake_detect.data import load_rgb

    d = course_folder / "train" / "real"
    write_image(d / "grey.png", 1, mode="L")
    write_image(d / "rgba.png", 2, mode="RGBA")
    write_image(d / "pal.png", 3, mode="P")
    Image.fromarray((np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60)).save(d / "deep.png")
    write_image(d / "tiny.png", 4, size=8)
    summary, _ = _prepare(course_folder, tmp_path / "out")
    assert summary["train_real"] == 9
    im = load_rgb(d / "deep.png")
    assert im.mode == "RGB" and np.asarray(im).max() > 200  # 16-bit scaled, not clipped to white/black
    assert np.asarray(im).min() < 10


@pytest.mark.parametrize("breakage, message", [
    (lambda r: shutil.rmtree(r / "val"), "missing: .*val"),
    (lambda r: [p.unlink() for p in (r / "test" / "fake").iterdir()], "fake/: no images"),
    (lambda r: shutil.rmtree(r / "train" / "real"), "real/: missing class folder"),
])
def test_broken_layouts_name_the_folder(course_folder, tmp_path, breakage, message):
    breakage(course_folder)
    with pytest.raises(DatasetError, match=message):
        _prepare(course_folder, tmp_path / "out")


def test_missing_dataset_path(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        scan_source(tmp_path / "nowhere")


def test_groups_spanning_splits_in_course_layout(course_folder, tmp_path):
    rows = ["path,group", "train/real/real0.png,same", "test/real/real0.png,same"]
    (course_folder / "groups.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match="span several splits.*same"):
        _prepare(course_folder, tmp_path / "out")


def test_real_dfdc_counts():
    from conftest import shared_data_dir

    root = shared_data_dir() / "dfdc_faces"
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    _, rows, _, _ = scan_source(root)
    test = [r for r in rows if r["split"] == "test"]
    assert sum(r["label"] == 0 for r in test) == 1400 and sum(r["label"] == 1 for r in test) == 700


def test_stage_writes_every_dataset_or_none(course_folder, flat_folder, tmp_path):
    """The prepare-splits stage: a manifest, a metrics file and a sample figure per dataset of config.DATASETS;
    a dataset that fails its check leaves every earlier output as it was."""
    from PIL import Image

    from deepfake_detect.config import DATASETS, load_params
    from deepfake_detect.splits import run_stage

    from conftest import PARAMS_YAML

    params = load_params(PARAMS_YAML, {"data": {"fakes": {"source": str(course_folder)},
                                                "synthetic": {"source": str(flat_folder)}}})
    dirs = {"data_dir": tmp_path / "data", "metrics_dir": tmp_path / "metrics", "plots_dir": tmp_path / "plots"}
    out = run_stage(params, progress=False, **dirs)
    assert list(out) == list(DATASETS) and (out["fakes"]["test_real"], out["fakes"]["test_fake"]) == (4, 2)
    for name in DATASETS:
        assert (tmp_path / "data" / name / "manifest.csv").is_file()
        assert (tmp_path / "metrics" / f"{name}.json").is_file()
        with Image.open(tmp_path / "plots" / f"{name}.png") as im:
            assert im.format == "PNG" and im.size[0] > 300
    (tmp_path / "data" / "fakes" / "manifest.csv").unlink()
    shutil.rmtree(flat_folder / "fake")
    with pytest.raises(DatasetError):
        run_stage(params, progress=False, **dirs)
    assert not (tmp_path / "data" / "fakes" / "manifest.csv").exists()  # fakes passed its check, but nothing written
