"""The one scoring loop under every non-training path (``detector.Detector``): p(fake) of image files, or of
model-size uint8 views already decoded (face crops, frames, in-memory pictures), by one ``engine.predict`` call
under the detector's precision (``Detector.autocast``) and test-time augmentation.

A file that does not decode does not stop the others: its score is NaN and its error is returned, so the
caller decides whether that is fatal (the stage) or a listed skip (the CLI). A score that is not finite for an
input that decoded is a ScoreError naming the checkpoint, never a verdict. The scores returned here are the
model's own (softmax output 1, averaged over the TTA views); ``Detector`` applies a model card's calibration.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader

from .data import BadImageError, ManifestDataset, Preprocess
from .engine import check_tta, default_num_workers
from .errors import UserError
from .io import path_text

if TYPE_CHECKING:
    from .checkpoint import Checkpoint


class ScoreError(UserError, ValueError):
    """A model that gives no finite score; the message names its checkpoint and an image."""


class _TolerantDataset(ManifestDataset):
    """ManifestDataset that returns (x, y, index, error) instead of raising on an undecodable file."""

    def __getitem__(self, i: int):
        try:
            x, y = super().__getitem__(i)
            return x, y, i, ""
        except BadImageError as e:
            size = self.transform.image_size
            return torch.zeros(3, size, size), int(self.rows[i]["label"]), i, str(e)


class _Recorder:
    """Wraps a loader of _TolerantDataset for engine.predict: passes (x, y) on, keeps the decode errors."""

    def __init__(self, loader: DataLoader):
        self.loader, self.errors = loader, {}

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y, idx, err in self.loader:
            self.errors.update({int(i): e for i, e in zip(idx, err) if e})
            yield x, y


def resolve_tta(ckpt: Checkpoint, tta: str = "checkpoint", source: str = "checkpoint") -> str:
    """The TTA mode to score with: ``tta`` (a ``--tta`` value) unless it is ``checkpoint``, then the checkpoint's
    field ``tta`` (``none`` when absent); an unknown mode is a TTAError naming ``--tta`` or ``source``'s field."""
    if tta != "checkpoint":
        return check_tta(tta, "--tta")
    return check_tta(ckpt.tta, f"{source}: checkpoint field 'tta'")


def threshold_metrics(y, p: np.ndarray, threshold: float) -> dict:
    """``threshold``, ``acc_at_threshold`` and ``balanced_acc_at_threshold`` (fake: p > it)."""
    from .metrics import threshold_metrics as at

    m = at(y, p, float(threshold))
    return {"threshold": float(threshold), "acc_at_threshold": m["acc"], "balanced_acc_at_threshold": m["balanced_acc"]}


def _run(det, loader, desc: str, progress: bool, normalise=None) -> np.ndarray:
    """p(fake) of every batch of ``loader`` under ``det``'s model, device, precision and TTA (float64)."""
    probs, _, _ = det.score_batches(loader, desc, progress, normalise)
    return probs[:, 1].astype(np.float64)


def score_paths(det, paths: list[str], labels: list[int] | None = None, batch_size: int = 64,
                num_workers: int = -1, progress: bool = True, desc: str = "score",
                degrade=None) -> tuple[np.ndarray, dict[int, str]]:
    """The model's p(fake) for each image file (NaN where it does not decode) and {index: error message} for
    those, exactly as ``data.Preprocess`` prepares files for training. ``degrade``: applied to each decoded
    image before the checkpoint's resize (``robustness.Degradation``)."""
    labels = [0] * len(paths) if labels is None else labels
    rows = [{"path": str(p), "label": int(y)} for p, y in zip(paths, labels)]
    if not rows:
        return np.zeros(0), {}
    ds = _TolerantDataset(rows, Preprocess(det.image_size, det.mean, det.std, degrade))
    workers = min(default_num_workers(num_workers), max(0, (len(rows) - 1) // batch_size))
    loader = _Recorder(DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                                  pin_memory=det.device.type == "cuda"))
    p_fake = _run(det, loader, desc, progress)
    check_finite(p_fake, det, [r["path"] for r in rows], skip=loader.errors)
    p_fake[list(loader.errors)] = np.nan
    return p_fake, loader.errors


def score_views(det, views: np.ndarray, names, batch_size: int = 64) -> np.ndarray:
    """The model's p(fake) of model-size uint8 views (N, S, S, 3) (``Preprocess.to_hwc`` of each picture or
    crop), normalised batch by batch on the device; ``names``: what each view is, for a ScoreError."""
    if len(views) == 0:
        return np.zeros(0)
    prep = Preprocess(det.image_size, det.mean, det.std)
    x = torch.from_numpy(np.ascontiguousarray(views)).permute(0, 3, 1, 2)  # (B, S, S, 3) uint8 -> (B, 3, S, S)
    batches = [(x[i:i + batch_size], torch.zeros(len(x[i:i + batch_size]), dtype=torch.long))
               for i in range(0, len(x), batch_size)]
    p_fake = _run(det, batches, "score", False, normalise=prep.normalise)
    check_finite(p_fake, det, list(names))
    return p_fake


def check_finite(p_fake: np.ndarray, det, paths, skip=()) -> None:
    """ScoreError naming the checkpoint when a score (but those of the indices in ``skip``: inputs that did not
    decode) is not finite: a verdict from NaN would be "real" for every image (NaN > threshold is false)."""
    broken = [i for i in np.flatnonzero(~np.isfinite(p_fake)) if i not in skip]
    if broken:
        source = (getattr(det.model, "checkpoint_path", None) or (str(det.path) if det.path else None)
                  or f"checkpoint of run '{det.run}'")
        raise ScoreError(f"{source}: the model gives no finite p(fake) for {len(broken)} of {len(paths)} image(s) "
                         f"(e.g. {path_text(paths[broken[0]])}): its weights or normalisation overflow; "
                         "retrain it, or check the checkpoint's mean and std")
