"""Attributions of a model's p(fake) to its input pixels, for the explain stage's figures and faithfulness and for
``deepfake-detect predict --cam``:

* **Saliency** (the course's recipe): ``|d p_fake / d input|``, max over colour channels.
* **Grad-CAM** through the ``grad-cam`` package (pytorch-grad-cam) on the layer each
  registered model names (``model.cam_layer``), for the fake class.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn

from .data import FAKE
from .models import get_submodule


@contextlib.contextmanager
def _grad_mode(model: nn.Module) -> Iterator[None]:
    """Gradients on (also inside ``torch.inference_mode``) and in-place activations off.

    An in-place ReLU after the hooked layer would overwrite the activation Grad-CAM keeps
    and can break the gradient hook, so every module with an ``inplace`` flag is switched
    to out-of-place for the duration (and restored).
    """
    flagged = [m for m in model.modules() if isinstance(getattr(m, "inplace", None), bool) and m.inplace]
    for m in flagged:
        m.inplace = False
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for m in flagged:
            m.inplace = True


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's parameters (CPU for a model without any)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def saliency(model: nn.Module, x: torch.Tensor, target: int = FAKE) -> torch.Tensor:
    """Vanilla gradient saliency: ``|d softmax(model(x))[:, target] / dx|``, max over channels.

    x: normalised batch (N, 3, H, W). Returns a CPU float tensor (N, H, W) >= 0.
    """
    model.eval()
    with _grad_mode(model):
        x = x.detach().clone().to(model_device(model)).requires_grad_(True)
        prob = torch.softmax(model(x).float(), dim=1)[:, target]
        (grad,) = torch.autograd.grad(prob.sum(), x)  # eval mode: images do not interact
    return grad.abs().amax(dim=1).detach().cpu()


def gradcam(model: nn.Module, x: torch.Tensor, target: int = FAKE) -> np.ndarray:
    """Grad-CAM (pytorch-grad-cam) on ``model.cam_layer`` for class ``target``.

    Returns float32 (N, H, W) in [0, 1] (each map scaled to its own maximum by the
    package), upsampled to the input's H x W.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = get_submodule(model, model.cam_layer)
    model.eval()
    with _grad_mode(model):
        x = x.detach().clone().to(model_device(model))
        cam = GradCAM(model=model, target_layers=[layer])
        try:
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)] * len(x))
        finally:
            cam.activations_and_grads.release()
    return np.clip(np.nan_to_num(maps.astype(np.float32)), 0.0, 1.0)
