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

from .errors import UserError
from .io import save_torch
from .models import get_model

FORMAT = "deepfake-detect/checkpoint-v1"
CLASSES = ["real", "fake"]  # index = label


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


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, pickle with code, not a torch file at all
        raise CheckpointError(f"{path}: not a readable deepfake-detect checkpoint ({type(e).__name__}: {e})"[:500]) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a deepfake-detect checkpoint (expected format '{FORMAT}')")
    return ckpt


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from a checkpoint; returns (model in eval mode, checkpoint dict)."""
    ckpt = read_checkpoint(path)
    params = dict(ckpt["arch_params"])
    if "weights" in _builder_kwargs(ckpt["arch"]):
        params["weights"] = "none"
    model = get_model(ckpt["arch"], image_size=ckpt["image_size"], **params)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit architecture '{ckpt['arch']}': {str(e)[:300]}") from e
    model.mean, model.std = tuple(ckpt["mean"]), tuple(ckpt["std"])
    return model.to(device).eval(), ckpt


def _builder_kwargs(arch: str) -> set[str]:
    from .models import _REGISTRY, _load_all
    import inspect

    _load_all()
    entry = _REGISTRY.get(arch)
    if entry is None:  # timm architectures take a weights source
        return {"weights"}
    return set(inspect.signature(entry.builder).parameters)
