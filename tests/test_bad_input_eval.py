"""Issue 27, rows 6-8: the evaluate-roc-det stage checks its inputs before it scores (preflight.py), and a set too
small for an AUC is reported as too few, never as AUC 0.0 [0.0, 0.0].

The three ``test_stage_*`` tests call ``evaluate.run_stage``; they pass once run_stage calls
``preflight.check_evaluation_inputs`` first (wired at merge time). The others test preflight.py itself."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from deepfake_detect import evaluate, preflight
from deepfake_detect.config import ParamsError, load_params
from deepfake_detect.data import DatasetError

from conftest import REPO, write_image


def _stage(tmp_path: Path, monkeypatch, **changes) -> dict:
    """The tiny run's stage inputs under tmp_path (as tests/test_evaluate.py sets them up), and scoring that fails
    the test if it starts: every check must come first."""
    monkeypatch.chdir(tmp_path)
    rows = [{"path": str(write_image(Path("imgs") / f"{i}.png", i).as_posix()), "label": int(i >= 12),
             "split": "test"} for i in range(24)]
    Path("data/fakes").mkdir(parents=True)
    with open("data/fakes/manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "split"])
        w.writeheader()
        w.writerows(rows)
    params = load_params(REPO / "params.yaml")
    params["device"] = "cpu"
    params["evaluate-roc-det"].update(bootstrap=20, **changes)

    def no_scoring(*args, **kwargs):
        raise AssertionError("scoring started before the inputs were checked")

    monkeypatch.setattr(evaluate, "_test_scores", no_scoring)
    monkeypatch.setattr(evaluate, "_scored", no_scoring)
    return params


def _real_only(root: Path) -> Path:
    for i in range(3):
        write_image(root / "real" / f"{i}.png", i)
    return root


def test_stage_cross_generator_with_only_real_fails_before_scoring(tmp_path, tiny_ckpt, monkeypatch):
    """Row 6: a folder with only real/ was a ValueError traceback (ROC metrics need labels 0 and 1) after 24 s."""
    folder = str(_real_only(tmp_path / "gen"))
    params = _stage(tmp_path, monkeypatch, cross_generator=[folder])
    with pytest.raises(DatasetError) as e:
        evaluate.run_stage(params, "tiny", progress=False)
    assert str(e.value) == (f"{REPO / 'params.yaml'}: 'evaluate-roc-det.cross_generator' names {folder!r}, which "
                            "has no fake/ folder (an evaluation set holds real/ and fake/ images: add them, or remove "
                            "it from the list)")


def test_stage_missing_cross_generator_fails_before_scoring(tmp_path, tiny_ckpt, monkeypatch):
    """Row 7: a missing folder was a good message, but only after every other scoring."""
    params = _stage(tmp_path, monkeypatch, cross_generator=[str(tmp_path / "nope")])
    with pytest.raises(DatasetError, match=r"'evaluate-roc-det.cross_generator' names '.*nope', which does not "
                                           r"exist \(put the set there, or remove it from the list\)"):
        evaluate.run_stage(params, "tiny", progress=False)


def test_stage_robustness_panel_of_three_images_is_refused(tmp_path, tiny_ckpt, monkeypatch):
    """Row 8: robustness_max_images 3 gave a 2-real/1-fake panel reported as AUC 0.0 [0.0, 0.0], drop 1.0."""
    params = _stage(tmp_path, monkeypatch, robustness_max_images=3)
    with pytest.raises(ParamsError, match=r"'evaluate-roc-det.robustness_max_images' is 3: too few for a meaningful "
                                          r"AUC \(need ≥ 10 real and 10 fake\); set it to 0 \(every test image\) or "
                                          r"≥ 20"):
        evaluate.run_stage(params, "tiny", progress=False)


# ---------------------------------------------------------------- preflight.py itself
def test_check_evaluation_inputs_names_key_file_and_fix(tmp_path, tiny_ckpt, monkeypatch):
    params = _stage(tmp_path, monkeypatch)
    preflight.check_evaluation_inputs(params, "data", "tiny", "models")  # all there: no error
    where = "params.yaml: 'evaluate-roc-det.cross_generator' names "
    cases = [(str(tmp_path / "nope"), "which does not exist"),
             (str(_real_only(tmp_path / "gen")), "which has no fake/ folder")]
    (tmp_path / "empty" / "real").mkdir(parents=True)
    (tmp_path / "empty" / "fake").mkdir()
    write_image(tmp_path / "empty" / "real" / "0.png", 0)
    cases.append((str(tmp_path / "empty"), "whose fake/ holds no image"))
    (tmp_path / "file.txt").write_text("x")
    cases.append((str(tmp_path / "file.txt"), "which is not a folder"))
    for folder, why in cases:
        with pytest.raises(DatasetError) as e:
            preflight.check_evaluation_inputs({**params, "evaluate-roc-det": {**params["evaluate-roc-det"],
                                                                               "cross_generator": [folder]}},
                                              "data", "tiny", "models")
        assert f"{where}{folder!r}, {why}" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(Exception, match=r"tiny\.pt"):
        preflight.check_evaluation_inputs(params, "data", "tiny", tmp_path / "no-models")


def test_check_evaluation_inputs_wants_the_runs_manifest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = load_params(REPO / "params.yaml")
    run = next(iter(params["runs"]))
    monkeypatch.setattr(preflight, "run_checkpoint", lambda *a: Path("models") / f"{run}.pt")
    with pytest.raises(DatasetError, match=r"manifest.csv: not found; run .*dvc repro prepare-splits"):
        preflight.check_evaluation_inputs(params, tmp_path / "data", run, "models")


def test_too_few_and_its_entry():
    assert preflight.too_few([0] * 2 + [1]) == ("too few: 2 real / 1 fake (need ≥ 10 of each for a meaningful "
                                                 "AUC)")
    assert preflight.too_few([0] * 10 + [1] * 10) is None
    assert preflight.too_few_entry([0] * 10 + [1] * 10) is None
    entry = preflight.too_few_entry([0, 0, 1])
    assert entry == {"auc": None, "auc_ci_low": None, "auc_ci_high": None, "n_real": 2, "n_fake": 1,
                     "too_few": "too few: 2 real / 1 fake (need ≥ 10 of each for a meaningful AUC)"}


def test_panel_size_rule(tmp_path):
    params = load_params(REPO / "params.yaml")
    for n, ok in ((0, True), (20, True), (19, False), (1, False)):
        p = {**params, "evaluate-roc-det": {**params["evaluate-roc-det"], "robustness_max_images": n}}
        if ok:
            preflight.check_panel_size(p)
        else:
            with pytest.raises(ParamsError, match="robustness_max_images"):
                preflight.check_panel_size(p)
    off = {**params, "evaluate-roc-det": {**params["evaluate-roc-det"], "robustness": [], "robustness_max_images": 3}}
    preflight.check_panel_size(off)  # no panel: nothing to refuse
