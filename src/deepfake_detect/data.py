"""Images in, tensors out: one loader for every image the project reads, one Dataset
for every manifest.

A dataset folder is found by ``scan_source``: the course layout (train/ val/ test/, each real/ and fake/) or a
flat real/ + fake/ folder (prepare-splits and ``deepfake-detect evaluate`` read both the same way).

Label 0 = real, 1 = fake. Pixels are read upright: a photo's EXIF orientation (phones store
pictures sideways and say so in a tag) is applied wherever an image is decoded (``upright``).
Grayscale, RGBA, palette and 16-bit images are converted to RGB; a file that does not decode
raises ``BadImageError`` naming the file.

Training decodes every image once: ``build_decoded_cache`` writes the split's images,
resized to the training resolution, as one raw uint8 file on disk (keyed by the pixel
hashes in the manifest and the size), and ``ManifestDataset(..., cache=...)`` reads single
records from it with ``os.pread`` -- no JPEG decode or resize per epoch, and no memory that
grows with the dataset (the OS page cache holds what fits). Records are stored pixel-major
(H x W x 3, as decoders give them), so a stacked batch *is* a channels_last (B, 3, H, W)
tensor: no transposing copy on the way to the model.
"""
from __future__ import annotations

import csv
import errno
import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
CLASSES = ("real", "fake")  # the one class order: label = index, scores are p(fake) = softmax[:, FAKE]
LABELS = {name: i for i, name in enumerate(CLASSES)}
FAKE = LABELS["fake"]
SPLITS = ("train", "val", "test")
MANIFEST_FIELDS = ("path", "label", "split", "sha1", "group", "mask", "width", "height")

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey patch


class DatasetError(UserError, ValueError):
    """A dataset that cannot be used as it is; the message names the folder or files."""


class BadImageError(UserError, ValueError):
    """An image file that cannot be decoded; the message names the file."""


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def list_files(root: str | os.PathLike) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every file under the folder ``root`` (recursively, in sorted path order), and every other entry with
    the reason it is not one: a symlink loop, a broken symlink, a folder that cannot be read, a symlink to a
    folder (not followed: links can make cycles), a device or pipe. Nothing is left out without a word."""
    files: list[Path] = []
    problems: list[tuple[Path, str]] = []

    def visit(folder: Path) -> None:
        try:
            names = sorted(os.listdir(folder))
        except OSError as e:
            problems.append((folder, f"folder cannot be read ({_os_reason(e)})"))
            return
        for name in names:
            p = folder / name
            try:
                if stat.S_ISDIR(p.lstat().st_mode):
                    visit(p)
                    continue
                mode = p.stat().st_mode  # through a symlink
            except OSError as e:
                problems.append((p, _os_reason(e)))
                continue
            if stat.S_ISREG(mode):
                files.append(p)
            elif stat.S_ISDIR(mode):
                problems.append((p, "symlink to a folder, not followed"))
            else:
                problems.append((p, "not a regular file"))

    visit(Path(root))
    return files, problems


def scan_source(root: str | Path) -> tuple[str, list[dict], list[str], list[str]]:
    """Find the images of a dataset folder.

    Returns (layout, rows with path/label/split (None for flat), non-image files, and the entries that cannot
    be read as ``path: reason`` -- symlink loops, unreadable folders ... (``data.list_files``)).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder does not exist")
    present = [s for s in SPLITS if (root / s).is_dir()]
    if present:
        missing = [s for s in SPLITS if s not in present]
        if missing:
            raise DatasetError(f"{root}: course layout needs train/, val/ and test/; missing: "
                               + ", ".join(f"{root / s}/" for s in missing))
        layout, folders = "course", [(s, root / s) for s in SPLITS]
    elif (root / "real").is_dir() or (root / "fake").is_dir():
        layout, folders = "flat", [(None, root)]
    else:
        raise DatasetError(f"{root}: expected train/ val/ test/ (course layout) or real/ and fake/ folders")
    rows, ignored, unreadable = [], [], []
    for split, base in folders:
        for cls, label in LABELS.items():
            d = base / cls
            if not d.is_dir():
                raise DatasetError(f"{d}/: missing class folder")
            files, problems = list_files(d)
            problems = [f"{p}: {why}" for p, why in problems]
            images = [p for p in files if is_image_file(p)]
            if not images:
                raise DatasetError(f"{d}/: no images (expected .jpg/.png files)"
                                   + "".join(f"; {p}" for p in problems[:5]))
            ignored += [str(p) for p in files if not is_image_file(p)]
            unreadable += problems
            rows += [{"path": str(p), "label": label, "split": split} for p in images]
    return layout, rows, ignored, unreadable


def _os_reason(e: OSError) -> str:
    reasons = {errno.ELOOP: "symlink loop", errno.ENOENT: "broken symlink", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied"}
    return reasons.get(e.errno) or e.strerror or type(e).__name__


def upright(im: Image.Image) -> Image.Image:
    """The image as a viewer shows it: turned and mirrored as its EXIF orientation tag says (a copy)."""
    return ImageOps.exif_transpose(im)


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode any supported image, upright (``upright``), to 8-bit RGB (converting grey, alpha, palette, 16-bit)."""
    try:
        with Image.open(path) as im:
            im.load()
            im = upright(im)
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


def sample_rows(rows: list[dict], n: int, rng: np.random.Generator) -> list[dict]:
    """Up to ``n`` of ``rows``, drawn without replacement by ``rng``."""
    return [rows[i] for i in rng.permutation(len(rows))[:n]]


def load_masks(paths: Sequence[str], size: int) -> np.ndarray:
    """Ground-truth masks resized to the model input, float32 (N, S, S) in [0, 1]."""
    out = []
    for p in paths:
        with Image.open(p) as im:
            m = upright(im).convert("L")  # turned like its image
            if m.size != (size, size):
                m = m.resize((size, size), Image.BILINEAR)
            out.append(np.asarray(m, dtype=np.float32) / 255.0)
    return np.stack(out) if out else np.zeros((0, size, size), np.float32)


class Preprocess:
    """PIL image -> normalised float tensor (C,H,W) at ``image_size`` (training flips come from ``EpochSampler``).

    ``degrade``: a callable PIL image -> PIL image (``robustness.Degradation``) applied to the decoded image at its
    own size, before the resize (the robustness panel)."""

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], degrade=None):
        self.image_size = int(image_size)
        self.degrade = degrade
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * self.std), -self.mean / self.std  # one fused multiply-add
        same = bool((self.scale == self.scale[0]).all() and (self.shift == self.shift[0]).all())
        self._uniform = (float(self.scale[0]), float(self.shift[0])) if same else None

    def to_hwc(self, im: Image.Image) -> np.ndarray:
        """The image at ``image_size`` as uint8 (S, S, 3)."""
        if self.degrade is not None:
            im = self.degrade(im)
        if im.size != (self.image_size, self.image_size):
            im = im.resize((self.image_size, self.image_size), Image.BILINEAR, reducing_gap=None)
        return np.asarray(im, dtype=np.uint8)

    def to_uint8(self, im: Image.Image) -> torch.Tensor:
        """The image at ``image_size`` as uint8 (3, S, S)."""
        return torch.from_numpy(self.to_hwc(im).copy()).permute(2, 0, 1)

    def normalise(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 (..., 3, H, W), on any device, any memory format (kept) -> float32, (x / 255 - mean) / std.

        When every channel has the same mean and std (SimpleNet, Xception: 0.5) the two
        operations take scalars, which is 5-10x faster on a channels_last batch than a
        per-channel broadcast. ``out``: a float32 tensor of x's shape to write into (and return)."""
        if self.scale.device != x.device:
            self.scale, self.shift = self.scale.to(x.device), self.shift.to(x.device)
        y = x.float() if out is None else out.copy_(x)
        if self._uniform:
            return y.mul_(self._uniform[0]).add_(self._uniform[1])
        return y.mul_(self.scale).add_(self.shift)

    def __call__(self, im: Image.Image) -> torch.Tensor:
        return self.normalise(self.to_uint8(im))


class ManifestDataset(Dataset):
    """Images listed in a manifest (or any list of {path, label} rows).

    With ``cache`` (a path from ``build_decoded_cache`` for the same rows and
    ``transform.image_size``) the pixels come from the decoded cache instead of the image
    files; the tensors are identical. An index may be ``(i, flip)`` (see ``EpochSampler``,
    which decides every training flip, and with ``augment`` yields ``(i, flip, epoch)``).

    ``augment``: a ``degrade.RandomDegrade``, applied to the uint8 image (after the cache, before a flip and
    the normalisation) as a function of (its seed, epoch, i); it needs the ``(i, flip, epoch)`` indices.

    With ``raw=True`` an item is the resized uint8 image (numpy, S x S x 3): batch it with
    ``collate_uint8`` (a channels_last (B, 3, S, S) uint8 tensor) and normalise the whole batch
    where it is used (``transform.normalise``, on the GPU when there is one) -- 4x less to copy
    and no per-image tensor ops.
    """

    def __init__(self, rows: list[dict], transform: Preprocess, cache: str | os.PathLike | None = None,
                 raw: bool = False, augment=None):
        self.rows = rows
        self.augment = augment
        self.transform = transform
        self.raw = raw
        self.cache = None if cache is None else str(cache)
        self._record = 3 * transform.image_size ** 2
        self._fd: int | None = None
        self._pid: int | None = None
        if self.cache is not None and os.path.getsize(self.cache) != len(rows) * self._record:
            raise ValueError(f"{self.cache}: decoded cache does not match {len(rows)} images at "
                             f"{transform.image_size} px (delete it to rebuild)")

    def __len__(self) -> int:
        return len(self.rows)

    def _hwc(self, i: int) -> np.ndarray:
        if self.cache is None:
            return self.transform.to_hwc(load_rgb(self.rows[i]["path"]))
        if self._pid != os.getpid():  # one descriptor per (worker) process
            self._fd, self._pid = os.open(self.cache, os.O_RDONLY), os.getpid()
        s = self.transform.image_size
        return np.frombuffer(os.pread(self._fd, self._record, i * self._record), np.uint8).reshape(s, s, 3)

    def __getitem__(self, index) -> tuple[torch.Tensor | np.ndarray, int]:
        i, flip, *epoch = index if isinstance(index, tuple) else (index, None)
        label = int(self.rows[i]["label"])
        if self.cache is None and flip is None and not self.raw and self.augment is None:
            return self.transform(load_rgb(self.rows[i]["path"])), label
        hwc = self._hwc(i)
        if self.augment is not None:
            if not epoch:
                raise ValueError("an augmented dataset needs (index, flip, epoch) indices "
                                 "(EpochSampler(..., tag_epoch=True))")
            hwc = self.augment(hwc, epoch[0], i)
        if flip:
            hwc = hwc[:, ::-1]
        if self.raw:
            return np.ascontiguousarray(hwc), label
        return self.transform.normalise(torch.from_numpy(np.array(hwc)).permute(2, 0, 1).contiguous()), label

    def __getstate__(self) -> dict:  # descriptors do not cross process boundaries
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)


def collate_uint8(batch: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack raw items (``ManifestDataset(raw=True)``, S x S x 3) into a uint8 batch (B, 3, S, S) in
    channels_last memory format (a view of the stacked pixels, no copy) and labels."""
    return torch.from_numpy(np.stack([b[0] for b in batch])).permute(0, 3, 1, 2), torch.tensor([b[1] for b in batch])


class EpochSampler(torch.utils.data.Sampler):
    """Shuffled (or ordered) indices, optionally one shard of ``num_replicas``, as a pure
    function of ``(seed, epoch)``: a resumed run, any number of loader workers and any
    number of DDP processes see the same images in the same global order, with the same
    random flips.

    Shuffled: ``DistributedSampler`` semantics (padding to a multiple of ``num_replicas``;
    rank r takes every r-th index, so with per-rank batch ``b`` the union of the ranks'
    k-th batches is the single-process k-th batch of size ``b * num_replicas``).
    Not shuffled: rank r takes ``range(r, n, num_replicas)`` -- every index exactly once
    overall (evaluation). With ``hflip`` it yields ``(index, flip)`` pairs; with ``tag_epoch``
    ``(index, flip, epoch)`` triples (the epoch seeds ``ManifestDataset``'s per-image augmentation).
    """

    def __init__(self, n: int, shuffle: bool = False, seed: int = 0, hflip: bool = False,
                 num_replicas: int = 1, rank: int = 0, tag_epoch: bool = False):
        self.n, self.shuffle, self.seed, self.hflip, self.tag_epoch = n, shuffle, seed, hflip, tag_epoch
        self.num_replicas, self.rank, self.epoch = num_replicas, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.rank, self.n, self.num_replicas))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        idx = torch.randperm(self.n, generator=g).tolist()
        idx += idx[: (-len(idx)) % self.num_replicas]  # pad as DistributedSampler does
        return idx[self.rank::self.num_replicas]

    def __iter__(self):
        idx = self._indices()
        if not (self.hflip or self.tag_epoch):
            return iter(idx)
        flips = [False] * self.n
        if self.hflip:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch + 7_919)
            flips = (torch.rand(self.n, generator=g) < 0.5).tolist()
        if self.tag_epoch:
            return iter([(i, flips[i], self.epoch) for i in idx])
        return iter([(i, flips[i]) for i in idx])

    def __len__(self) -> int:
        if not self.shuffle:
            return len(range(self.rank, self.n, self.num_replicas))
        return -(-self.n // self.num_replicas)


def cache_key(rows: list[dict], image_size: int) -> str:
    """Hash of what the decoded pixels depend on: each image's path and pixel hash, and the size."""
    h = hashlib.sha1(f"decoded-v3-upright-hwc {int(image_size)}\n".encode())
    for r in rows:
        h.update(f"{r['path']}\t{r.get('sha1', '')}\n".encode())
    return h.hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$DFD_CACHE_DIR``, else ``$XDG_CACHE_HOME/deepfake-detect`` (``~/.cache/deepfake-detect``)."""
    if os.environ.get("DFD_CACHE_DIR"):
        return Path(os.environ["DFD_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "deepfake-detect"


def build_decoded_cache(rows: list[dict], image_size: int, cache_dir: str | os.PathLike | None = None,
                        threads: int | None = None, progress: bool = True) -> Path:
    """Decode ``rows`` once at ``image_size`` into ``<cache_dir>/<key>-<size>px.u8`` (N x S x S x 3 uint8).

    Reused when present (the key covers paths, pixel hashes and size); written through a
    temporary file and renamed, streamed in chunks so memory stays flat. Returns the path.
    """
    from .io import atomic_path, write_json

    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_dir / f"{cache_key(rows, image_size)}-{int(image_size)}px.u8"
    record = 3 * int(image_size) ** 2
    if path.exists() and path.stat().st_size == len(rows) * record:
        return path
    prep = Preprocess(image_size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    threads = threads or max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)

    def decode(row: dict) -> bytes:
        return prep.to_hwc(load_rgb(row["path"])).tobytes()

    with atomic_path(path) as tmp, open(tmp, "wb") as f, ThreadPoolExecutor(threads) as pool:
        chunk = 256
        for start in tqdm(range(0, len(rows), chunk), desc=f"decode {len(rows)} images at {image_size} px",
                          leave=False, disable=not progress):
            for buf in pool.map(decode, rows[start:start + chunk]):
                f.write(buf)
        f.flush()
    write_json(path.with_suffix(".json"), {"n": len(rows), "image_size": int(image_size),
                                           "paths": [r["path"] for r in rows]})
    return path
