"""The degradations: the panel's fixed ones on known images, and the seeded training augmentation
(probabilities, draws, the data path, a tiny model that still learns with it)."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from deepfake_detect import degrade, robustness
from deepfake_detect.config import TrainConfig
from deepfake_detect.data import EpochSampler, ManifestDataset, Preprocess, build_decoded_cache, read_manifest

from conftest import make_tiny, tiny_params


def _known_image(h: int = 48, w: int = 64) -> torch.Tensor:
    """A fixed RGB image with smooth ramps and fine texture (uint8, 3 x H x W)."""
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(7)
    img = np.stack([xx * 255 / (w - 1), yy * 255 / (h - 1), 128 + 60 * np.sin(xx / 3.0) * np.cos(yy / 5.0)], -1)
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    return torch.from_numpy(img).permute(2, 0, 1).contiguous()


def _pil_jpeg(x: torch.Tensor, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(x.permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=quality)  # PIL's default 4:2:0
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).astype(np.int64)


def _mean_abs(a, b) -> float:
    return float(np.abs(np.asarray(a, np.int64) - np.asarray(b, np.int64)).mean())


@pytest.mark.parametrize("quality", [90, 70, 50])
def test_jpeg_is_a_real_encode_at_that_quality(quality):
    x = _known_image()
    y = degrade.jpeg(x, quality).permute(1, 2, 0).numpy()
    assert y.shape == (48, 64, 3) and y.dtype == np.uint8
    # the same codec as PIL's encode-decode at this quality (libjpeg on both sides; tolerance for decoder IDCTs)
    assert _mean_abs(y, _pil_jpeg(x, quality)) <= 0.5
    # ... and at no neighbouring quality: the quality is really applied
    for other in (quality - 10, quality + 10):
        assert _mean_abs(y, _pil_jpeg(x, other)) > 4 * max(_mean_abs(y, _pil_jpeg(x, quality)), 0.1)
    assert _mean_abs(y, x.permute(1, 2, 0).numpy()) > 1.0  # lossy: it changed the image


def test_lower_jpeg_quality_loses_more():
    x = _known_image()
    errors = [_mean_abs(robustness.Degradation(f"jpeg_q{q}")(x), x) for q in (90, 70, 50)]
    assert errors[0] < errors[1] < errors[2]


def test_rescale_and_down_up_shapes_and_content():
    x = _known_image(48, 64)
    assert degrade.rescale(x, 0.5).shape == (3, 24, 32)
    assert degrade.rescale(x, 0.75).shape == (3, 36, 48)
    back = robustness.Degradation("resize_half")(x)
    assert back.shape == x.shape and back.dtype == torch.uint8
    # a flat image survives the round trip; a 1-px checkerboard (detail above the half-size Nyquist) does not
    flat = torch.full((3, 48, 64), 77, dtype=torch.uint8)
    assert torch.equal(degrade.down_up(flat, 0.5), flat)
    checker = torch.from_numpy(((np.indices((48, 64)).sum(0) % 2) * 255).astype(np.uint8)).expand(3, 48, 64)
    out = degrade.down_up(checker.contiguous(), 0.5).float()
    assert out.std() < 0.1 * checker.float().std() and abs(out.mean().item() - 127.5) < 2
    # the ramps (low frequencies) stay: small mean error against the original
    assert _mean_abs(back, x) < 10
    ref = F.resize(F.resize(x, [24, 32], antialias=True), [48, 64], antialias=True)  # torchvision's bilinear
    assert torch.equal(back, ref)


def test_blur_of_a_delta_is_the_gaussian_kernel():
    delta = torch.zeros(3, 21, 21, dtype=torch.uint8)
    delta[:, 10, 10] = 255
    out = robustness.Degradation("blur_s1")(delta)[0].double()
    k = degrade.blur_kernel_size(1.0)
    assert k == 7
    t = np.arange(k) - k // 2
    g = np.exp(-t ** 2 / 2.0)
    g /= g.sum()
    expected = np.zeros((21, 21))
    expected[7:14, 7:14] = 255 * np.outer(g, g)
    np.testing.assert_allclose(out.numpy(), expected, atol=1.0)  # uint8 rounding
    assert abs(out.sum().item() - 255) < 25  # mass kept up to rounding of the 49 taps
    assert out[10, 10] == out.max() and torch.equal(out, out.T) and torch.equal(out, out.flip(0))


def test_blur_of_an_edge_is_monotone_and_symmetric():
    edge = torch.zeros(3, 16, 32, dtype=torch.uint8)
    edge[:, :, 16:] = 200
    row = degrade.blur(edge, 1.0)[0, 8].double()
    assert (row.diff() >= 0).all() and row[0] == 0 and row[-1] == 200
    assert 0 < row[15] < 100 < row[16] < 200 and abs(row[15] + row[16] - 200) <= 1  # symmetric about the step
    assert torch.equal(degrade.blur(edge, 0.0), edge)


def test_reshared_is_resize_then_jpeg_and_keeps_its_size():
    x = _known_image(48, 64)
    out = robustness.Degradation("reshared")(x)
    assert out.shape == (3, 36, 48)
    assert torch.equal(out, F.jpeg(degrade.rescale(x, 0.75), 75))


def test_degradations_on_pil_match_tensors_draw_nothing_and_repeat():
    x = _known_image()
    pil = Image.fromarray(x.permute(1, 2, 0).numpy())
    state = torch.get_rng_state()
    for name in robustness.PANEL:
        d = robustness.Degradation(name)
        a, b = d(x), d(x)
        assert torch.equal(a, b)  # deterministic
        assert np.array_equal(np.asarray(d(pil)), a.permute(1, 2, 0).numpy())
    assert torch.equal(state, torch.get_rng_state())  # no draw from the global generator
    assert torch.equal(robustness.Degradation("clean")(x), x)
    with pytest.raises(ValueError, match="jpeg_q10"):
        robustness.Degradation("jpeg_q10")
    with pytest.raises(ValueError, match="uint8"):
        degrade.jpeg(x.float(), 90)


# ---------------------------------------------------------------- training augmentation

def _noise_hwc(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_probability_zero_is_the_identity():
    cfg = TrainConfig.of(tiny_params(degrade_p_blur=0.0, degrade_p_jpeg=0.0)["tiny"])
    assert degrade.RandomDegrade.from_cfg(cfg, seed=0) is None
    aug = degrade.RandomDegrade(0.0, 0.0)
    for i in range(50):
        img = _noise_hwc(i)
        assert aug.draw(1, i) == (None, None)
        assert np.array_equal(aug(img, 1, i), img)


def test_probability_one_always_degrades():
    blur, jpeg = degrade.RandomDegrade(1.0, 0.0, seed=3), degrade.RandomDegrade(0.0, 1.0, seed=3)
    for i in range(40):
        img = _noise_hwc(i)
        sigma, q = blur.draw(2, i)
        assert q is None and 0 <= sigma < 3
        expected = degrade.blur(torch.from_numpy(img).permute(2, 0, 1), sigma).permute(1, 2, 0).numpy()
        assert np.array_equal(blur(img, 2, i), expected)
        sigma, q = jpeg.draw(2, i)
        assert sigma is None and 30 <= q <= 100
        out = jpeg(img, 2, i)
        assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)
        assert np.array_equal(out, degrade.jpeg(torch.from_numpy(img).permute(2, 0, 1), q).permute(1, 2, 0).numpy())


def test_draw_frequencies_and_ranges_match_the_recipe():
    aug = degrade.RandomDegrade(0.1, 0.5, sigma_max=3.0, quality_min=30, seed=0)
    draws = [aug.draw(epoch, i) for epoch in (1, 2) for i in range(2500)]
    n = len(draws)
    sigmas = np.array([s for s, _ in draws if s is not None])
    qualities = np.array([q for _, q in draws if q is not None])
    for p, k in ((0.1, len(sigmas)), (0.5, len(qualities))):  # within 4 binomial standard deviations
        assert abs(k / n - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert sigmas.min() >= 0 and sigmas.max() < 3 and abs(sigmas.mean() - 1.5) < 0.15  # U[0, 3]
    assert qualities.min() == 30 and qualities.max() == 100  # both ends of U{30..100} reached
    assert abs(qualities.mean() - 65) < 1.5 and len(np.unique(qualities)) == 71
    both = sum(s is not None and q is not None for s, q in draws) / n
    assert abs(both - 0.05) < 4 * math.sqrt(0.05 * 0.95 / n)  # the two decisions are independent


def test_draws_are_a_function_of_seed_epoch_and_index():
    a, b = degrade.RandomDegrade(0.5, 0.5, seed=1), degrade.RandomDegrade(0.5, 0.5, seed=1)
    assert [a.draw(3, i) for i in range(100)] == [b.draw(3, i) for i in range(100)]
    assert [a.draw(3, i) for i in range(100)] != [a.draw(4, i) for i in range(100)]  # a new epoch, new draws
    other = degrade.RandomDegrade(0.5, 0.5, seed=2)
    assert [a.draw(3, i) for i in range(100)] != [other.draw(3, i) for i in range(100)]
    jpeg_only = degrade.RandomDegrade(0.0, 0.5, seed=1)  # p_blur does not shift the JPEG draws
    assert [jpeg_only.draw(3, i)[1] for i in range(100)] == [a.draw(3, i)[1] for i in range(100)]


def test_augmented_dataset_applies_it_after_the_cache_then_flips(tmp_path):
    data = make_tiny(tmp_path, n=(6, 2, 2))
    rows = read_manifest(data / "fakes/manifest.csv", "train")
    prep = Preprocess(64, (0.5,) * 3, (0.5,) * 3)
    cache = build_decoded_cache(rows, 64, tmp_path / "cache", progress=False)
    aug = degrade.RandomDegrade(0.5, 0.5, seed=0)
    plain = ManifestDataset(rows, prep, cache=cache, raw=True)
    ds = ManifestDataset(rows, prep, cache=cache, raw=True, augment=aug)
    sampler = EpochSampler(len(ds), shuffle=True, seed=0, hflip=True, tag_epoch=True)
    sampler.set_epoch(5)
    indices = list(sampler)
    assert all(len(t) == 3 and t[2] == 5 for t in indices)
    untagged = EpochSampler(len(ds), shuffle=True, seed=0, hflip=True)
    untagged.set_epoch(5)
    assert [t[:2] for t in indices] == list(untagged)  # the same order and flips as without the tag
    changed = 0
    for i, flip, epoch in indices:
        x, y = ds[(i, flip, epoch)]
        base = plain[i][0]
        expected = aug(base, epoch, i)
        expected = expected[:, ::-1] if flip else expected
        assert np.array_equal(x, expected) and y == rows[i]["label"]
        changed += not np.array_equal(x, base[:, ::-1] if flip else base)
    assert changed > 0
    with pytest.raises(ValueError, match="epoch"):
        ds[(0, False)]


def test_tiny_model_still_learns_demo_faces_with_the_augmentation(tmp_path):
    from deepfake_detect.models import get_model
    from deepfake_detect.splits import SplitOptions, prepare_dataset
    from deepfake_detect.train import fit, make_loaders

    params = tiny_params(degrade_p_blur=0.5, degrade_p_jpeg=0.5, epochs=6, batch_size=16, select_metric="auc",
                         eval_test_every_epoch=False)
    cfg = params["tiny"]
    demo_cfg = {"image_size": 64, "fakes": {"train": 200, "val": 60, "test": 6, "strength": 1.0}}
    prepare_dataset("fakes", params["data"]["fakes"], tmp_path / "data/fakes", SplitOptions(seed=0, demo_cfg=demo_cfg),
                    progress=False)
    rows = read_manifest(tmp_path / "data/fakes/manifest.csv")
    loaders = make_loaders(cfg, rows, get_model("simplenet", image_size=64), 0, torch.device("cpu"),
                           tmp_path / "cache", progress=False)
    assert loaders["train"].dataset.augment == degrade.RandomDegrade(0.5, 0.5, 3.0, 30, seed=0)
    assert loaders["val"].dataset.augment is None and loaders["test"].dataset.augment is None  # training only
    out = fit(cfg, params, data_dir=tmp_path / "data", models_dir=tmp_path / "models",
              metrics_dir=tmp_path / "metrics", cache_dir=tmp_path / "cache", progress=False)
    assert out["best_val_auc"] >= 0.75, out  # 0.829 measured; an untrained model is at 0.5
