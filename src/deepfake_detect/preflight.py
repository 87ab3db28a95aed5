"""What the evaluate-roc-det stage checks before it scores anything, and the rule for panels too small to score.

``check_evaluation_inputs`` runs at the start of the stage: the run's checkpoint, the manifest of the dataset it
was trained on, and every ``evaluate-roc-det.cross_generator`` folder (a folder, readable, real/ and fake/ with an
image each). Each problem is one line naming the params key and file, and the fix, before minutes of scoring.

``too_few`` is the rule for a set too small for a meaningful AUC (fewer than ``MIN_PER_CLASS`` of either class):
its entry is ``too_few_entry`` (``auc`` null, the reason, the counts), never an AUC of 0.0 [0.0, 0.0]. For
``robustness_max_images`` the choice is to refuse (``check_panel_size``): a subsample of fewer than
``2 * MIN_PER_CLASS`` images is a params error naming the key (0, every test image, stays allowed).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .checkpoint import run_checkpoint
from .config import RUNS, ParamsError, TrainConfig, source_of
from .data import DatasetError, is_image_file

KEY = "evaluate-roc-det"
MIN_PER_CLASS = 10  # fewer real or fake images than this: no AUC is reported
CLASSES = ("real", "fake")


def too_few(y, minimum: int = MIN_PER_CLASS) -> str | None:
    """None when labels ``y`` (0 real, 1 fake) hold at least ``minimum`` of each class; else the reason, e.g.
    ``"too few: 2 real / 1 fake (need ≥ 10 of each for a meaningful AUC)"``."""
    y = np.asarray(y).astype(int).ravel()
    n_real, n_fake = int((y == 0).sum()), int((y == 1).sum())
    if n_real >= minimum and n_fake >= minimum:
        return None
    return f"too few: {n_real} real / {n_fake} fake (need ≥ {minimum} of each for a meaningful AUC)"


def too_few_entry(y, minimum: int = MIN_PER_CLASS) -> dict | None:
    """The JSON entry of a set too small to score (where an AUC entry would go), or None when it is not:
    ``{"auc": None, "auc_ci_low": None, "auc_ci_high": None, "too_few": reason, "n_real": .., "n_fake": ..}``."""
    reason = too_few(y, minimum)
    if reason is None:
        return None
    y = np.asarray(y).astype(int).ravel()
    return {"auc": None, "auc_ci_low": None, "auc_ci_high": None, "too_few": reason,
            "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum())}


def check_panel_size(params: dict) -> None:
    """``evaluate-roc-det.robustness_max_images``: 0 (every test image) or at least 2 x ``MIN_PER_CLASS``, so that
    the stratified subsample can hold ``MIN_PER_CLASS`` of each class; else a ParamsError naming the key."""
    n = params[KEY]["robustness_max_images"]
    if params[KEY]["robustness"] and 0 < n < 2 * MIN_PER_CLASS:
        raise ParamsError(f"{source_of(params)}: '{KEY}.robustness_max_images' is {n}: too few for a meaningful "
                          f"AUC (need ≥ {MIN_PER_CLASS} real and {MIN_PER_CLASS} fake); set it to 0 (every test "
                          f"image) or ≥ {2 * MIN_PER_CLASS}")


def _has_image(folder: Path) -> bool:
    return any(is_image_file(p) and p.is_file() for p in folder.rglob("*"))


def _check_cross_generator(params: dict, folder: str) -> None:
    where, root = f"{source_of(params)}: '{KEY}.cross_generator' names {folder!r}", Path(folder)
    if not root.exists():
        raise DatasetError(f"{where}, which does not exist (put the set there, or remove it from the list)")
    if not root.is_dir():
        raise DatasetError(f"{where}, which is not a folder (a folder with real/ and fake/; or remove it from "
                           "the list)")
    try:
        for cls in CLASSES:
            sub = root / cls
            if not sub.is_dir():
                raise DatasetError(f"{where}, which has no {cls}/ folder (an evaluation set holds real/ and fake/ "
                                   "images: add them, or remove it from the list)")
            if not _has_image(sub):
                raise DatasetError(f"{where}, whose {cls}/ holds no image (an evaluation set needs images of both "
                                   "classes: add them, or remove it from the list)")
    except PermissionError as e:
        raise DatasetError(f"{where}, which cannot be read ({e.filename}: permission denied); fix its "
                           "permissions, or remove it from the list") from None


def check_evaluation_inputs(params: dict, data_dir: str | Path, run: str, models_dir: str | Path) -> None:
    """Everything the evaluate-roc-det stage of ``run`` reads, checked before it scores: the checkpoint, the
    manifest of the dataset the run trains on, each cross_generator folder, and the panel's size. A problem is
    one line (a UserError) naming the key or file and the fix."""
    run_checkpoint(params, run, models_dir)  # models/<run>.pt: names the stage that makes it
    dataset = TrainConfig.from_params(params, run).dataset if run in params[RUNS] else None  # else: the checkpoint says
    manifest = Path(data_dir) / str(dataset) / "manifest.csv"
    if dataset is not None and not manifest.is_file():
        raise DatasetError(f"{manifest}: not found; run '{run}' is scored on the test split of '{dataset}', "
                           "listed by prepare-splits (dvc repro prepare-splits)")
    for folder in params[KEY]["cross_generator"]:
        _check_cross_generator(params, folder)
    check_panel_size(params)
