"""The release stage (release.py): the pick on validation, the float16 export, calibration, reliability, the card;
and the shipped files against real/dvc.lock and the committed evaluate metrics."""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from deepfake_detect import release
from deepfake_detect.checkpoint import read_checkpoint
from deepfake_detect.data import read_manifest
from deepfake_detect.detector import Detector, sha256_of
from deepfake_detect.metrics import auc as roc_auc

from conftest import REPO, make_tiny, sensitive_checkpoint

DETECTORS = REPO / "src" / "deepfake_detect" / "detectors"
REAL = REPO / "real"


def _evaluate_json(auc: float, val: float | None, dataset: str = "fakes") -> dict:
    return {"auc": auc, "auc_ci_low": auc - 0.05, "auc_ci_high": auc + 0.05, "n_real": 4, "n_fake": 4,
            "val_auc": val, "threshold": 0.5,
            "cross_dataset": {"trained_on": dataset, "auc": {"fakes": auc, "synthetic": 0.48},
                              "datasets": {"fakes": "dfdc_faces", "synthetic": "stylegan_faces"}},
            "robustness": {"degradations": {"clean": {"auc": auc, "auc_drop": 0.0},
                                            "resize_half": {"auc": auc - 0.1, "auc_drop": 0.1}}},
            "cross_generator": {"diffusion_faces": {"auc": 0.3, "auc_ci_low": 0.25, "auc_ci_high": 0.35,
                                                    "n_real": 4, "n_fake": 4}}}


def _metrics(root: Path, runs: dict[str, tuple[float, float, str]]) -> Path:
    """metrics/train/<run>/metrics.json and metrics/evaluate/<run>.json for {run: (val AUC, test AUC, dataset)}."""
    for run, (val, test, dataset) in runs.items():
        (root / "metrics/train" / run).mkdir(parents=True, exist_ok=True)
        (root / "metrics/train" / run / "metrics.json").write_text(json.dumps(
            {"best_val_auc": val, "test_auc_at_best_val": test, "epochs_run": 3, "best_epoch": 2,
             "train_images_per_epoch": 16, "num_params": 1234}))
        (root / "metrics/evaluate").mkdir(parents=True, exist_ok=True)
        (root / "metrics/evaluate" / f"{run}.json").write_text(json.dumps(_evaluate_json(test, val, dataset)))
    return root / "metrics"


def test_the_run_is_picked_on_validation_never_test(tmp_path):
    metrics = _metrics(tmp_path, {"best-on-test": (0.70, 0.95, "fakes"), "best-on-val": (0.80, 0.60, "fakes"),
                                  "other-task": (0.99, 0.99, "synthetic")})
    cands = release.candidates(["best-on-test", "best-on-val", "other-task"], "fakes", metrics)
    assert cands == {"best-on-test": 0.70, "best-on-val": 0.80}
    assert release.pick_run(cands) == "best-on-val"
    assert release.pick_run({"b": 0.8, "a": 0.8, "c": None}) == "a"  # a tie: by name; no val AUC: never picked
    with pytest.raises(release.ReleaseError):
        release.pick_run({"a": None})


def test_val_auc_falls_back_to_the_evaluate_json(tmp_path):
    metrics = _metrics(tmp_path, {"r": (0.7, 0.9, "fakes")})
    (metrics / "train/r/metrics.json").unlink()
    assert release.val_auc("r", metrics) == 0.7


def test_export_is_float16_loads_safely_and_scores_like_the_original(tmp_path, demo_faces):
    src = sensitive_checkpoint(tmp_path / "orig.pt", demo_faces)
    ckpt = read_checkpoint(src)
    ckpt = replace(ckpt, metrics={"best_val_auc": 0.9, "history": [{"epoch": 1}], "threshold_rule": "balanced"})
    out = release.export_checkpoint(ckpt, task="faceswap").save(tmp_path / "shipped.pt")
    shipped = read_checkpoint(out)
    raw = torch.load(out, weights_only=True)
    assert raw["format"] == ckpt.format and shipped.metrics == {"best_val_auc": 0.9, "threshold_rule": "balanced"}
    assert raw["task"] == shipped.task == "faceswap"
    floats = [t for t in shipped.state_dict.values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float16 for t in floats)
    assert all(shipped.state_dict[k].dtype == t.dtype for k, t in ckpt.state_dict.items()
               if not t.is_floating_point())
    paths = [str(p) for p in demo_faces]
    p0, _ = Detector.load(src, "cpu", "fp32").score_paths(paths, progress=False)
    p1, _ = Detector.load(out, "cpu", "fp32").score_paths(paths, progress=False)
    assert np.abs(p0 - p1).max() < 1e-2 and p0.std() > 0.05  # the images spread the scores: a real comparison


def test_platt_is_kept_only_when_it_lowers_the_held_out_log_loss():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, 4000)
    y = (rng.random(4000) < release.sigmoid(z)).astype(int)  # calibrated: p = sigmoid(z) is P(fake)
    p_over = release.sigmoid(3 * z)  # over-confident by a factor 3 on the logit scale
    cal, info = release.choose_calibration(p_over, y, seed=0)
    assert cal is not None and info["kept"] and info["log_loss_calibrated"] < info["log_loss_raw"]
    assert abs(cal["a"] - 1 / 3) < 0.05 and abs(cal["b"]) < 0.1
    assert info["n_fit"] + info["n_check"] == 4000
    # a map that does not help (here: making calibrated scores over-confident) is refused; so is a decreasing one
    p = release.sigmoid(z)
    assert not release.calibration_helps({"method": "platt", "a": 3.0, "b": 0.0}, p, y)[0]
    assert not release.calibration_helps({"method": "platt", "a": -1.0, "b": 0.0}, 1 - p, y)[0]
    assert release.calibration_helps({"method": "platt", "a": 1 / 3, "b": 0.0}, p_over, y)[0]
    # one class only in a half: no calibration, said why
    cal, info = release.choose_calibration([0.2, 0.3, 0.4], [0, 0, 1], seed=0)
    assert cal is None and not info["kept"]


def test_the_mapped_threshold_keeps_every_decision():
    cal = {"method": "platt", "a": 0.4, "b": -0.7}
    p = np.random.default_rng(1).random(10_000)
    for t in (0.1, 0.22352518886327744, 0.5, 0.9):
        p = p[np.abs(p - t) > 1e-9]
        assert ((release.calibrate(p, cal) > release.map_threshold(t, cal)) == (p > t)).all()
    assert release.map_threshold(0.3, None) == 0.3
    assert release.calibrate([1e-12, 1.0], cal)[0] == pytest.approx(release.sigmoid(0.4 * np.log(1e-6 / (1 - 1e-6))
                                                                                     - 0.7))


def test_ece_matches_a_hand_computation():
    y = [0, 0, 1, 1, 1, 0]
    p = [0.05, 0.15, 0.15, 0.95, 1.0, 0.55]
    r = release.reliability(y, p)
    # bins: [0,.1): p .05 y 0 -> |0-.05| * 1; [.1,.2): p .15,.15 y 0,1 -> |.5-.15| * 2; [.5,.6): |0-.55| * 1;
    # [.9,1.0]: p .95, 1.0 y 1,1 -> |1-.975| * 2
    hand = (0.05 + 2 * 0.35 + 0.55 + 2 * 0.025) / 6
    assert r["ece"] == pytest.approx(hand)
    assert len(r["bins"]) == 10 and sum(b["n"] for b in r["bins"]) == 6 and r["bins"][9]["n"] == 2
    assert r["bins"][3] == {"lo": 0.3, "hi": 0.4, "p_mean": None, "frac_fake": None, "n": 0}
    assert r["bins"][1]["p_mean"] == pytest.approx(0.15) and r["bins"][1]["frac_fake"] == 0.5


@pytest.fixture
def released(tmp_path):
    """The release of task faceswap over two tiny runs (the better one on validation is the worse on test)."""
    return make_release(tmp_path)


def make_release(tmp_path):
    """``released``'s work: (card, out folder, params, root, test AUC of the picked run)."""
    data = make_tiny(tmp_path)
    test = [r for r in read_manifest(data / "fakes/manifest.csv") if r["split"] == "test"]
    for run in ("lucky", "steady"):  # scores that spread over 0.1-0.9 on the test images: float16 keeps the order
        sensitive_checkpoint(tmp_path / f"models/{run}.pt", [r["path"] for r in test], run=run)
    p, _ = Detector.load(tmp_path / "models/steady.pt", "cpu", "fp32").score_paths([r["path"] for r in test],
                                                                           progress=False)
    auc = roc_auc([r["label"] for r in test], p)
    metrics = _metrics(tmp_path, {"lucky": (0.6, 0.9, "fakes"), "steady": (0.8, auc, "fakes")})
    val_reals = [r["path"] for r in read_manifest(data / "fakes/manifest.csv") if r["split"] == "val"
                 and r["label"] == 0]
    for folder in ("diffusion_faces/real", "xgen_faces/real"):  # the same reals: the validation reals, as in real/
        (tmp_path / folder).mkdir(parents=True)
        for path in val_reals:
            shutil.copy(path, tmp_path / folder)
    params = {"runs": {"lucky": "train-a", "steady": "train-b"}, "seed": 0, "device": "cpu",
              "data": {"fakes": {"source": "../../shared/data/dfdc_faces"}, "on_leak": "drop"}}
    out = tmp_path / "detectors"
    cards = release.run_stage(params, [("faceswap", "fakes")],
                              [str(tmp_path / "diffusion_faces/real"), str(tmp_path / "xgen_faces/real")], out,
                              release.ReleaseOptions(data_dir=data, models_dir=tmp_path / "models",
                                                     metrics_dir=metrics, batch_size=8))
    return cards["faceswap"], out, params, tmp_path, auc


def test_the_card_has_every_contract_key_and_the_files_agree(released):
    card, out, _, _, auc = released
    assert set(release.CARD_KEYS) <= set(card)
    assert card["format"] == "deepfake-detect-card" and card["name"] == "faceswap"
    assert card["task"] == "face swaps (DFDC-style)" and card["run"] == "steady"
    assert card["chosen_on"] == {"criterion": "validation AUC", "val_auc": {"lucky": 0.6, "steady": 0.8}}
    assert card["test"] == {k: _evaluate_json(auc, 0.8)[k] for k in ("auc", "auc_ci_low", "auc_ci_high", "n_real",
                                                                     "n_fake")}
    assert abs(card["calibration_check"]["test_auc_shipped"] - auc) < 1e-9  # float16 kept every ranking
    assert card["dataset"]["source"] == "dfdc_faces" and "DFDC" in card["dataset"]["licence"]
    assert card["dataset"]["sizes"]["val"] == {"real": 4, "fake": 4}
    assert card["robustness"]["resize_half"] == {"auc": pytest.approx(auc - 0.1), "drop": 0.1}
    assert card["cross_dataset"] == {"dfdc_faces": auc, "stylegan_faces": 0.48}
    assert card["cross_generator"]["diffusion_faces"]["auc"] == 0.3
    fpr = card["false_positive_rate"]
    assert set(fpr) == {"dfdc_faces test reals", "diffusion_faces reals", "xgen_faces reals"}
    assert fpr["dfdc_faces test reals"]["n"] == 4 and fpr["xgen_faces reals"]["n"] == 4
    note = fpr["xgen_faces reals"]["note"]  # the same images, said so, and that the detector saw them on validation
    assert "diffusion_faces reals" in note and "dfdc_faces val reals" in note and "not unseen" in note
    assert "note" not in fpr["dfdc_faces test reals"]
    assert isinstance(card["threshold"], float) and 0 <= card["threshold"] <= 1
    assert card["calibration"] is None or set(card["calibration"]) == {"method", "a", "b"}
    assert len(card["reliability"]["bins"]) == 10 and card["reliability"]["n"] == 8
    # a generator is a limit only where it does worse than the own test split
    assert any("diffusion_faces" in s and "0.300" in s for s in card["not_for"]) == (0.3 < auc - 0.05)
    assert any("resize_half" in s and "0.100" in s for s in card["not_for"])
    assert card["licence"].startswith("weights: research use, non-commercial")
    assert set(card["provenance"]) == {"commit", "dirty", "command", "lock"}
    assert card["provenance"]["command"] == "dvc repro real/dvc.yaml:release"
    assert json.loads((out / "faceswap.json").read_text()) == json.loads(json.dumps(card))
    assert (out / "faceswap.md").read_text() == release.card_markdown(json.loads((out / "faceswap.json").read_text()))
    png = (out / "faceswap_reliability.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) < 60_000
    shipped = read_checkpoint(out / "faceswap.pt")
    assert card["weights_sha256"] == sha256_of(out / "faceswap.pt")  # issue 36, row 4: the card names its weights
    assert Detector.load(out / "faceswap.pt", "cpu", "fp32").card["run"] == "steady"
    assert not list(out.glob(".release-*"))  # the scratch folder is gone
    assert shipped.task == "faceswap" and shipped.calibration == card["calibration"]
    assert shipped.output_threshold == card["threshold"]


def test_the_markdown_card_shows_the_figures(released):
    card, _, _, _, auc = released
    md = release.card_markdown(card)
    assert md.startswith("# Detector `faceswap`: face swaps (DFDC-style)")
    assert f"**{auc:.3f}** [{auc - 0.05:.3f}, {auc + 0.05:.3f}]" in md and "`steady` 0.800" in md and "## Not for" in md
    assert "xgen_faces reals" in md and "weights: research use" in md


def test_metrics_of_another_model_fail(released):
    """The card copies the evaluate JSON's test figures: the stage refuses them when the shipped weights disagree."""
    _, out, params, root, auc = released
    evaluated = json.loads((root / "metrics/evaluate/steady.json").read_text())
    other = auc - 0.2 if auc >= 0.2 else auc + 0.2  # an AUC still in [0, 1]
    (root / "metrics/evaluate/steady.json").write_text(json.dumps({**evaluated, "auc": other}))
    with pytest.raises(release.ReleaseError, match="describe another model"):
        release.run_stage(params, [("faceswap", "fakes")], [], out, release.ReleaseOptions(
            data_dir=root / "data", models_dir=root / "models", metrics_dir=root / "metrics", batch_size=8))


def test_shipped_detectors_over_the_size_limit_fail(released):
    _, out, params, root, _ = released
    with pytest.raises(release.ReleaseError, match="MB"):
        release.run_stage(params, [("faceswap", "fakes")], [], out, release.ReleaseOptions(
            data_dir=root / "data", models_dir=root / "models", metrics_dir=root / "metrics", batch_size=8,
            max_total_mb=0.001))


def _lock_outs() -> list[dict]:
    lock = yaml.safe_load((REAL / "dvc.lock").read_text())
    stage = (lock.get("stages") or {}).get("release")
    if stage is None:
        pytest.skip("real/dvc.lock has no release stage yet: run `dvc repro real/dvc.yaml:release` and commit")
    return stage["outs"]


def test_shipped_files_equal_lock():
    """Every shipped file is the one the lock recorded (DVC 3: md5 of the file's bytes), so the package ships what
    the release stage made from the locked models and metrics."""
    outs = _lock_outs()
    assert {Path(o["path"]).name for o in outs} == {f"{t}{x}" for t in ("faceswap", "generated")
                                                   for x in (".pt", ".json", ".md", "_reliability.png")}
    for o in outs:
        path = (REAL / o["path"]).resolve()
        assert path.is_file(), f"{path}: in real/dvc.lock's release stage but not in the checkout"
        assert hashlib.md5(path.read_bytes()).hexdigest() == o["md5"], f"{path} differs from real/dvc.lock"


def _shipped_cards() -> list[dict]:
    cards = [json.loads(p.read_text()) for p in sorted(DETECTORS.glob("*.json"))]
    if not cards:
        pytest.skip("no shipped detectors yet (src/deepfake_detect/detectors/*.json): run the release stage")
    return cards


def test_shipped_cards_copy_the_committed_test_metrics():
    for card in _shipped_cards():
        evaluated = json.loads((REAL / "metrics" / "evaluate" / f"{card['run']}.json").read_text())
        assert card["test"] == {k: evaluated[k] for k in ("auc", "auc_ci_low", "auc_ci_high", "n_real", "n_fake")}
        assert set(release.CARD_KEYS) <= set(card)
        assert card["chosen_on"]["val_auc"][card["run"]] == max(v for v in card["chosen_on"]["val_auc"].values()
                                                                if v is not None)


def test_shipped_detectors_are_small_and_load_safely():
    _shipped_cards()
    pts = sorted(DETECTORS.glob("*.pt"))
    assert sum(p.stat().st_size for p in pts) <= 25 * 2**20
    for p in pts:
        read_checkpoint(p)


def test_package_data_ships_the_detectors():
    """A wheel carries the shipped files: setuptools finds the detectors package (it has an __init__.py) and
    pyproject.toml lists its data files."""
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert {"detectors/*.pt", "detectors/*.json", "detectors/*.md"} <= set(data["deepfake_detect"])
    assert (DETECTORS / "__init__.py").is_file()


def test_readme_block_lists_each_shipped_card(released, tmp_path):
    from deepfake_detect.tables import render_block

    card, out, _, _, auc = released
    assert render_block("detectors", tmp_path / "empty").startswith("No shipped detectors yet")
    root = tmp_path / "repo"
    (root / "src/deepfake_detect/detectors").mkdir(parents=True)
    (root / "src/deepfake_detect/detectors/faceswap.json").write_text((out / "faceswap.json").read_text())
    table = render_block("detectors", root).splitlines()
    assert len(table) == 3 and table[2].startswith(f"| `faceswap` | face swaps (DFDC-style) | `steady` | **{auc:.3f}** "
                                                   f"[{auc - 0.05:.3f}, {auc + 0.05:.3f}] |")
    assert "xgen_faces reals" in table[2] and f"{card['reliability']['ece']:.3f} |" in table[2]


def test_a_file_scored_once_under_two_paths_is_not_scored_again(tmp_path, demo_faces):
    """release._score's cache is by content: dfdc_faces_xl's val/test are dfdc_faces' byte copies, the leave-out
    layout links the generated crops; the scores equal a fresh scoring's."""
    det = Detector.load(sensitive_checkpoint(tmp_path / "s.pt", demo_faces), "cpu", "fp32")
    copies = []
    for i, p in enumerate(demo_faces[:5]):
        copies.append(tmp_path / "copy" / f"{i}{p.suffix}")
        copies[-1].parent.mkdir(exist_ok=True)
        copies[-1].write_bytes(p.read_bytes())
    calls = []
    score_paths = det.score_paths
    det.score_paths = lambda paths, **kw: (calls.append(list(paths)), score_paths(paths, **kw))[1]
    cache: dict[str, float] = {}
    first = release._score(det, [str(p) for p in demo_faces], 8, "originals", cache)
    again = release._score(det, [str(p) for p in copies + demo_faces[5:7]], 8, "copies", cache)
    assert len(calls) == 1 and len(calls[0]) == len(demo_faces)  # the second call scored nothing
    assert np.array_equal(again, first[list(range(5)) + [5, 6]])
    fresh = release._score(det, [str(p) for p in copies], 8, "no cache")
    assert np.abs(fresh - first[:5]).max() < 1e-5  # fp32 in other batches: within 1e-5 on any CPU


def test_the_joint_operating_point_raises_a_threshold_and_the_shipped_file_card_and_verdict_agree(
        tmp_path, monkeypatch):
    """Two detectors that each call 5 % of the validation reals fake call nearly 10 % fake together: the release
    raises their thresholds until the union holds 5 % on validation, releases a raised detector again at it, and
    the .pt, the card and the verdict all use the raised one."""
    data = make_tiny(tmp_path)
    manifest = read_manifest(data / "fakes/manifest.csv")
    test = [r["path"] for r in manifest if r["split"] == "test"]
    for run in ("lucky", "steady"):
        sensitive_checkpoint(tmp_path / f"models/{run}.pt", test, run=run)
    p, _ = Detector.load(tmp_path / "models/steady.pt", "cpu", "fp32").score_paths(test, progress=False)
    metrics = _metrics(tmp_path, {"lucky": (0.6, 0.9, "fakes"),
                                  "steady": (0.8, roc_auc([r["label"] for r in manifest if r["split"] == "test"], p),
                                             "fakes")})
    params = {"runs": {"lucky": "train-a", "steady": "train-b"}, "seed": 0, "device": "cpu",
              "data": {"fakes": {"source": "../../shared/data/dfdc_faces"}, "on_leak": "drop"}}
    rng = np.random.default_rng(0)
    seen = {}

    def predicted(params_, datasets, dets, split, device, data_dir):  # predict's per-picture scores, stood in
        seen[split] = [float(d.threshold) for d in dets]
        return {"dfdc_faces": {"p": rng.uniform(0, 1, (400, len(dets))), "not_judged": 1}}

    monkeypatch.setattr(release, "_predict_reals", predicted)
    out = tmp_path / "detectors"
    cards = release.run_stage(params, [("faceswap", "fakes"), ("generated", "fakes")], [], out,
                              release.ReleaseOptions(data_dir=data, models_dir=tmp_path / "models",
                                                     metrics_dir=metrics, batch_size=8, max_source_fpr=0.3))
    joint = cards["faceswap"]["verdict_false_positive_rate"]["joint"]
    assert joint == cards["generated"]["verdict_false_positive_rate"]["joint"]
    assert joint["val"]["dfdc_faces"]["fpr"] <= 0.3 and joint["val"]["dfdc_faces"]["not_judged"] == 1
    assert any(joint["thresholds"][t] > joint["own_thresholds"][t] for t in ("faceswap", "generated"))
    assert "->" in joint["rule"]
    for task in ("faceswap", "generated"):
        card = json.loads((out / f"{task}.json").read_text())
        assert card["threshold"] == joint["thresholds"][task] >= joint["own_thresholds"][task]
        assert read_checkpoint(out / f"{task}.pt").output_threshold == pytest.approx(card["threshold"], abs=1e-12)
        assert Detector.load(out / f"{task}.pt", "cpu", "fp32").threshold == card["threshold"]
        if card["threshold"] > joint["own_thresholds"][task]:
            assert "joint operating point" in card["operating_point"]["rule"]
            assert "joint operating point" in (out / f"{task}.md").read_text()
    assert seen["val"] == list(joint["own_thresholds"].values())  # the joint search starts from each one's own
    assert seen["test"] == list(joint["thresholds"].values())  # the verdict is scored at the raised thresholds
    assert set(cards["faceswap"]["verdict_false_positive_rate"]["sets"]) == {"dfdc_faces"}
