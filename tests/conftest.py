"""Shared fixtures: tiny image folders and paths to the optional real data."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


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
