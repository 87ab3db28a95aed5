"""One model registry.

``get_model(name, **params)`` builds any detector by name. Every registered model
also names its Grad-CAM target layer and its input normalisation, so training,
evaluation, explanation and checkpoints never guess them. Names that are not
registered here fall through to timm (any timm architecture, with the course's MLP
head; see ``backbones.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    cam_layer: str  # dotted path of the Grad-CAM target module
    mean: tuple = HALF
    std: tuple = HALF
    description: str = ""


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, cam_layer: str, mean: tuple = HALF, std: tuple = HALF, description: str = ""):
    """Decorator: register a builder ``f(image_size=..., **params) -> nn.Module``."""

    def deco(builder):
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' registered twice")
        _REGISTRY[name] = ModelEntry(name, builder, cam_layer, tuple(mean), tuple(std), description)
        return builder

    return deco


def list_models() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def _load_all() -> None:
    # importing the modules registers their models
    from . import simplenet  # noqa: F401
    for mod in ("meso", "competition", "backbones"):
        try:
            __import__(f"{__name__}.{mod}")
        except ModuleNotFoundError as e:  # optional modules added by later work
            if e.name != f"{__name__}.{mod}":
                raise


def get_model(name: str, image_size: int = 128, **params) -> nn.Module:
    """Build model ``name``. The module gets attributes ``arch``, ``arch_params``,
    ``cam_layer``, ``mean`` and ``std`` (used by checkpoints, evaluation and Grad-CAM)."""
    _load_all()
    if name in _REGISTRY:
        entry = _REGISTRY[name]
        model = entry.builder(image_size=image_size, **params)
        cam_layer, mean, std = entry.cam_layer, entry.mean, entry.std
    else:
        try:
            from .backbones import build_timm
        except ModuleNotFoundError:
            build_timm = None
        if build_timm is None:
            raise ValueError(f"unknown model '{name}' (registered: {', '.join(sorted(_REGISTRY))})")
        model = build_timm(name, image_size=image_size, **params)
        cam_layer, mean, std = model.cam_layer, model.mean, model.std
    model.arch = name
    model.arch_params = dict(params)
    model.cam_layer = cam_layer
    model.mean = tuple(float(x) for x in mean)
    model.std = tuple(float(x) for x in std)
    return model


def get_submodule(model: nn.Module, dotted: str) -> nn.Module:
    """Resolve a dotted layer name (``features.2``) with an error naming the layer."""
    try:
        return model.get_submodule(dotted)
    except AttributeError as e:
        raise ValueError(f"model {getattr(model, 'arch', type(model).__name__)} has no layer '{dotted}'") from e


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
