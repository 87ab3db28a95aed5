"""explain: saliency / Grad-CAM shapes and ranges for every model, the faithfulness
metrics on hand-made cases, and the stage end to end."""
from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from deepfake_detect import explain
from deepfake_detect.config import load_params
from deepfake_detect.models import get_model, get_submodule, list_models, model_kwargs
from deepfake_detect.saliency import gradcam, saliency

from conftest import PARAMS_YAML, tiny_checkpoint


def _model_names() -> list[str]:
    names = list_models()
    if importlib.util.find_spec("deepfake_detect.models.backbones") is not None:
        names.append("efficientnet_lite0")  # a timm backbone through the fall-through
    return names


def _build(name: str, image_size: int) -> nn.Module:
    kwargs = {"weights": "none"} if "weights" in (model_kwargs(name) or {"weights"}) else {}
    return get_model(name, image_size=image_size, **kwargs).eval()


@pytest.mark.parametrize("name", _model_names())
def test_gradcam_and_saliency_every_model(name):
    torch.manual_seed(0)
    model = _build(name, 64)  # small input keeps the big backbones fast on a CPU
    layer = get_submodule(model, model.cam_layer)  # the named target layer resolves
    assert isinstance(layer, nn.Module)
    inplace_before = [m.inplace for m in model.modules() if isinstance(getattr(m, "inplace", None), bool)]
    x = torch.randn(2, 3, 64, 64)
    cam = gradcam(model, x)
    assert cam.shape == (2, 64, 64) and cam.dtype == np.float32
    assert cam.min() >= 0.0 and cam.max() <= 1.0 and np.isfinite(cam).all()
    sal = saliency(model, x)
    assert sal.shape == (2, 64, 64) and (sal >= 0).all() and torch.isfinite(sal).all()
    # in-place flags are restored; no hooks are left behind
    assert [m.inplace for m in model.modules() if isinstance(getattr(m, "inplace", None), bool)] == inplace_before
    assert not layer._forward_hooks


def test_attributions_work_inside_inference_mode():
    torch.manual_seed(0)
    model = _build("simplenet", 96)
    x = torch.randn(2, 3, 96, 96)
    ref_sal, ref_cam = saliency(model, x), gradcam(model, x)
    assert ref_sal.max() > 0 and ref_cam.max() > 0.99  # the package scales each CAM to max 1
    with torch.inference_mode():
        xi = x.clone()
        torch.testing.assert_close(saliency(model, xi), ref_sal)
        np.testing.assert_allclose(gradcam(model, xi), ref_cam, atol=1e-6)


class _RegionModel(nn.Module):
    """p(fake) depends only on the pixels of a fixed region: a perfectly faithful detector."""

    def __init__(self, region: torch.Tensor):
        super().__init__()
        self.register_buffer("region", region)
        self.scale = nn.Parameter(torch.tensor(0.01))

    def forward(self, x):
        score = (x * self.region).sum((1, 2, 3)) * self.scale
        return torch.stack([torch.zeros_like(score), score], 1)


def test_saliency_of_a_region_model_is_inside_the_region():
    region = torch.zeros(32, 32)
    region[8:16, 10:20] = 1
    model = _RegionModel(region)
    sal = saliency(model, torch.randn(3, 3, 32, 32)).numpy()
    mask = np.broadcast_to(region.numpy(), sal.shape)
    np.testing.assert_allclose(explain.energy_in_mask(sal, mask), 1.0)
    assert explain.pointing_game(sal, mask).all()
    m = explain.faithfulness(sal, mask, "saliency")
    assert m["saliency_energy_in_mask"] == 1.0 and m["saliency_pointing"] == 1.0
    assert m["saliency_mask_share"] == pytest.approx(80 / 1024, abs=1e-4)
    assert m["saliency_lift"] == pytest.approx(1024 / 80, rel=1e-3)


def test_faithfulness_metrics_on_hand_made_cases():
    mask = np.zeros((1, 10, 10))
    mask[0, :5, :4] = 1  # 20 % of the image
    inside = mask * 3.0
    uniform = np.ones_like(mask)
    outside = 1.0 - mask
    np.testing.assert_allclose(explain.energy_in_mask(inside, mask), [1.0])
    np.testing.assert_allclose(explain.energy_in_mask(uniform, mask), [0.2])
    np.testing.assert_allclose(explain.energy_in_mask(outside, mask), [0.0])
    np.testing.assert_allclose(explain.mask_share(mask), [0.2])
    # an all-zero attribution carries no information: it scores like a uniform one
    np.testing.assert_allclose(explain.energy_in_mask(np.zeros_like(mask), mask), [0.2])
    # a soft mask weights the energy: half-strength mask everywhere -> 0.5
    np.testing.assert_allclose(explain.energy_in_mask(uniform, np.full_like(mask, 0.5)), [0.5])
    # pointing game: the arg-max decides
    peak_in, peak_out = np.zeros_like(mask), np.zeros_like(mask)
    peak_in[0, 2, 1], peak_out[0, 8, 8] = 1.0, 1.0
    assert explain.pointing_game(np.concatenate([peak_in, peak_out]), np.concatenate([mask, mask])).tolist() == \
        [True, False]
    m = explain.faithfulness(np.concatenate([uniform, inside]), np.concatenate([mask, mask]), "gradcam")
    assert m == {"gradcam_energy_in_mask": 0.6, "gradcam_mask_share": 0.2, "gradcam_lift": 3.0,
                 "gradcam_pointing": 1.0}  # uniform's arg-max is pixel (0, 0), inside the mask
    with pytest.raises(ValueError, match="non-negative"):
        explain.energy_in_mask(-uniform, mask)
    with pytest.raises(ValueError, match="shape"):
        explain.energy_in_mask(uniform, mask[:, :5])


def _write_dataset(root, name, masks: bool, rng, size=64, n=3):
    rows = []
    for split in ("train", "val", "test"):
        for label, cls in enumerate(("real", "fake")):
            for i in range(n):
                p = root / "data" / name / "images" / split / cls / f"{i}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(p)
                mask = ""
                if masks and label == 1:
                    m = np.zeros((size, size), np.uint8)
                    m[16:40, 20:44] = 255
                    mp = root / "data" / name / "images" / "masks" / split / cls / f"{i}.png"
                    mp.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(m).save(mp)
                    mask = str(mp.relative_to(root))
                rows.append({"path": str(p.relative_to(root)), "label": label, "split": split, "sha1": "",
                             "group": "", "mask": mask, "width": size, "height": size})
    with open(root / "data" / name / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_stage_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    _write_dataset(tmp_path, "fakes", masks=True, rng=rng)
    _write_dataset(tmp_path, "synthetic", masks=False, rng=rng)
    tiny_checkpoint(tmp_path / "models" / "run-a.pt", run="run-a", dataset="fakes")
    tiny_checkpoint(tmp_path / "models" / "run-b.pt", run="run-b", dataset="synthetic")
    params = load_params(PARAMS_YAML, {"device": "cpu", "explain": {
        "n_examples": 2, "n_mean": 3, "n_faithfulness": 2, "batch_size": 4}})
    out = {run: explain.run_stage(params, run, progress=False) for run in ("run-a", "run-b")}

    for name in ("run-a_saliency", "run-a_gradcam", "run-a_means", "run-b_saliency", "run-b_gradcam", "run-b_means"):
        with Image.open(tmp_path / "plots" / "explain" / f"{name}.png") as im:
            assert im.format == "PNG" and im.size[0] > 300
    assert sorted(p.name for p in (tmp_path / "plots" / "explain").iterdir()) == sorted(
        f"{run}_{kind}.png" for run in ("run-a", "run-b") for kind in ("saliency", "gradcam", "means"))
    a = json.loads((tmp_path / "metrics" / "explain" / "run-a.json").read_text())
    assert a == out["run-a"] and a["n_images"] == 2 and a["dataset"] == "fakes"
    for method in ("saliency", "gradcam"):
        assert 0.0 <= a[f"{method}_energy_in_mask"] <= 1.0
        assert a[f"{method}_mask_share"] == pytest.approx(24 * 24 / 64 ** 2, abs=1e-4)
        assert a[f"{method}_lift"] == pytest.approx(a[f"{method}_energy_in_mask"] / a[f"{method}_mask_share"],
                                                   rel=1e-2)
        assert a[f"{method}_pointing"] in (0.0, 0.5, 1.0)
        assert 0.0 <= a[f"{method}_energy_in_mask_real_control"] <= 1.0
    b = json.loads((tmp_path / "metrics" / "explain" / "run-b.json").read_text())
    assert b["faithfulness"] == "no masks in dataset" and b["n_images"] == 0
    assert not any(k.startswith(("saliency_", "gradcam_")) for k in b)
    # no temporary files left behind by the atomic writers
    assert not [p for p in tmp_path.rglob(".*.tmp")]
