"""The robustness panel: scores under each degradation against a hand-run of the same model, AUC and the
rates at the threshold against sklearn, seeding, the markdown table and the figure, flat evaluation folders."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from sklearn.metrics import roc_auc_score

from deepfake_detect import robustness
from deepfake_detect.checkpoint import Checkpoint
from deepfake_detect.data import Preprocess, load_rgb
from deepfake_detect.plots.robustness import panel_figure, save_panel_figure
from deepfake_detect.predict import labelled_images
from deepfake_detect.robustness import PANEL, Degradation

from conftest import shared_data_dir


class HighFrequency(nn.Module):
    """A deterministic detector: p(fake) grows with the mean vertical pixel difference (blur and resizing
    lower it, so the degradations reach the score)."""

    mean, std = (0.5,) * 3, (0.5,) * 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hf = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3))
        return torch.stack([torch.zeros_like(hf), 12 * (hf - 0.15)], 1)


class Lopsided(HighFrequency):
    """HighFrequency plus a left-right brightness difference: its score changes under a flip (TTA matters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[-1] // 2
        return super().forward(x) + torch.stack([torch.zeros(len(x)), 3 * (x[..., :w].mean((1, 2, 3)) -
                                                                     x[..., w:].mean((1, 2, 3)))], 1)


CKPT = Checkpoint(arch="dummy", arch_params={}, image_size=32, mean=[0.5] * 3, std=[0.5] * 3, classes=["real", "fake"],
                  threshold=0.45, cam_layer="", state_dict={}, tta="none", run="dummy")


@pytest.fixture(scope="module")
def noisy_rows(tmp_path_factory) -> list[dict]:
    """40 images of 48 px (not the checkpoint's 32: the degradation runs before the resize): smooth
    ramps plus noise, fakes noisier on average, the two classes overlapping."""
    root = tmp_path_factory.mktemp("noisy")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48]
    rows = []
    for i in range(40):
        label = int(i % 2)
        sd = rng.uniform(6, 18) if label else rng.uniform(2, 12)
        img = np.stack([xx * 4, yy * 4, 255 - xx * 4], -1) + rng.normal(0, sd, (48, 48, 3))
        path = root / f"{i}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
        rows.append({"path": str(path), "label": label})
    return rows


def _detector(model, ckpt, tta="checkpoint", num_workers=-1):
    """A fp32 Detector of an in-memory model and Checkpoint (the panel takes detectors)."""
    from deepfake_detect.detector import Detector

    return Detector.from_model(model, ckpt, precision="fp32", tta=tta).with_options(num_workers=num_workers)


def _panel(model, ckpt, rows, tta="checkpoint", clean_scores=None, progress=True, **options):
    return robustness.panel(_detector(model, ckpt, tta), rows, robustness.PanelOptions(**options),
                            clean_scores=clean_scores, progress=progress)


def _degraded(model, ckpt, rows, name, tta="checkpoint", batch_size=64, num_workers=-1, progress=True):
    return robustness.degraded_scores(_detector(model, ckpt, tta, num_workers), rows, name, batch_size, progress)


def _by_hand(rows: list[dict], name: str, model: nn.Module | None = None) -> np.ndarray:
    """p(fake) of each image under degradation ``name``, without score.py: decode, degrade, preprocess, model."""
    prep, model = Preprocess(CKPT.image_size, CKPT.mean, CKPT.std), model or HighFrequency()
    ims = [load_rgb(r["path"]) for r in rows]
    x = torch.stack([prep(Degradation(name)(im)) for im in ims])
    with torch.no_grad():
        return torch.softmax(model(x), 1)[:, 1].double().numpy()


def test_panel_scores_and_metrics_match_a_hand_run_and_sklearn(noisy_rows):
    res = _panel(HighFrequency(), CKPT, noisy_rows, n_bootstrap=50, seed=0, progress=False)
    d = res["degradations"]
    assert list(d) == list(PANEL) and res["n_real"] == 20 and res["n_fake"] == 20 and res["threshold"] == 0.45
    y = np.array([r["label"] for r in noisy_rows])
    clean = _by_hand(noisy_rows, "clean")
    for name in PANEL:
        p = _by_hand(noisy_rows, name)
        np.testing.assert_allclose(_degraded(HighFrequency(), CKPT, noisy_rows, name,
                                                              progress=False), p, atol=1e-6)
        if name != "clean":
            assert np.abs(p - clean).max() > 1e-3, name  # the degradation reached the model
        assert d[name]["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
        assert d[name]["auc_drop"] == pytest.approx(d["clean"]["auc"] - d[name]["auc"], abs=1e-12)
        assert d[name]["tpr_at_threshold"] == pytest.approx(np.mean(p[y == 1] > 0.45), abs=1e-9)
        assert d[name]["fpr_at_threshold"] == pytest.approx(np.mean(p[y == 0] > 0.45), abs=1e-9)
        assert d[name]["auc_ci_low"] <= d[name]["auc"] <= d[name]["auc_ci_high"]
    assert d["clean"]["auc_drop"] == 0.0
    assert d["blur_s1"]["auc"] < d["clean"]["auc"]  # the high-frequency cue is what a blur removes


def test_panel_is_seeded_and_reuses_clean_scores(noisy_rows):
    kw = dict(n_bootstrap=100, progress=False, degradations=("jpeg_q70", "reshared"))
    a = _panel(HighFrequency(), CKPT, noisy_rows, seed=3, **kw)
    b = _panel(HighFrequency(), CKPT, noisy_rows, seed=3, **kw)
    assert a == b  # same seed: identical images, scores and intervals
    assert list(a["degradations"]) == ["clean", "jpeg_q70", "reshared"]  # clean always, PANEL order
    c = _panel(HighFrequency(), CKPT, noisy_rows, seed=4, **kw)
    for name in a["degradations"]:
        assert c["degradations"][name]["auc"] == a["degradations"][name]["auc"]  # the seed only feeds the bootstrap
    reused = _panel(HighFrequency(), CKPT, noisy_rows, seed=3,
                              clean_scores=_by_hand(noisy_rows, "clean"), **kw)
    for name, m in a["degradations"].items():
        for key, v in m.items():
            assert reused["degradations"][name][key] == pytest.approx(v, abs=1e-6), (name, key)
    with pytest.raises(ValueError, match="jpeg_q10"):
        _panel(HighFrequency(), CKPT, noisy_rows, degradations=("jpeg_q10",), progress=False)


def test_subsample_is_stratified_seeded_and_optional():
    y = [0] * 300 + [1] * 100
    idx = robustness.subsample(y, 100, seed=0)
    assert len(idx) == 100 and (np.diff(idx) > 0).all()
    assert sum(y[i] for i in idx) == 25  # the 3:1 ratio kept
    assert np.array_equal(idx, robustness.subsample(y, 100, seed=0))
    assert not np.array_equal(idx, robustness.subsample(y, 100, seed=1))
    assert np.array_equal(robustness.subsample(y, 0), np.arange(400))
    assert np.array_equal(robustness.subsample(y, 500), np.arange(400))
    rare = [0] * 99 + [1]
    assert sum(rare[i] for i in robustness.subsample(rare, 10)) == 1  # a rare class is never dropped


def test_panel_on_a_subsample_scores_only_those_images(noisy_rows):
    kw = dict(n_bootstrap=20, progress=False, degradations=("blur_s1",), seed=5)
    sub = _panel(HighFrequency(), CKPT, noisy_rows, max_images=20, **kw)
    assert (sub["n_real"], sub["n_fake"], sub["n_of"]) == (10, 10, 40)
    keep = robustness.subsample([r["label"] for r in noisy_rows], 20, seed=5)
    rows = [noisy_rows[i] for i in keep]
    assert sub == {**_panel(HighFrequency(), CKPT, rows, **kw), "n_of": 40}
    given = _panel(HighFrequency(), CKPT, noisy_rows, max_images=20,
                             clean_scores=_by_hand(noisy_rows, "clean"), **kw)  # all rows' clean scores given
    assert given["degradations"]["clean"]["auc"] == pytest.approx(sub["degradations"]["clean"]["auc"], abs=1e-9)
    with pytest.raises(ValueError, match="clean_scores"):
        _panel(HighFrequency(), CKPT, noisy_rows, clean_scores=np.zeros(3), **kw)


def test_panel_tta_override(noisy_rows):
    flip_ckpt = replace(CKPT, tta="flip")
    kw = dict(n_bootstrap=0, progress=False, degradations=("jpeg_q50",))
    no_flip = _degraded(Lopsided(), flip_ckpt, noisy_rows, "jpeg_q50", tta="none", progress=False)
    flipped = _degraded(Lopsided(), flip_ckpt, noisy_rows, "jpeg_q50", progress=False)
    np.testing.assert_allclose(no_flip, _by_hand(noisy_rows, "jpeg_q50", Lopsided()), atol=1e-6)
    assert np.abs(flipped - no_flip).max() > 1e-3  # the checkpoint's flip TTA by default
    plain = _panel(Lopsided(), flip_ckpt, noisy_rows, tta="none", **kw)
    assert plain["tta"] == "none"
    assert plain["degradations"]["jpeg_q50"]["auc"] == pytest.approx(
        roc_auc_score([r["label"] for r in noisy_rows], no_flip), abs=1e-9)
    assert _panel(Lopsided(), flip_ckpt, noisy_rows, **kw)["tta"] == "flip"
    with pytest.raises(ValueError, match="TTA"):
        _panel(Lopsided(), flip_ckpt, noisy_rows, tta="none", clean_scores=np.zeros(40), **kw)


def test_loader_workers_give_the_same_degraded_scores(noisy_rows):
    one = _degraded(HighFrequency(), CKPT, noisy_rows, "reshared", batch_size=8, num_workers=1,
                                     progress=False)
    np.testing.assert_allclose(one, _by_hand(noisy_rows, "reshared"), atol=1e-6)  # Degradation pickles


def test_panel_on_a_flat_evaluation_folder(flat_folder, tiny_ckpt):
    from deepfake_detect.checkpoint import load_model

    rows, skipped = labelled_images(flat_folder)  # real/ + fake/ read as one evaluation set
    assert len(rows) == 40 and not skipped
    model, ckpt = load_model(tiny_ckpt)
    res = _panel(model, ckpt, rows, n_bootstrap=0, degradations=("resize_half",), progress=False)
    assert (res["n_real"], res["n_fake"]) == (20, 20)
    assert np.isnan(res["degradations"]["clean"]["auc_ci_low"])  # bootstrap off


@pytest.mark.parametrize("name", ["diffusion_faces", "xgen_faces"])
def test_cross_generator_sets_read_as_whole_evaluation_sets(name):
    root = shared_data_dir() / name
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    rows, skipped = labelled_images(root)
    assert not skipped
    assert sum(r["label"] == 0 for r in rows) == 160 and sum(r["label"] == 1 for r in rows) == 480


def _fake_panel(aucs: dict[str, float], threshold: float = 0.5) -> dict:
    clean = aucs["clean"]
    return {"threshold": threshold, "tta": "none", "n_real": 2, "n_fake": 2, "degradations": {
        k: {"auc": v, "auc_ci_low": v - 0.05, "auc_ci_high": min(1.0, v + 0.05), "auc_drop": clean - v,
            "tpr_at_threshold": v / 2, "fpr_at_threshold": 0.1, "balanced_acc_at_threshold": 0.7}
        for k, v in aucs.items()}}


def test_panel_table_renders_every_run_and_the_worst_drop():
    runs = {"a": {"auc": 0.9, "robustness": _fake_panel({"clean": 0.874, "jpeg_q70": 0.858, "resize_half": 0.762})},
            "b": {"auc": 0.8, "robustness": _fake_panel({"clean": 0.880, "jpeg_q70": 0.882})},
            "no-panel": {"auc": 0.7}}
    assert robustness.panel_table(runs) == (
        "| run | clean | JPEG q70 | 0.5× resize and back | worst drop |\n"
        "| --- | ---: | ---: | ---: | ---: |\n"
        "| a | 0.874 | 0.858 (-0.016) | 0.762 (-0.112) | 0.112 (0.5× resize and back) |\n"
        "| b | 0.880 | 0.882 (+0.002) | – | -0.002 (JPEG q70) |\n")
    assert robustness.panel_table(runs, "tpr_at_threshold").splitlines()[2] == "| a | 0.437 | 0.429 | 0.381 |"
    assert robustness.panel_table({"no-panel": {"auc": 0.7}}) == ""
    assert robustness.worst(runs["a"]["robustness"]) == ("resize_half", pytest.approx(0.112))


def test_panel_figure_has_a_line_per_run(tmp_path):
    panels = {"a": _fake_panel({"clean": 0.9, "jpeg_q90": 0.85, "blur_s1": 0.7}),
              "b": _fake_panel({"clean": 0.8, "jpeg_q90": 0.79})}
    fig = panel_figure(panels)
    ax_auc, ax_tpr = fig.axes[:2]
    assert [t.get_text() for t in ax_auc.get_xticklabels()] == ["clean", "JPEG q90", "blur σ=1"]
    assert len(ax_tpr.get_lines()) == 4  # TPR and FPR per run
    assert list(ax_tpr.get_lines()[1].get_ydata()) == [0.1, 0.1, 0.1]
    assert list(ax_auc.containers[0].lines[0].get_ydata()) == [0.9, 0.85, 0.7]
    assert np.isnan(ax_auc.containers[1].lines[0].get_ydata()[2])  # b has no blur: a gap, not a zero
    path = save_panel_figure(tmp_path / "robustness.png", panels)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 500
