"""Tests of the procedural demo datasets (deepfake_detect.demo)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from deepfake_detect import demo


def _auc(pos, neg) -> float:
    """Mann-Whitney AUC: P(score of a positive > score of a negative), ties count half."""
    pos, neg = np.asarray(pos, float)[:, None], np.asarray(neg, float)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_groups(root: Path) -> list[dict]:
    with open(root / "groups.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def fakes_ds(tmp_path_factory):
    out = tmp_path_factory.mktemp("fakes")
    recs = demo.generate_dataset(out, "fakes", 9, 6, 4, demo.DemoOptions(image_size=64, seed=3), progress=False)
    return out, recs


@pytest.fixture(scope="module")
def synthetic_ds(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    recs = demo.generate_dataset(out, "synthetic", 24, 4, 5, demo.DemoOptions(image_size=64, seed=0), progress=False)
    return out, recs


# ----------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("kind", demo.DEMO_KINDS)
def test_same_seed_identical_bytes_different_seed_differs(tmp_path, kind):
    kw = dict(kind=kind, n_train=4, n_val=3, n_test=3, progress=False)
    r1 = demo.generate_dataset(tmp_path / "a", **kw, options=demo.DemoOptions(image_size=48, seed=7))
    r2 = demo.generate_dataset(tmp_path / "b", **kw, options=demo.DemoOptions(image_size=48, seed=7))
    demo.generate_dataset(tmp_path / "c", **kw, options=demo.DemoOptions(image_size=48, seed=8))
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert r1 == r2
    assert a == b  # every PNG, mask and groups.csv byte for byte
    assert a.keys() == c.keys()
    imgs = [k for k in a if k.endswith(".png") and not k.startswith("masks/")]
    assert all(a[k] != c[k] for k in imgs)  # another seed: every image differs



# The hashes a CPU-independent generator gives on every machine: the PNG bytes (what DVC hashes) and the
# decoded pixels (which tell a drift of the renderer from one of the PNG encoder, zlib-ng in Pillow's wheels).
PINNED = {
    ("fakes", "train/real/00000.png"): ("cc05826d1253892c1ecd99d04714bef061dea0f2730799a73ea626a9e10ed43c",
                                       "2c76f1e6bb30bfa1a43d93007763ecd3507cd3db652c94fd8bad14dfbab1b14b"),
    ("fakes", "test/fake/00000.png"): ("d9d2f7f1192869272d96661a454598754de571b61f469781231d0f9439d0ad34",
                                      "823a2d533bc73d68f06ed0e9e2f3e1fe966391b015dac0410ecb7bbc54450870"),
    ("fakes", "masks/test/fake/00000.png"): ("34b752b2371f543c420629847cdae8051fa60237ce989f91ac2ac5c1a857543a",
                                            "e9dd1e54323b9fb81c56977ee0e4a02e0a17ee02e587ff6a5f56116fd8a9182e"),
    ("synthetic", "train/real/00000.png"): ("ad483f29a0de9cb0c0c1ce267fb30b2cc3320c3cb4cafde2238a3eed0f9557c8",
                                           "3c642a9a0a5c953bc95c1ffd42f9a43346c68bf82352dd8af0e0db22a6dfbd03"),
    ("synthetic", "val/fake/00000.png"): ("67a18331598c80cffdc9af02aac1f856c53f599d4de4ec11b70af011399c59ca",
                                         "44b9dd6d3e88d39c0ca99da00da0ed3df26a11c66b2407bbc9150357c68f2983"),
}


def _sha256(b: bytes) -> str:
    import hashlib

    return hashlib.sha256(b).hexdigest()


def test_generated_images_are_pinned(tmp_path):
    got = {}
    for kind in demo.DEMO_KINDS:
        demo.generate_dataset(tmp_path / kind, kind, n_train=3, n_val=2, n_test=2,
                              options=demo.DemoOptions(image_size=64, seed=0),
                              progress=False)
    for kind, rel in PINNED:
        path = tmp_path / kind / rel
        got[(kind, rel)] = (_sha256(path.read_bytes()), _sha256(np.asarray(Image.open(path)).tobytes()))
    assert got == PINNED


_RENDER_HASHES = """
import hashlib, sys, tempfile
from pathlib import Path
from deepfake_detect import demo
h = hashlib.sha256()
for i in range(24):  # enough draws to reach every background type and hair style
    rng = demo._rng_for(5, i)
    img, geom = demo._render(demo.make_identity(rng), demo._sample_pose(rng), demo._sample_scene(rng), 48, rng)
    h.update(img.tobytes() + geom["head"].tobytes())
h.update(demo._fingerprint(0, 48)["pattern"].tobytes())
out = Path(tempfile.mkdtemp())
for kind in demo.DEMO_KINDS:
    demo.generate_dataset(out / kind, kind, n_train=3, n_val=2, n_test=2,
                          options=demo.DemoOptions(image_size=48, seed=1), progress=False)
for p in sorted(out.rglob("*.png")):
    h.update(p.read_bytes())
print(h.hexdigest())
"""


def test_images_do_not_depend_on_the_cpus_simd_kernels():
    """Emulates an older CPU on this one: numpy's run-time dispatched SIMD kernels (AVX-512, AVX2 ...) and
    libjpeg-turbo's are switched off in a second process; the float renders and every PNG must not change."""
    import os
    import subprocess
    import sys

    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:  # numpy < 2
        from numpy.core import _multiarray_umath as umath
    found = [f for f in umath.__cpu_dispatch__ if umath.__cpu_features__.get(f)]
    if not found:
        pytest.skip("numpy dispatches no SIMD kernel beyond its baseline on this CPU: nothing to switch off")
    env = {**os.environ, "PYTHONPATH": str(Path(demo.__file__).parents[1])}

    def run(**extra):
        return subprocess.run([sys.executable, "-c", _RENDER_HASHES], env={**env, **extra}, capture_output=True,
                              text=True, check=True).stdout.strip()

    assert run() == run(NPY_DISABLE_CPU_FEATURES=" ".join(found), JSIMD_FORCENONE="1"), found


@pytest.mark.parametrize("name", ["exp", "sin", "cos", "tanh", "atan2"])
def test_cpu_independent_maths_agree_with_numpy(name):
    ours, ref = {"exp": (lambda x: demo._exp(-np.abs(x)), lambda x: np.exp(-np.abs(x))),
                 "atan2": (lambda x: demo._atan2(x, x[::-1]), lambda x: np.arctan2(x, x[::-1]))}.get(
        name, (getattr(demo, f"_{name}"), getattr(np, name)))
    x = np.concatenate([np.random.default_rng(0).uniform(-1500, 1500, 100_000), [0.0, -0.0, 1e-300, 3.0, -3.0]])
    np.testing.assert_allclose(ours(x), ref(x), rtol=1e-14, atol=1e-15)  # numpy's own differ by ~1-4 ulp
    assert ours(x.astype(np.float32)).dtype == np.float32

# ----------------------------------------------------------------------------- layout
@pytest.mark.parametrize("ds, expected", [
    ("fakes_ds", {"train": (6, 3), "val": (4, 2), "test": (3, 1)}),          # n_fake = n // 3
    ("synthetic_ds", {"train": (12, 12), "val": (2, 2), "test": (3, 2)}),   # n_fake = n // 2
])
def test_layout_counts_and_masks(ds, expected, request):
    out, recs = request.getfixturevalue(ds)
    size = 64
    for split, (n_real, n_fake) in expected.items():
        got = [r for r in recs if r["split"] == split]
        assert sum(r["label"] == 0 for r in got) == n_real
        assert sum(r["label"] == 1 for r in got) == n_fake
    # what is on disk is exactly what the records list
    on_disk = {p.relative_to(out).as_posix() for p in out.glob("*/*/*.png") if p.parts[-3] != "masks"}
    assert on_disk == {r["path"] for r in recs}
    masks_on_disk = {p.relative_to(out).as_posix() for p in (out / "masks").rglob("*.png")}
    assert masks_on_disk == {r["mask"] for r in recs if r["label"] == 1}
    for r in recs:
        split, cls, name = r["path"].split("/")
        assert split == r["split"] and cls == ("fake" if r["label"] else "real") and name.endswith(".png")
        with Image.open(out / r["path"]) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (size, size)
            arr = np.asarray(im)
        assert arr.dtype == np.uint8 and arr.shape == (size, size, 3)
        if r["label"] == 0:
            assert r["mask"] == ""
            continue
        assert r["mask"] == f"masks/{split}/fake/{name}"
        with Image.open(out / r["mask"]) as mk:
            assert mk.format == "PNG" and mk.mode == "L" and mk.size == (size, size)
            m = np.asarray(mk)
        assert set(np.unique(m)) <= {0, 255}
        frac = (m == 255).mean()
        assert 0.02 < frac < 0.6, frac  # non-empty proper subset of the image


def test_groups_csv_and_identity_disjoint_splits(fakes_ds, synthetic_ds):
    for out, recs in (fakes_ds, synthetic_ds):
        rows = _read_groups(out)
        assert list(rows[0].keys()) == ["path", "label", "group", "split"]
        assert [(r["path"], r["label"], r["group"], r["split"]) for r in rows] == [
            (r["path"], "fake" if r["label"] else "real", r["group"], r["split"]) for r in recs]
        by_split = {s: {r["group"] for r in recs if r["split"] == s} for s in demo.SPLITS}
        assert all(by_split[s] for s in demo.SPLITS)
        assert not (by_split["train"] & by_split["val"])
        assert not (by_split["train"] & by_split["test"])
        assert not (by_split["val"] & by_split["test"])
        # real and fake images of the same target identity share the group
        both = {g for g in by_split["train"]
                if {r["label"] for r in recs if r["group"] == g} == {0, 1}}
        assert both


def test_regenerate_overwrites_and_removes_stale_files(tmp_path):
    demo.generate_dataset(tmp_path, "fakes", 9, 3, 3, options=demo.DemoOptions(image_size=32), progress=False)
    recs = demo.generate_dataset(tmp_path, "fakes", 3, 3, 3, options=demo.DemoOptions(image_size=32), progress=False)
    pngs = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")}
    assert pngs == {r["path"] for r in recs} | {r["mask"] for r in recs if r["mask"]}
    assert len(_read_groups(tmp_path)) == 9


# ----------------------------------------------------------------------------- the cues are really there
def test_synthetic_fingerprint_separates_classes(synthetic_ds, tmp_path):
    out, recs = synthetic_ds
    scores = {0: [], 1: []}
    for r in recs:
        if r["split"] == "train":
            scores[r["label"]].append(demo.nyquist_peak_score(np.asarray(Image.open(out / r["path"]))))
    assert len(scores[0]) == len(scores[1]) == 12
    assert _auc(scores[1], scores[0]) > 0.95
    # control: with the fingerprint switched off the same statistic no longer separates
    recs0 = demo.generate_dataset(tmp_path, "synthetic", 24, 2, 2,
                                  options=demo.DemoOptions(image_size=64, seed=0, strength=0.0), progress=False)
    s0 = {0: [], 1: []}
    for r in recs0:
        if r["split"] == "train":
            s0[r["label"]].append(demo.nyquist_peak_score(np.asarray(Image.open(tmp_path / r["path"]))))
    assert _auc(s0[1], s0[0]) < 0.85


def test_synthetic_fingerprint_is_subtle_and_inside_mask():
    rng_id = np.random.default_rng(0)
    identity = demo.make_identity(rng_id)
    fake, mask = demo.render_synthetic(np.random.default_rng(5), 96, identity, fake=True)
    real, none = demo.render_synthetic(np.random.default_rng(5), 96, identity, fake=False)  # same draws
    d = fake.astype(float) - real.astype(float)
    inside = mask > 0
    assert not none.any()
    assert 0.3 < np.sqrt((d[inside] ** 2).mean()) < 3.0  # about a grey level: invisible, but present
    assert np.abs(d[~ndimage.binary_dilation(inside, iterations=2)]).max() <= 1  # rounding only outside


def _boundary_gradient(img: np.ndarray, mask: np.ndarray) -> float:
    g = ndimage.gaussian_filter(img.astype(float), (1, 1, 0))
    gy, gx = np.gradient(g, axis=(0, 1))
    energy = (gx ** 2 + gy ** 2).sum(axis=2)
    m = mask > 0
    band = ndimage.binary_dilation(m, iterations=2) & ~ndimage.binary_erosion(m, iterations=2)
    return float(np.median(energy[band]))


def test_face_swap_seam_is_measurable():
    """Gradient energy on the mask boundary of a fake vs the same pixels of the untouched target photo."""
    ids = [demo.make_identity(np.random.default_rng(i)) for i in range(40)]
    fake_e, real_e, inside, outside = [], [], [], []
    for i in range(20):
        fake, mask, pristine = demo.render_swap(np.random.default_rng(100 + i), 96, ids[i], ids[20 + i])
        assert fake.shape == pristine.shape == (96, 96, 3) and mask.shape == (96, 96)
        fake_e.append(_boundary_gradient(fake, mask))
        real_e.append(_boundary_gradient(pristine, mask))
        diff = np.abs(fake.astype(float) - pristine.astype(float)).sum(axis=2)
        m = mask > 0
        inside.append(diff[m].mean())
        outside.append(diff[~ndimage.binary_dilation(m, iterations=6)].mean())
    fake_e, real_e = np.array(fake_e), np.array(real_e)
    assert (fake_e > real_e).mean() >= 0.7
    assert fake_e.mean() > 1.3 * real_e.mean()
    # the manipulation lives inside the mask; outside only the re-compression touches pixels
    assert np.mean(inside) > 4 * np.mean(outside)


def test_render_face_is_a_face_picture():
    img = demo.render_face(np.random.default_rng(0), 128)
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    assert img.std() > 10  # not flat
    identity = demo.make_identity(np.random.default_rng(1))
    a = demo.render_face(np.random.default_rng(2), 64, identity)
    b = demo.render_face(np.random.default_rng(2), 64, identity)
    assert np.array_equal(a, b)


# ----------------------------------------------------------------------------- argument checking
@pytest.mark.parametrize("kwargs, name", [
    (dict(kind="gan"), "kind"),
    (dict(n_train=1), "n_train"),
    (dict(n_val=0), "n_val"),
    (dict(n_test=-3), "n_test"),
    (dict(image_size=31), "image_size"),
    (dict(strength=-1.0), "strength"),
])
def test_bad_arguments_raise_value_error_naming_them(tmp_path, kwargs, name):
    args = dict(out_dir=tmp_path / "x", kind="fakes", n_train=3, n_val=3, n_test=3, progress=False)
    options = {"image_size": 32, **{k: kwargs.pop(k) for k in ("image_size", "strength") if k in kwargs}}
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        demo.generate_dataset(**args, options=demo.DemoOptions(**options))
    assert not (tmp_path / "x").exists()  # validated before anything is written


def test_smallest_fakes_split_still_has_both_classes(tmp_path):
    recs = demo.generate_dataset(tmp_path, "fakes", 2, 2, 3, options=demo.DemoOptions(image_size=32), progress=False)
    for split in demo.SPLITS:
        labels = sorted(r["label"] for r in recs if r["split"] == split)
        assert labels == ([0, 1] if split != "test" else [0, 0, 1])
