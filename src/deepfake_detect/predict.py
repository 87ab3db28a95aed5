"""Scoring arbitrary images with a checkpoint: ``deepfake-detect predict`` (p(fake) for files and folders, as
CSV, optionally with Grad-CAM overlays) and ``deepfake-detect evaluate`` (metrics of a checkpoint on any
labelled folder: cross-dataset evaluation). Both score with the checkpoint's test-time augmentation unless
``tta`` (``--tta``) says otherwise, exactly as the evaluate-roc-det stage does (``score.score_paths``).

Nothing is dropped without a word: files that are not images, images that do not decode and entries that
cannot be read (symlink loops, unreadable folders) are listed as skipped, with the reason.
"""
from __future__ import annotations

import csv
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from tqdm.auto import tqdm

from . import metrics
from .checkpoint import load_model
from .data import DatasetError, Preprocess, is_image_file, list_files, load_rgb
from .engine import resolve_device
from .io import atomic_path, check_writable, write_csv
from .score import resolve_tta, score_paths, threshold_metrics, threshold_source
from .splits import scan_source

FIELDS = ["path", "p_fake", "label"]


# ----------------------------------------------------------------------------- evaluate
def labelled_images(data: str | Path, split: str = "test") -> tuple[list[dict], list[str]]:
    """Rows {path, label} of a folder with real/ and fake/, a course-layout split folder, or a course-layout
    root (then its ``split``); plus every other entry found there, as ``path: reason`` (not an image file,
    symlink loop, permission denied ...)."""
    root = Path(data)
    if not (root / "real").is_dir() and not (root / "fake").is_dir() and (root / split).is_dir():
        root = root / split
    layout, rows, ignored, unreadable = scan_source(root)
    skipped = [f"{f}: not an image file" for f in ignored] + unreadable
    if layout == "course":
        rows = [r for r in rows if r["split"] == split]
    return rows, skipped


def evaluate_folder(model_path: str | Path, data: str | Path, split: str = "test", device: str = "auto",
                    batch_size: int = 64, n_bootstrap: int = 1000, num_workers: int = -1,
                    progress: bool = True, tta: str = "checkpoint") -> dict:
    """Score a checkpoint on a labelled folder: its metrics (``acc``, ``balanced_acc`` at 0.5, and at the
    checkpoint's ``threshold``: ``acc_at_threshold``, ``balanced_acc_at_threshold``), ``threshold_source``,
    the ``tta`` used, ``n_skipped`` and ``skipped`` (every file in the folder not scored, as ``path: reason``).
    ``tta``: ``checkpoint`` (its own) or one of ``engine.TTA_MODES``."""
    dev = resolve_device(device)
    model, ckpt = load_model(model_path, dev)
    tta = resolve_tta(ckpt, tta, str(model_path))
    rows, skipped = labelled_images(data, split)
    y = np.array([r["label"] for r in rows])
    p, errors = score_paths(model, ckpt, [r["path"] for r in rows], list(y), dev, batch_size, num_workers,
                            progress, desc=f"evaluate {Path(model_path).name}", tta=tta)
    skipped += [errors[i] for i in sorted(errors)]
    ok = np.isfinite(p)
    try:
        m = metrics.binary_metrics(y[ok], p[ok], threshold=0.5, n_bootstrap=n_bootstrap)
        m.update(threshold_metrics(y[ok], p[ok], ckpt))
    except ValueError as e:  # e.g. every fake failed to decode: say which files were left out
        raise DatasetError(f"{data}: cannot evaluate ({e})"
                           + (f"; skipped {len(skipped)} file(s): " + "; ".join(skipped[:10]) if skipped else "")
                           + (" ..." if len(skipped) > 10 else "")) from e
    info = {"model": str(model_path), "run": ckpt.get("run", ""), "trained_on": ckpt.get("dataset", ""),
            "data": str(data), "image_size": ckpt["image_size"], "tta": tta,
            "threshold_source": threshold_source(ckpt), "n_skipped": len(skipped)}
    return {**info, **m, "skipped": skipped}


# ----------------------------------------------------------------------------- predict
def expand_paths(paths: list[str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files as given and every file under the given folders (sorted), in order; plus the entries under
    those folders that are not readable files, with the reason (``data.list_files``)."""
    files, problems = [], []
    for p in map(Path, paths):
        if p.is_dir():
            found, unreadable = list_files(p)
            files += found
            problems += unreadable
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return files, problems


def _prediction_rows(files: list[Path], unreadable: list[tuple[Path, str]], scores: dict[str, tuple],
                     threshold: float) -> list[dict]:
    """One row per file, in order, then the unreadable entries; ``scores``: {path: (p_fake, error or None)}."""
    rows = []
    for f in files:
        if str(f) not in scores:
            rows.append({"path": str(f), "p_fake": "", "label": "skipped: not an image file"})
            continue
        pf, err = scores[str(f)]
        if err:
            rows.append({"path": str(f), "p_fake": "", "label": "skipped: " + err.removeprefix(f"{f}: ")})
        else:
            rows.append({"path": str(f), "p_fake": f"{pf:.6f}", "label": "fake" if pf > threshold else "real"})
    return rows + [{"path": str(f), "p_fake": "", "label": f"skipped: {why}"} for f, why in unreadable]


def _write_predictions(rows: list[dict], out: str | Path | None, threshold: float, how: str = "") -> None:
    """The skipped files and a one-line summary on stderr (``how``: where the threshold came from, the TTA);
    the rows as CSV to ``out`` (or stdout)."""
    skipped = [r for r in rows if r["label"].startswith("skipped")]
    if skipped:
        print(f"skipped {len(skipped)} file(s):\n" + "\n".join(f"  {r['path']}: {r['label'][9:]}" for r in skipped),
              file=sys.stderr)
    if out is None:
        w = csv.DictWriter(sys.stdout, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    else:
        write_csv(out, rows, FIELDS)
    n_fake = sum(r["label"] == "fake" for r in rows)
    print(f"scored {len(rows) - len(skipped)} image(s): {n_fake} fake, {len(rows) - len(skipped) - n_fake} real "
          f"(threshold {threshold:g}{how}), {len(skipped)} skipped" + (f" -> {out}" if out else ""), file=sys.stderr)


def predict_files(model_path: str | Path, paths: list[str], out: str | Path | None = None,
                  cam_dir: str | Path | None = None, device: str = "auto", batch_size: int = 64,
                  num_workers: int = -1, progress: bool = True, tta: str = "checkpoint") -> list[dict]:
    """Rows {path, p_fake, label} for every file: label fake when p_fake > the checkpoint's threshold, or
    ``skipped: <reason>`` (with empty p_fake) for non-image files, images that do not decode and entries
    that cannot be read (symlink loops, unreadable folders), which come last. Written as CSV to ``out``
    (default: stdout); with ``cam_dir``, a Grad-CAM overlay of every scored image there. ``tta``: ``checkpoint``
    (its own test-time augmentation) or one of ``engine.TTA_MODES``."""
    if out is not None:
        check_writable(out)  # before the scoring, not after it
    dev = resolve_device(device)
    model, ckpt = load_model(model_path, dev)
    tta = resolve_tta(ckpt, tta, str(model_path))
    files, unreadable = expand_paths(paths)
    images = [f for f in files if is_image_file(f)]
    p, errors = score_paths(model, ckpt, [str(f) for f in images], None, dev, batch_size, num_workers, progress,
                            desc=f"predict {Path(model_path).name}", tta=tta)
    threshold = float(ckpt["threshold"])
    rows = _prediction_rows(files, unreadable, {str(f): (p[i], errors.get(i)) for i, f in enumerate(images)},
                            threshold)
    _write_predictions(rows, out, threshold, f" from the {threshold_source(ckpt)}; tta {tta}")
    if cam_dir is not None:
        ok = [r["path"] for r in rows if not r["label"].startswith("skipped")]
        write_cam_overlays(model, ckpt, ok, cam_dir)
    return rows


def write_cam_overlays(model: nn.Module, ckpt: dict, paths: Sequence[str | os.PathLike], out_dir: str | Path,
                       batch_size: int = 16, progress: bool = True) -> list[Path]:
    """One Grad-CAM overlay PNG (fake class, ``explain.gradcam``) per input image, at the image's own size.

    ``out_dir/<stem>_cam.png``; stems that repeat get ``_<index>`` to stay distinct.
    Returns the written paths, in input order.
    """
    from pytorch_grad_cam.utils.image import show_cam_on_image

    from .explain import gradcam  # lazy: only --cam needs Grad-CAM

    prep = Preprocess(ckpt["image_size"], ckpt["mean"], ckpt["std"])
    out_dir = Path(out_dir)
    stems = [Path(p).stem for p in paths]
    names = [f"{s}_{i}_cam.png" if stems.count(s) > 1 else f"{s}_cam.png" for i, s in enumerate(stems)]
    written = []
    for i in tqdm(range(0, len(paths), batch_size), desc="grad-cam", leave=False, disable=not progress):
        originals = [load_rgb(p) for p in paths[i:i + batch_size]]
        x = prep.normalise(torch.stack([prep.to_uint8(im) for im in originals]))
        for im, cam, name in zip(originals, gradcam(model, x), names[i:i + batch_size]):
            cam = np.asarray(Image.fromarray(cam).resize(im.size, Image.BILINEAR))
            overlay = show_cam_on_image(np.asarray(im, np.float32) / 255.0, np.clip(cam, 0, 1), use_rgb=True)
            with atomic_path(out_dir / name) as tmp:
                Image.fromarray(overlay).save(tmp, format="PNG")
            written.append(out_dir / name)
    return written
