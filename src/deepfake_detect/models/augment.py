"""Parameter-free batch augmentation inside a model, active only in training mode.

A Keras-style preprocessing layer: the trainer needs no change, and in eval mode it is the
identity, so checkpoints, evaluation and Grad-CAM are unaffected. Used by ``competition`` and,
through ``model_params.augment``, by every timm backbone.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class TrainAugment(nn.Module):
    """Batch augmentation on normalised tensors, active only in training mode (no parameters).

    Per image: a random crop -- resized (area in ``scale``, aspect 3/4-4/3) when ``scale`` is
    below 1, else a pixel-exact random shift of up to ``shift`` px (reflection padding, no
    resampling, so the high-frequency cues stay intact) -- brightness / contrast / saturation
    jitter (``jitter``), and with probability ``p_degrade`` a Gaussian blur or Gaussian noise.
    """

    def __init__(self, scale: Sequence[float] = (0.6, 1.0), shift: int = 16, jitter: float = 0.2,
                 p_degrade: float = 0.3):
        super().__init__()
        self.scale = tuple(float(s) for s in scale)
        self.shift = int(shift)
        self.jitter = float(jitter)
        self.p_degrade = float(p_degrade)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        n, dev = x.shape[0], x.device
        h, w = x.shape[-2:]
        theta = torch.zeros(n, 2, 3, device=dev, dtype=x.dtype)
        if self.scale[0] < 1.0:  # random resized crop
            area = torch.empty(n, device=dev).uniform_(*self.scale)
            ratio = torch.exp(torch.empty(n, device=dev).uniform_(math.log(3 / 4), math.log(4 / 3)))
            sw, sh = torch.sqrt(area * ratio).clamp(max=1.0), torch.sqrt(area / ratio).clamp(max=1.0)
            tx = (torch.rand(n, device=dev) * 2 - 1) * (1 - sw)
            ty = (torch.rand(n, device=dev) * 2 - 1) * (1 - sh)
        else:  # whole-pixel shifts: samples land on pixel centres, values are copied exactly
            sw = sh = torch.ones(n, device=dev)
            tx = torch.randint(-self.shift, self.shift + 1, (n,), device=dev) * (2.0 / w)
            ty = torch.randint(-self.shift, self.shift + 1, (n,), device=dev) * (2.0 / h)
        if self.scale[0] < 1.0 or self.shift > 0:
            theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sw, tx, sh, ty
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if self.jitter > 0:
            def j():
                return 1 + (torch.rand(n, 1, 1, 1, device=dev) * 2 - 1) * self.jitter

            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * j() + mean * j()  # contrast, brightness
            grey = x.mean(dim=1, keepdim=True)
            x = (x - grey) * j() + grey  # saturation
        if self.p_degrade > 0:
            which = torch.rand(n, 1, 1, 1, device=dev)
            k = torch.tensor([1.0, 2.0, 1.0], device=dev, dtype=x.dtype)
            k = (k[:, None] * k[None, :] / 16).expand(x.shape[1], 1, 3, 3)
            blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k, groups=x.shape[1])
            noisy = x + torch.randn_like(x) * 0.05
            half = self.p_degrade / 2
            x = torch.where(which < half, blurred, torch.where(which < self.p_degrade, noisy, x))
        return x


def make_augment(augment: bool | dict = False) -> nn.Module:
    """``augment``: false (identity), true (default ``TrainAugment``) or a mapping of its arguments."""
    if not augment:
        return nn.Identity()
    return TrainAugment(**(augment if isinstance(augment, dict) else {}))
