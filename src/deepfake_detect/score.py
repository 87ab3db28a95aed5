"""p(fake) of a list of image files under a checkpoint: the one scoring loop of the evaluate-roc-det stage
(``evaluate.py``) and of ``deepfake-detect evaluate`` / ``predict`` (``predict.py``).

A file that does not decode does not stop the others: its score is NaN and its error is returned, so the
caller decides whether that is fatal (the stage) or a listed skip (the CLI). Checkpoints carry the image
size and normalisation, so nothing but the checkpoint is needed. Scores are p(fake) = softmax output 1, averaged
over the views of the checkpoint's test-time augmentation (field ``tta``; checkpoints without it: ``none``)
unless the caller overrides it (``--tta``).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from .data import BadImageError, ManifestDataset, Preprocess
from .engine import check_tta, default_num_workers, predict
from .errors import UserError
from .io import path_text


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


def resolve_tta(ckpt: dict, tta: str = "checkpoint", source: str = "checkpoint") -> str:
    """The TTA mode to score with: ``tta`` (a ``--tta`` value) unless it is ``checkpoint``, then the checkpoint's
    field ``tta`` (``none`` when absent); an unknown mode is a TTAError naming ``--tta`` or ``source``'s field."""
    if tta != "checkpoint":
        return check_tta(tta, "--tta")
    return check_tta(ckpt.get("tta", "none"), f"{source}: checkpoint field 'tta'")


def threshold_source(ckpt: dict) -> str:
    """Where the checkpoint's ``threshold`` comes from, for summaries: the rule training recorded, if any."""
    rule = (ckpt.get("metrics") or {}).get("threshold_rule")
    return f"checkpoint, rule '{rule}' on the validation split" if rule else "checkpoint"


def threshold_metrics(y, p: np.ndarray, ckpt: dict) -> dict:
    """``threshold`` (the checkpoint's), ``acc_at_threshold`` and ``balanced_acc_at_threshold`` (fake: p > it)."""
    from .metrics import threshold_metrics as at

    threshold = float(ckpt["threshold"])
    m = at(y, p, threshold)
    return {"threshold": threshold, "acc_at_threshold": m["acc"], "balanced_acc_at_threshold": m["balanced_acc"]}


def score_paths(model, ckpt: dict, paths: list[str], labels: list[int] | None = None,
                device: torch.device | str = "cpu", batch_size: int = 64, num_workers: int = -1,
                progress: bool = True, desc: str = "score",
                tta: str = "checkpoint", degrade=None) -> tuple[np.ndarray, dict[int, str]]:
    """p(fake) for each image (NaN where it does not decode) and {index: error message} for those. A score
    that is not finite for an image that decodes is a ScoreError naming the checkpoint, never a verdict.

    ``tta``: ``checkpoint`` (its field ``tta``, see ``resolve_tta``) or one of ``engine.TTA_MODES``.
    ``degrade``: applied to each decoded image before the checkpoint's resize (``degrade.Degradation``)."""
    tta = resolve_tta(ckpt, tta)
    device = torch.device(device)
    labels = [0] * len(paths) if labels is None else labels
    rows = [{"path": str(p), "label": int(y)} for p, y in zip(paths, labels)]
    if not rows:
        return np.zeros(0), {}
    ds = _TolerantDataset(rows, Preprocess(ckpt["image_size"], ckpt["mean"], ckpt["std"], degrade))
    workers = min(default_num_workers(num_workers), max(0, (len(rows) - 1) // batch_size))
    loader = _Recorder(DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                                  pin_memory=device.type == "cuda"))
    probs, _, _ = predict(model, loader, device, amp=False, desc=desc, progress=progress, tta=tta)
    p_fake = probs[:, 1].astype(np.float64)
    check_finite(p_fake, model, ckpt, [r["path"] for r in rows], skip=loader.errors)
    p_fake[list(loader.errors)] = np.nan
    return p_fake, loader.errors


def check_finite(p_fake: np.ndarray, model, ckpt: dict, paths, skip=()) -> None:
    """ScoreError naming the checkpoint when a score (but those of the indices in ``skip``: inputs that did not
    decode) is not finite: a verdict from NaN would be "real" for every image (NaN > threshold is false)."""
    broken = [i for i in np.flatnonzero(~np.isfinite(p_fake)) if i not in skip]
    if broken:
        source = getattr(model, "checkpoint_path", None) or f"checkpoint of run '{ckpt.get('run', '')}'"
        raise ScoreError(f"{source}: the model gives no finite p(fake) for {len(broken)} of {len(paths)} image(s) "
                         f"(e.g. {path_text(paths[broken[0]])}): its weights or normalisation overflow; "
                         "retrain it, or check the checkpoint's mean and std")
