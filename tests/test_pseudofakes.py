"""Self-blended pseudo-fakes (pseudofakes.py): the pair and its mask, determinism, the split the trainer builds
from reals alone, and a detector trained on no fake image that finds the demo's real face swaps."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from deepfake_detect import demo
from deepfake_detect.config import ParamsError, TrainConfig, load_params, rename_run
from deepfake_detect.data import ManifestDataset, Preprocess, read_manifest
from deepfake_detect.pseudofakes import (
    PairSampler,
    SelfBlend,
    SelfBlendedDataset,
    make_self_blend,
    real_rows,
    uses_pseudo_fakes,
)
from deepfake_detect.splits import SplitOptions, prepare_dataset
from deepfake_detect.train import fit, make_loaders

from conftest import PARAMS_YAML

DEMO_MASK = {"mask_height": [0.2, 0.3]}  # the demo's faces fill less of the frame than real face crops


def _face(seed: int, size: int = 96) -> np.ndarray:
    return demo.render_face(np.random.default_rng(seed), size)


@pytest.fixture(scope="module")
def demo_fakes(tmp_path_factory):
    """The demo face-swap set at 64 px: 80 real + 40 fake train, 40 + 20 val, 40 + 20 test; its data dir."""
    data = tmp_path_factory.mktemp("sbi") / "data"
    src = {"source": "demo", "groups": None, "val_fraction": 0.15, "test_fraction": 0.15}
    prepare_dataset("fakes", src, data / "fakes", SplitOptions(
        seed=0, demo_cfg={"image_size": 64, "fakes": {"train": 120, "val": 60, "test": 60}}), progress=False)
    return data


def _params(**section):
    return rename_run(load_params(PARAMS_YAML, {"device": "cpu", "simplenet-fakes": {
        "image_size": 64, "batch_size": 16, "epochs": 5, "hflip": True, "select_metric": "auc",
        "eval_test_every_epoch": False, "pseudo_fakes": "sbi", "pseudo_fakes_params": DEMO_MASK,
        **section}}), "simplenet-fakes", "sbi")


def test_fake_differs_from_its_real_only_inside_the_mask():
    blend = SelfBlend()
    for seed in range(12):
        image = _face(seed)
        real, fake, mask = blend.pair(image, np.random.default_rng(seed + 100))
        assert real.shape == fake.shape == image.shape and real.dtype == fake.dtype == np.uint8
        assert mask.shape == image.shape[:2] and mask.dtype == np.float32 and 0 <= mask.min() <= mask.max() <= 1
        changed = (real != fake).any(2)
        assert not changed[mask == 0].any()  # outside the mask: the very same pixels
        core = mask >= 0.5 * mask.max()
        assert changed[core].mean() > 0.9  # inside: blended
        assert min(abs(mask.max() - r) for r in blend.blend_ratios) < 1e-6  # peak = the drawn blend ratio
        assert 0.1 < (mask > 0).mean() < 0.8  # a face-sized region ...
        rows, cols = np.nonzero(mask > 0)
        assert abs(rows.mean() / 96 - 0.5) < 0.1 and abs(cols.mean() / 96 - 0.5) < 0.1  # ... around the centre


def test_the_real_of_a_pair_is_the_image_or_its_altered_copy():
    image = _face(1)
    real, fake, mask = SelfBlend(p_alter_source=1.0).pair(image, np.random.default_rng(0))
    assert np.array_equal(real, image)  # the source was altered: the real is the untouched image
    real, fake, mask = SelfBlend(p_alter_source=0.0).pair(image, np.random.default_rng(0))
    assert (real != image).any(2).mean() > 0.5  # the target was altered (colour and frequency) ...
    assert np.array_equal(real[mask == 0], fake[mask == 0])  # ... and the fake is blended into that copy
    # no blur, no shift, no colour change, ratio 1: the fake is the real again
    still = SelfBlend(p_alter_source=1.0, p_rgb_shift=0.0, brightness=0.0, contrast=0.0, saturation=0.0,
                      blur_sigma=[0.01, 0.01], sharpness=[1.0, 1.0], downscale=[1, 1], translate_x=0.0,
                      translate_y=0.0, scale=[1.0, 1.0])
    _, fake, mask = still.pair(image, np.random.default_rng(0))
    assert np.abs(fake.astype(int) - image.astype(int)).max() <= 1 and mask.max() > 0


def _real_dataset(tmp_path, n: int = 4, size: int = 48):
    from PIL import Image

    rows = []
    for i in range(n):
        path = tmp_path / f"r{i}.png"
        Image.fromarray(_face(i, size)).save(path)
        rows.append({"path": str(path), "label": 0})
    return ManifestDataset(rows, Preprocess(size, (0.5,) * 3, (0.5,) * 3), raw=True)


def test_pairs_labels_and_determinism(tmp_path):
    base = _real_dataset(tmp_path)
    ds = SelfBlendedDataset(base, SelfBlend(), seed=3)
    assert len(ds) == 2 * len(base) and ds.transform is base.transform
    items = {k: ds[(k, False, 1)] for k in (5, 4, 1, 0)}  # any order: a pair does not depend on what came before
    assert [items[k][1] for k in (0, 1, 4, 5)] == [0, 1, 0, 1]
    for i in (0, 2):
        real, fake = items[2 * i][0], items[2 * i + 1][0]
        again = SelfBlendedDataset(base, SelfBlend(), seed=3)
        assert np.array_equal(again[(2 * i + 1, False, 1)][0], fake)
        assert np.array_equal(again[(2 * i, False, 1)][0], real)
        _, ref_fake, mask = SelfBlend().pair(base[i][0], again.generator(i, 1))  # the real of the pair is its target
        assert np.array_equal(ref_fake, fake) and np.array_equal(real[mask == 0], fake[mask == 0])
        assert not np.array_equal(ds[(2 * i + 1, False, 2)][0], fake)  # a new pseudo-fake every epoch
        assert not np.array_equal(SelfBlendedDataset(base, SelfBlend(), seed=4)[(2 * i + 1, False, 1)][0], fake)
        flipped = ds[(2 * i + 1, True, 1)][0]
        assert np.array_equal(flipped, SelfBlend().pair(base[i][0][:, ::-1], ds.generator(i, 1))[1])
    assert np.array_equal(ds[3][0], ds[(3, False, 0)][0])  # a plain index: epoch 0, no flip (validation)


def test_pair_sampler_keeps_pairs_together_and_shards_like_epoch_sampler():
    s = PairSampler(5, shuffle=True, seed=1, hflip=True)
    first = list(s)
    assert len(first) == len(s) == 10
    for a, b in zip(first[::2], first[1::2]):
        assert b == (a[0] + 1, a[1], 0) and a[0] % 2 == 0  # real then its fake, the same flip, the epoch
    assert sorted(k for k, _, _ in first) == list(range(10))
    s.set_epoch(2)
    second = list(s)
    assert [k for k, _, _ in second] != [k for k, _, _ in first] and {e for _, _, e in second} == {2}
    shards = [list(PairSampler(5, shuffle=True, seed=1, num_replicas=2, rank=r)) for r in (0, 1)]
    assert sorted({k for shard in shards for k, _, _ in shard}) == list(range(10))  # 5 reals padded to 6, as DDP


def test_bad_settings_name_the_key(tmp_path):
    with pytest.raises(ParamsError, match=r"unknown key 'pseudo_fakes_params.mask_hieght' of run 'x'"):
        make_self_blend({"mask_hieght": [0.2, 0.3]}, "x")
    with pytest.raises(ParamsError, match=r"pseudo_fakes_params.blend_ratios' must be a list of numbers in \(0, 1\]"):
        make_self_blend({"blend_ratios": [0.5, 2]}, "x")
    with pytest.raises(ParamsError, match=r"pseudo_fakes_params.mask_height' must be a \[low, high\] pair"):
        make_self_blend({"mask_height": [0.5, 0.2]}, "x")
    cfg = dataclasses.replace(TrainConfig.from_params(load_params(PARAMS_YAML), "simplenet-fakes"), run="x",
                              pseudo_fakes="none", pseudo_fakes_val=True)
    with pytest.raises(ParamsError, match="sets pseudo_fakes_val but pseudo_fakes is none"):
        uses_pseudo_fakes(cfg, "val")
    base = _real_dataset(tmp_path, n=1)
    base.rows.append({"path": "f.png", "label": 1})
    with pytest.raises(ValueError, match="made from real images only; 1 fake rows given"):
        SelfBlendedDataset(base, SelfBlend(), seed=0)


def test_splits_the_trainer_builds(demo_fakes, tmp_path):
    """Train: the train reals and their pseudo-fakes; val and test: the real splits (real fakes); with
    pseudo_fakes_val validation is pseudo too, and the test split always has the real fakes."""
    from deepfake_detect.models import get_model

    rows = read_manifest(demo_fakes / "fakes/manifest.csv")
    n_real = {s: len(real_rows([r for r in rows if r["split"] == s])) for s in ("train", "val", "test")}
    for strict in (False, True):
        params = _params(pseudo_fakes_val=strict)
        cfg = params["sbi"]
        loaders = make_loaders(cfg, rows, get_model("simplenet", image_size=64), 0, torch.device("cpu"),
                               cache_dir=tmp_path, progress=False)
        assert len(loaders["train"].dataset) == 2 * n_real["train"] and isinstance(loaders["train"].sampler,
                                                                                 PairSampler)
        x, y = next(iter(loaders["train"]))
        assert x.dtype == torch.uint8 and y.tolist() == [0, 1] * 8  # pairs in one batch
        val = [y for _, y in loaders["val"].dataset] if strict else [r["label"] for r in loaders["val"].dataset.rows]
        assert len(val) == (2 * n_real["val"] if strict else len([r for r in rows if r["split"] == "val"]))
        assert sum(val) == (n_real["val"] if strict else len(val) - n_real["val"])
        assert len(loaders["test"].dataset.rows) == len([r for r in rows if r["split"] == "test"])


def test_a_detector_trained_on_no_fake_finds_the_demo_face_swaps(demo_fakes, tmp_path):
    """SimpleNet trained on the 80 demo train reals and their pseudo-fakes (never a fake image), checkpoint chosen
    on the real val split: val AUC 0.899 on the demo's real face swaps (0.90-0.94 over seeds 0-2; trained
    on the real fakes instead, the same budget gives 0.70-0.87)."""
    params = _params()
    out = fit(params["sbi"], params, data_dir=demo_fakes, models_dir=tmp_path / "models",
              metrics_dir=tmp_path / "metrics", cache_dir=tmp_path / "cache", progress=False)
    assert out["train_images_per_epoch"] == 160  # 80 reals, each with its pseudo-fake
    assert out["best_val_auc"] > 0.8, out
    ckpt = torch.load(tmp_path / "models/sbi.pt", weights_only=True)
    assert ckpt["pseudo_fakes"] == "sbi" and ckpt["dataset"] == "fakes"
