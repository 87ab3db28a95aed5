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
    """The registered names (any timm architecture works besides these)."""
    _load_all()
    return sorted(_REGISTRY)


def is_model(name: str) -> bool:
    """A registered name or a timm architecture."""
    _load_all()
    if name in _REGISTRY:
        return True
    import timm

    return timm.is_model(name)


def model_kwargs(name: str) -> set[str] | None:
    """The ``model_params`` keys model ``name`` takes (None: any, e.g. a builder with ``**kwargs``)."""
    import inspect

    _load_all()
    entry = _REGISTRY.get(name)
    if entry is None:  # timm architectures: see backbones.build_timm
        from .backbones import build_timm

        builder = build_timm
    else:
        builder = entry.builder
    sig = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values()):
        return None
    return {k for k in sig if k not in ("image_size", "name")}


def _load_all() -> None:
    # importing the modules registers their models (here, not at the top: they import this module)
    from . import backbones, competition, meso, npr, probe, simplenet  # noqa: F401


def get_model(name: str, image_size: int = 128, **params) -> nn.Module:
    """Build model ``name``. The module gets attributes ``arch``, ``arch_params``,
    ``cam_layer``, ``mean`` and ``std`` (used by checkpoints, evaluation and Grad-CAM).

    ``cam_layer``/``mean``/``std`` that the builder already set on the module (they may depend on its
    params, e.g. the probe's backbone) win over the registry entry's defaults."""
    _load_all()
    if name in _REGISTRY:
        entry = _REGISTRY[name]
        model = entry.builder(image_size=image_size, **params)
        cam_layer = getattr(model, "cam_layer", entry.cam_layer)
        mean, std = getattr(model, "mean", entry.mean), getattr(model, "std", entry.std)
    else:
        from .backbones import build_timm

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
