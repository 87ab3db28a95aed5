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

from .config import RUNS, TRAIN_SCHEMA, Num, ParamsError, check_value, source_of
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


def _numbers(n: int):
    return lambda v: isinstance(v, (list, tuple)) and len(v) == n and all(_number(x) for x in v)


# every field a checkpoint of ours has and what is read from it: (what it must be, the test)
_FIELDS = {
    "arch": ("a model name", lambda v: isinstance(v, str) and bool(v)),
    "arch_params": ("a dict of model parameters", lambda v: isinstance(v, dict)),
    "image_size": ("an integer", None),  # None: type and range as in params.yaml (_RANGES)
    "mean": ("3 numbers", _numbers(3)),
    "std": ("3 numbers", _numbers(3)),
    "classes": (f"{list(CLASSES)} (the class order scores assume)", lambda v: v == list(CLASSES)),
    "threshold": ("a number", None),
    "cam_layer": ("a layer name", lambda v: isinstance(v, str)),
    "state_dict": ("a dict of tensors", lambda v: isinstance(v, dict)
                   and all(isinstance(t, torch.Tensor) for t in v.values())),
}
_OPTIONAL = {"run": ("a run name", str), "dataset": ("a dataset name", str), "metrics": ("a dict", dict),
             "domain": ("a dict (what the run trained on)", dict)}
# checked by the rules of params.yaml (config): image_size within the range a training run accepts; the
# normalisation per channel on the 0..1 pixel scale (a pixel's mean and spread cannot leave it)
_RANGES = {"image_size": TRAIN_SCHEMA["image_size"], "threshold": Num(0, 1)}
_PER_CHANNEL = {"mean": Num(0, 1), "std": Num(0, 1, lo_open=True)}


def _check_range(path: Path, name: str, value: Any, key) -> None:
    """``value`` by the rules of a params key (type, range, finite), else CheckpointError naming the field."""
    try:
        check_value("", name, value, key)
    except ParamsError as e:  # ": 'name' must be in [lo, hi], got value"
        raise CheckpointError(f"{path}: checkpoint field {str(e).removeprefix(': ')}") from e


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; a file it refuses is a CheckpointError in our words, never torch's,
    which would suggest ``weights_only=False``, i.e. running whatever code an untrusted file holds."""
    import pickle
    import warnings
    import zipfile

    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise about a file we refuse anyway
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except IsADirectoryError as e:
        raise CheckpointError(f"{path}: a folder, not a checkpoint file") from e
    except OSError as e:
        raise CheckpointError(f"{path}: checkpoint cannot be read ({e.strerror or type(e).__name__})") from e
    except pickle.UnpicklingError as e:
        if zipfile.is_zipfile(path):
            raise CheckpointError(f"{path}: refused: it holds Python objects that a deepfake-detect checkpoint "
                                  "does not (only tensors, numbers, strings, lists and dicts are loaded, so that "
                                  "no code in a file runs); it was not loaded") from e
        raise CheckpointError(f"{path}: not a checkpoint (torch.save writes a zip archive; this is another kind of "
                              "file)") from e
    except Exception as e:  # a truncated or damaged archive (RuntimeError), an empty file (EOFError) ...
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or damaged: {type(e).__name__})") from e


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, every field checked (types; image_size, threshold, mean and std in their ranges;
    every weight finite); else CheckpointError naming the file and the field."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.is_file() and path.stat().st_size == 0:
        raise CheckpointError(f"{path}: an empty file, not a checkpoint")
    ckpt = _torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a deepfake-detect checkpoint (expected format '{FORMAT}')")
    for key, (what, ok) in _FIELDS.items():
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint field '{key}' is missing (expected {what})")
        if key in _RANGES:
            _check_range(path, key, ckpt[key], _RANGES[key])
        elif not ok(ckpt[key]):
            raise CheckpointError(f"{path}: checkpoint field '{key}' must be {what}, got {repr(ckpt[key])[:80]}")
    for key, rule in _PER_CHANNEL.items():
        for i, v in enumerate(ckpt[key]):
            _check_range(path, f"{key}[{i}]", v, rule)
    for key, (what, kind) in _OPTIONAL.items():
        if key in ckpt and not isinstance(ckpt[key], kind):
            raise CheckpointError(f"{path}: checkpoint field '{key}' must be {what}, got {repr(ckpt[key])[:80]}")
    broken = next((k for k, t in ckpt["state_dict"].items() if t.is_floating_point() and not torch.isfinite(t).all()),
                  None)
    if broken is not None:
        raise CheckpointError(f"{path}: checkpoint weight '{broken}' holds NaN or infinite values; the model is "
                              "broken (retrain it)")
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
    model.checkpoint_path = str(path)  # for messages about what the model does (score.score_paths)
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
