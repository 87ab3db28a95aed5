"""EXIF orientation is applied wherever pixels are read: a photo stored sideways with orientation 6 (as phones
store portraits) decodes, hashes, caches, trains, scores and explains exactly like the same photo stored upright."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepfake_detect import cli
from deepfake_detect.data import ManifestDataset, Preprocess, build_decoded_cache, load_rgb
from deepfake_detect.detector import Detector
from deepfake_detect.explain import load_masks
from deepfake_detect.splits import SplitOptions, check_dataset

from conftest import sensitive_checkpoint

# orientation -> how the stored pixels relate to the upright picture (the inverse of what a viewer applies)
STORED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270,
          2: Image.Transpose.FLIP_LEFT_RIGHT}


def _upright_image(seed=0, size=(48, 32)) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    arr[:4] = (255, 0, 0)  # a red band at the top: which way is up is visible
    return Image.fromarray(arr)


def save_pair(folder, name, im, orientation=6, fmt="PNG"):
    """``name`` upright and ``turned_<name>``: the pixels turned as the tag says, tag set."""
    folder.mkdir(parents=True, exist_ok=True)
    up, turned = folder / name, folder / f"turned_{name}"
    opts = {"quality": 95, "subsampling": 0} if fmt == "JPEG" else {}
    im.save(up, format=fmt, **opts)
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.transpose(STORED[orientation]).save(turned, format=fmt, exif=exif, **opts)
    return up, turned


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_load_rgb_applies_the_orientation(tmp_path, orientation):
    up, turned = save_pair(tmp_path, "a.png", _upright_image(), orientation)
    with Image.open(turned) as raw:
        assert raw.size != Image.open(up).size or orientation in (2, 3)
        assert not np.array_equal(np.asarray(raw.convert("RGB")), np.asarray(load_rgb(up)))  # stored otherwise
    assert np.array_equal(np.asarray(load_rgb(turned)), np.asarray(load_rgb(up)))


def test_hashes_cache_scores_and_masks_see_the_upright_picture(tmp_path, tiny_ckpt):
    root = tmp_path / "flat"
    pairs = [save_pair(root / cls, f"{cls}{i}.png", _upright_image(10 * i + (cls == "fake")))
             for cls in ("real", "fake") for i in range(3)]
    # prepare-splits' content hashes: the turned copy has the upright copy's pixels -> the same sha1
    _, rows = check_dataset("x", {"source": str(root), "groups": None, "val_fraction": 0.2, "test_fraction": 0.2},
                            tmp_path / "out", SplitOptions(on_leak="warn"), progress=False)
    sha = {r["path"]: r["sha1"] for r in rows}
    assert all(sha[str(up)] == sha[str(turned)] for up, turned in pairs)
    assert all((r["width"], r["height"]) == (48, 32) for r in rows)
    # the decoded training cache and the Dataset: identical tensors
    rows = [{"path": str(p), "label": 0, "sha1": str(i)} for i, p in enumerate(p for pair in pairs for p in pair)]
    prep = Preprocess(64, (0.5,) * 3, (0.5,) * 3)
    cache = build_decoded_cache(rows, 64, tmp_path / "cache", progress=False)
    cached = ManifestDataset(rows, prep, cache=cache)
    for k in range(0, len(rows), 2):
        assert torch.equal(cached[k][0], cached[k + 1][0])
        assert torch.equal(ManifestDataset(rows, prep)[k + 1][0], cached[k][0])
    # evaluate/predict scores: the same
    p, errors = Detector.load(tiny_ckpt, "cpu", "fp32").score_paths([r["path"] for r in rows], progress=False)
    assert not errors and np.allclose(p[0::2], p[1::2], rtol=0, atol=1e-6)
    # explain's masks turn with their tag as well
    up, turned = save_pair(tmp_path / "masks", "m.png", _upright_image(5).convert("L").convert("RGB"))
    assert np.array_equal(load_masks([up], 32), load_masks([turned], 32))


def test_predict_cli_scores_a_turned_jpeg_like_the_upright_one(tmp_path, demo_faces):
    photo = load_rgb(demo_faces[0]).resize((96, 128))
    up, turned = save_pair(tmp_path / "in", "photo.jpg", photo, fmt="JPEG")
    with Image.open(turned) as raw:
        assert raw.getexif()[0x0112] == 6 and raw.size == (128, 96)
        raw.convert("RGB").save(tmp_path / "in" / "as_stored.png")  # what was scored before orientation was read
    ckpt = sensitive_checkpoint(tmp_path / "s.pt", demo_faces)
    out = tmp_path / "p.json"
    assert cli.main(["predict", "--model", str(ckpt), str(up), str(turned), str(tmp_path / "in" / "as_stored.png"),
                     "--out", str(out), "--quiet", "--device", "cpu", "--crop", "whole"]) == 0
    p = {Path(r["path"]).name: r["p_fake"] for r in json.loads(out.read_text())}
    # JPEG: each copy was compressed from its own stored pixels, so equal up to the codec (0.0006 here)
    assert p["turned_photo.jpg"] == pytest.approx(p["photo.jpg"], abs=0.01)
    assert abs(p["as_stored.png"] - p["photo.jpg"]) > 0.1
