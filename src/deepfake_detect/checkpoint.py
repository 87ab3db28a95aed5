"""Self-describing checkpoints.

A checkpoint is a plain dict of tensors and primitives (loads with
``torch.load(..., weights_only=True)``) that carries everything needed to rebuild
and use the model: architecture and its params, image size, normalisation, class
order, decision threshold, Grad-CAM layer, and the run's metrics.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .config import RUNS, source_of
from .data import CLASSES
from .errors import UserError, one_line
from .io import save_torch
from .models import get_model, model_kwargs

FORMAT = "deepfake-detect/checkpoint-v1"


class CheckpointError(UserError, ValueError):
    """A file that is not a usable checkpoint of ours; the message names the file."""


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    model = getattr(model, "module", model)  # DistributedDataParallel wrapper
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def make_checkpoint(model: nn.Module, image_size: int, run: str = "", metrics: dict | None = None,
                    threshold: float = 0.5, extra: dict | None = None) -> dict[str, Any]:
    base = getattr(model, "_orig_mod", model)
    base = getattr(base, "module", base)
    arch_params = dict(getattr(base, "arch_params", {}))
    arch_params.pop("weights", None)  # the state dict holds the weights
    return {
        "format": FORMAT,
        "arch": base.arch,
        "arch_params": arch_params,
        "image_size": int(image_size),
        "mean": list(base.mean),
        "std": list(base.std),
        "classes": list(CLASSES),
        "threshold": float(threshold),
        "cam_layer": base.cam_layer,
        "run": run,
        "metrics": dict(metrics or {}),
        "state_dict": model_state(model),
        **(extra or {}),
    }


def save_checkpoint(path: str | Path, model: nn.Module, image_size: int, **kwargs) -> Path:
    return save_torch(path, make_checkpoint(model, image_size, **kwargs))


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _numbers(n: int, positive: bool = False):
    return lambda v: (isinstance(v, (list, tuple)) and len(v) == n
                      and all(_number(x) and (x > 0 or not positive) for x in v))


# every field a checkpoint of ours has and what is read from it: (what it must be, the test)
_FIELDS = {
    "arch": ("a model name", lambda v: isinstance(v, str) and bool(v)),
    "arch_params": ("a dict of model parameters", lambda v: isinstance(v, dict)),
    "image_size": ("an integer >= 1", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
    "mean": ("3 numbers", _numbers(3)),
    "std": ("3 positive numbers", _numbers(3, positive=True)),
    "classes": (f"{list(CLASSES)} (the class order scores assume)", lambda v: v == list(CLASSES)),
    "threshold": ("a number in [0, 1]", lambda v: _number(v) and 0 <= v <= 1),
    "cam_layer": ("a layer name", lambda v: isinstance(v, str)),
    "state_dict": ("a dict of tensors", lambda v: isinstance(v, dict)
                   and all(isinstance(t, torch.Tensor) for t in v.values())),
}
_OPTIONAL = {"run": ("a run name", str), "dataset": ("a dataset name", str), "metrics": ("a dict", dict)}


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, every field checked; else CheckpointError naming the file and the field."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, pickle with code, not a torch file at all
        raise CheckpointError(f"{path}: not a readable deepfake-detect checkpoint ({one_line(e)})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a deepfake-detect checkpoint (expected format '{FORMAT}')")
    for key, (what, ok) in _FIELDS.items():
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint field '{key}' is missing (expected {what})")
        if not ok(ckpt[key]):
            raise CheckpointError(f"{path}: checkpoint field '{key}' must be {what}, got {repr(ckpt[key])[:80]}")
    for key, (what, kind) in _OPTIONAL.items():
        if key in ckpt and not isinstance(ckpt[key], kind):
            raise CheckpointError(f"{path}: checkpoint field '{key}' must be {what}, got {repr(ckpt[key])[:80]}")
    return ckpt


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from a checkpoint; returns (model in eval mode, checkpoint dict)."""
    ckpt = read_checkpoint(path)
    params = dict(ckpt["arch_params"])
    if "weights" in (model_kwargs(ckpt["arch"]) or {"weights"}):  # the trained weights replace any pretrained ones
        params["weights"] = "none"
    try:
        model = get_model(ckpt["arch"], image_size=ckpt["image_size"], **params)
    except (ValueError, TypeError) as e:  # an architecture this version does not know, parameters it does not take
        raise CheckpointError(f"{path}: checkpoint fields 'arch' ({ckpt['arch']!r}), 'arch_params' "
                              f"({ckpt['arch_params']}) and 'image_size' ({ckpt['image_size']}) do not make a model: "
                              f"{one_line(e)}") from e
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit architecture '{ckpt['arch']}': {one_line(e)}") from e
    model.mean, model.std = tuple(ckpt["mean"]), tuple(ckpt["std"])
    return model.to(device).eval(), ckpt



def run_checkpoint(params: dict, run: str, models_dir: str | Path = "models") -> Path:
    """models/<run>.pt, or FileNotFoundError naming it and the stage that makes it (``runs`` of the params)."""
    path = Path(models_dir) / f"{run}.pt"
    if not path.exists():
        stage = params[RUNS].get(run)
        how = (f"it is made by stage '{stage}' (dvc repro {stage})" if stage else
               f"'{RUNS}' in {source_of(params)} has no run '{run}'")
        raise FileNotFoundError(f"{path}: checkpoint not found; {how}")
    return path


def trained_on(ckpt: dict, path: str | Path) -> str:
    """The dataset the checkpoint's run was trained on (training records it)."""
    if not ckpt.get("dataset"):
        raise CheckpointError(f"{path}: checkpoint does not say which dataset it was trained on ('dataset')")
    return ckpt["dataset"]
