"""prepare-splits: both layouts, group-disjoint splits, bad images, leakage, clear errors."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from deepfake_detect.data import DatasetError, scan_source
from deepfake_detect.splits import SplitOptions, prepare_dataset

from conftest import write_image

CFG = {"source": None, "groups": None, "val_fraction": 0.2, "test_fraction": 0.2}


def _prepare(root: Path, out: Path, **kw) -> tuple[dict, list[dict]]:
    cfg = {**CFG, "source": str(root), **kw.pop("cfg", {})}
    summary = prepare_dataset("fakes", cfg, out, SplitOptions(**kw), progress=False)
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


def _write_groups(root: Path, rows: dict[str, str], name: str = "groups.csv") -> Path:
    """A groups CSV (path,group) under ``root``; ``rows`` maps path (relative to root) -> group."""
    (root / name).write_text("path,group\n" + "".join(f"{p},{g}\n" for p, g in rows.items()))
    return root / name


def _course_groups(root: Path) -> dict[str, str]:
    """Every image of a course folder in its own group."""
    return {p.relative_to(root).as_posix(): f"g{i}" for i, p in enumerate(sorted(root.glob("*/*/*.png")))}


def test_groups_spanning_splits_in_course_layout(course_folder, tmp_path):
    _write_groups(course_folder, {**_course_groups(course_folder), "train/real/real0.png": "same",
                                  "test/real/real0.png": "same"})
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


# ----------------------------------------------------------------------------- groups files that do not fit
def test_groups_csv_that_matches_no_image_is_an_error(flat_folder, tmp_path):
    """Paths relative to the wrong folder used to turn the group-disjoint split off without a word."""
    rows = list(csv.DictReader(open(flat_folder / "groups.csv")))
    _write_groups(flat_folder, {f"flat/{r['path']}": r["group"] for r in rows})
    with pytest.raises(DatasetError, match=r"groups.csv: none of its 40 path\(s\) names an image of .*flat "
                                           r"\(paths are relative to .*flat: its first row means "
                                           r".*flat/flat/real/g0_0.png\)"):
        _prepare(flat_folder, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_images_without_a_group_are_an_error_naming_them(flat_folder, tmp_path):
    rows = list(csv.DictReader(open(flat_folder / "groups.csv")))
    _write_groups(flat_folder, {r["path"]: r["group"] for r in rows if not r["path"].startswith("real/g1_")})
    with pytest.raises(DatasetError, match=r"2 of 40 image\(s\) of .*flat have no group in .*groups.csv, so their "
                                           r"identities could span splits.*real/g1_0.png, .*real/g1_1.png$"):
        _prepare(flat_folder, tmp_path / "out")
    _write_groups(flat_folder, {r["path"]: ("" if r["path"] == "fake/g2_0.png" else r["group"]) for r in rows})
    with pytest.raises(DatasetError, match=r"1 of 40 image\(s\).*fake/g2_0.png$"):  # an empty group is no group
        _prepare(flat_folder, tmp_path / "out")


def test_course_layout_with_a_partial_groups_csv_is_an_error(course_folder, tmp_path):
    _write_groups(course_folder, {"train/real/real0.png": "a", "test/real/real0.png": "b"})
    with pytest.raises(DatasetError, match=r"16 of 18 image\(s\) .* have no group"):
        _prepare(course_folder, tmp_path / "out")


def test_groups_rows_without_an_image_are_listed(flat_folder, tmp_path, capsys):
    rows = {r["path"]: r["group"] for r in csv.DictReader(open(flat_folder / "groups.csv"))}
    _write_groups(flat_folder, {**{f"./{p}": g for p, g in list(rows.items())[:20]},
                                **{str(flat_folder / p): g for p, g in list(rows.items())[20:]},  # absolute
                                "real/deleted.png": "id3"})
    summary, manifest = _prepare(flat_folder, tmp_path / "out")
    assert summary["n_groups"] == 10 and all(r["group"] for r in manifest)  # ./x and /abs/x name x
    assert summary["groups_unmatched"] == [str(flat_folder / "real" / "deleted.png")]
    assert summary["n_groups_unmatched"] == 1
    assert "1 row(s) of" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    (b"path,group\nreal/g0_0.png,id0\nreal/g0_0.png,id7\n", r"groups.csv, line 3: 'real/g0_0.png' is listed "
                                                           r"twice, in groups 'id0' and 'id7'"),
    (b"path,group\nreal/g0_0.png,id0\nreal/caf\xe9.png,id0\n", r"groups.csv, line 3: not UTF-8 text; save the file "
                                                              r"as UTF-8"),
    (b"file;identity\n", r"needs columns 'path' and 'group' \(has \['file;identity'\]\)"),
], ids=["twice", "latin-1", "columns"])
def test_unreadable_groups_csv_is_one_error_naming_it(flat_folder, tmp_path, content, message):
    (flat_folder / "groups.csv").write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        _prepare(flat_folder, tmp_path / "out")


def test_groups_key_naming_no_file(flat_folder, tmp_path):
    with pytest.raises(DatasetError, match=r"params.yaml: 'data.fakes.groups' is 'nope.csv', which is not a file"):
        _prepare(flat_folder, tmp_path / "out", cfg={"groups": "nope.csv"})


# ----------------------------------------------------------------------------- names, keys
def test_image_name_that_is_not_utf8_is_listed_not_a_crash(course_folder, tmp_path):
    """Such a name used to crash write_manifest after every image had been decoded."""
    import os

    odd = os.fsencode(course_folder / "train" / "real") + b"/caf\xe9.png"
    os.rename(course_folder / "train" / "real" / "real0.png", odd)
    with pytest.raises(DatasetError, match=r"1 file\(s\) in .* cannot be read or do not decode .*train/real/"
                                           r"caf\\xe9\.png: file name is not UTF-8 \(rename the file\)"):
        _prepare(course_folder, tmp_path / "out")
    summary, rows = _prepare(course_folder, tmp_path / "out", on_bad_image="skip")
    assert summary["bad_skipped"] == [f"{course_folder}/train/real/caf\\xe9.png: file name is not UTF-8 "
                                      "(rename the file)"]
    assert summary["train_real"] == 3 and len(rows) == 17


def test_missing_source_names_the_key_the_params_file_and_the_missing_folder(tmp_path, monkeypatch):
    """The real pipeline's sources without ../shared: one line that says which folder is missing."""
    from deepfake_detect.config import load_params
    from deepfake_detect.splits import run_stage

    from conftest import REPO

    params = load_params(REPO / "real" / "params.yaml")
    params.source = "real/params.yaml"  # as the stage, run in the repository's real/, names it
    work = tmp_path / "checkout" / "real"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    with pytest.raises(DatasetError) as e:
        run_stage(params, progress=False)
    assert not (work / "data").exists()
    assert str(e.value) == (f"real/params.yaml: 'data.fakes.source' is '../../shared/data/dfdc_faces', which does "
                            f"not exist (no {tmp_path / 'shared'}); put the dataset there, or set the key to its "
                            "folder (or to demo for generated data)")
    (tmp_path / "shared" / "data" / "dfdc_faces").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "stylegan_faces").write_text("a file")
    params["data"]["fakes"]["source"] = "demo"  # checked before the demo data is made: the error comes at once
    with pytest.raises(DatasetError, match=r"'data.synthetic.source' is '../../shared/data/stylegan_faces', which is "
                                           r"not a folder"):
        run_stage(params, progress=False)
    assert not (work / "data").exists()


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
