"""Images in, tensors out: one loader for every image the project reads, one Dataset
for every manifest.

Label 0 = real, 1 = fake. Grayscale, RGBA, palette and 16-bit images are converted to
RGB; a file that does not decode raises ``BadImageError`` naming the file.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageFile
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
LABELS = {"real": 0, "fake": 1}
SPLITS = ("train", "val", "test")
MANIFEST_FIELDS = ("path", "label", "split", "sha1", "group", "mask", "width", "height")

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey patch


class BadImageError(ValueError):
    """An image file that cannot be decoded; the message names the file."""


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode any supported image to 8-bit RGB (converting grey, alpha, palette, 16-bit)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                hi = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
                im = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (0, 0, 0, 255))
                im = Image.alpha_composite(bg, im)
            return im.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadImageError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e


def read_manifest(path: str | os.PathLike, split: str | None = None) -> list[dict]:
    """Rows of a split manifest written by prepare-splits (label as int)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: manifest not found (run `dvc repro prepare-splits`)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["label"] = int(r["label"])
    if split is not None:
        rows = [r for r in rows if r["split"] == split]
    return rows


class Preprocess:
    """PIL image -> normalised float tensor (C,H,W) at ``image_size`` (optional random flip)."""

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], hflip: bool = False):
        self.image_size = int(image_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.hflip = hflip

    def to_uint8(self, im: Image.Image) -> torch.Tensor:
        if im.size != (self.image_size, self.image_size):
            im = im.resize((self.image_size, self.image_size), Image.BILINEAR, reducing_gap=None)
        return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, H, W) -> normalised float32."""
        return (x.float() / 255.0 - self.mean) / self.std

    def __call__(self, im: Image.Image) -> torch.Tensor:
        x = self.normalise(self.to_uint8(im))
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x


class ManifestDataset(Dataset):
    """Images listed in a manifest (or any list of {path, label} rows)."""

    def __init__(self, rows: list[dict], transform: Preprocess):
        self.rows = rows
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        row = self.rows[i]
        return self.transform(load_rgb(row["path"])), int(row["label"])

    @property
    def labels(self) -> list[int]:
        return [int(r["label"]) for r in self.rows]
