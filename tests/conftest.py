"""Shared fixtures and helpers (tests import them from here, never from another test file): tiny image
folders and manifests, a tiny checkpoint, the params of a tiny run and paths to the optional real data."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_detect.config import load_params, rename_run

REPO = Path(__file__).resolve().parents[1]
PARAMS_YAML = REPO / "params.yaml"  # the one source of every value: tests start from it and change a few keys


# The slow tier (`pytest -m "not slow"` leaves it out for the edit-test loop; CI and the README's test command run
# everything): end-to-end `dvc repro` copies, DDP across processes, the remote round trip, the bench smoke runs.
SLOW_MODULES = {"test_pipeline", "test_ddp", "test_dvc_remote", "test_bench", "test_bench_faces",
                "test_bench_serve"}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end repros, DDP, remote, bench smoke (deselect: -m 'not slow')")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


def shared_data_dir() -> Path:
    """Real datasets beside the checkout (``../shared/data``) or where DFD_SHARED_DATA points."""
    return Path(os.environ.get("DFD_SHARED_DATA", REPO.parent / "shared" / "data"))


def write_image(path: Path, seed: int, size: int = 32, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).convert(mode).save(path)
    return path


@pytest.fixture
def course_folder(tmp_path: Path) -> Path:
    """A tiny course-layout dataset: train|val|test / real|fake, 4 + 2 images per split."""
    root = tmp_path / "course"
    seed = 0
    for split in ("train", "val", "test"):
        for cls, n in (("real", 4), ("fake", 2)):
            for i in range(n):
                seed += 1
                write_image(root / split / cls / f"{cls}{i}.png", seed)
    return root


@pytest.fixture
def flat_folder(tmp_path: Path) -> Path:
    """A tiny flat dataset: real/ and fake/ with 10 identity groups (groups.csv)."""
    root = tmp_path / "flat"
    rows = ["path,group"]
    seed = 100
    for g in range(10):
        for cls in ("real", "fake"):
            for i in range(2):
                seed += 1
                rel = f"{cls}/g{g}_{i}.png"
                write_image(root / rel, seed)
                rows.append(f"{rel},id{g}")
    (root / "groups.csv").write_text("\n".join(rows) + "\n")
    return root


def make_tiny(root, n=(16, 8, 8), size=64, seed=0):
    """A manifest of n train/val/test noise images whose class shifts the brightness; returns the data dir."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    rows = []
    for split, k in zip(("train", "val", "test"), n):
        for i in range(k):
            label = i % 2
            img = rng.integers(0, 200, (size + 3 * i % 7, size, 3)) + 30 * label  # some sizes differ: resize path
            p = root / "data/fakes/images" / split / f"{i}.{'png' if i % 3 else 'jpg'}"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.astype(np.uint8)).save(p)
            rows.append({"path": str(p), "label": label, "split": split, "sha1": f"{split}{i}", "group": "",
                         "mask": "", "width": size, "height": size})
    with open(root / "data/fakes/manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root / "data"


def tiny_params(run: str = "tiny", **section):
    """params.yaml on the CPU with the simplenet-fakes recipe made tiny (64 px, batch 8, 2 epochs, changed by
    ``section``) and trained as run ``run``: ``params[run]`` is its config."""
    return rename_run(load_params(PARAMS_YAML, {"device": "cpu", "simplenet-fakes": {
        "image_size": 64, "batch_size": 8, "epochs": 2, **section}}), "simplenet-fakes", run)


def tiny_checkpoint(path: Path, run: str = "tiny", dataset: str = "fakes", image_size: int = 64) -> Path:
    """An untrained SimpleNet checkpoint (seeded: the same weights every time) that says it was trained on
    ``dataset``; its recorded training metrics are {"test_acc_at_best_val": 0.5}."""
    import torch

    from deepfake_detect.checkpoint import save_checkpoint
    from deepfake_detect.models import get_model

    torch.manual_seed(0)
    return save_checkpoint(path, get_model("simplenet", image_size=image_size), image_size, run=run,
                           dataset=dataset, metrics={"test_acc_at_best_val": 0.5})


@pytest.fixture
def tiny_ckpt(tmp_path: Path) -> Path:
    """models/tiny.pt under tmp_path: ``tiny_checkpoint`` of run 'tiny' on 'fakes'."""
    return tiny_checkpoint(tmp_path / "models" / "tiny.pt")


@pytest.fixture(scope="session")
def demo_faces(tmp_path_factory) -> list[Path]:
    """Procedural demo faces (the demo's 12 test images, 128 px PNG): pictures with one face, made offline."""
    from deepfake_detect.demo import generate_dataset

    root = tmp_path_factory.mktemp("demo_faces")
    generate_dataset(root, "fakes", n_train=2, n_val=2, n_test=12, progress=False)
    return sorted(root.glob("test/*/*.png"))


def sensitive_checkpoint(path: Path, images, image_size: int = 64, domain: dict | None = None,
                         run: str = "sensitive") -> Path:
    """A seeded SimpleNet whose last layer is rescaled so that on ``images`` its fake-minus-real logit has
    mean 0 and standard deviation 2: p(fake) spreads over about 0.1-0.9, so scoring the wrong pixels shows.
    (Deliberately over-sensitive: a shift of a few pixels moves it too.) ``domain``: the checkpoint's record
    of its training data (as train.training_domain writes it)."""
    import torch

    from deepfake_detect.checkpoint import save_checkpoint
    from deepfake_detect.data import Preprocess, load_rgb
    from deepfake_detect.models import get_model

    torch.manual_seed(0)
    model = get_model("simplenet", image_size=image_size).eval()
    prep = Preprocess(image_size, model.mean, model.std)
    with torch.no_grad():
        z = model(torch.stack([prep(load_rgb(p)) for p in images]))
        d = z[:, 1] - z[:, 0]
        last = model.classifier[-1]
        scale = 2.0 / d.std()
        last.weight.mul_(scale)
        last.bias.mul_(scale)
        shift = d.mean() * scale / 2
        last.bias[1] -= shift
        last.bias[0] += shift
    return save_checkpoint(path, model, image_size, run=run, dataset="fakes", domain=domain or None)
