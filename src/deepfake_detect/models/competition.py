"""The course competition: a compact detector (< 1 % of SimpleNet's parameters).

A MobileNet-style stack: a 3x3 stem, then depthwise-separable blocks (3x3 depthwise ->
BN -> ReLU -> 1x1 pointwise -> BN -> ReLU, with a residual add where the shape allows),
global average pooling, dropout and one linear layer. Every conv is followed by
BatchNorm; there is no flatten of a spatial map, so any input size works and the
parameter count does not depend on it.

With the defaults (stem 24, stages 48x1, 96x2, 128x2, 160x2 blocks, 1x1 head conv to 256):
141,522 params, 0.84 % of SimpleNet's 16,901,762 at 256 px. Grad-CAM target:
``features.head_conv`` (the last conv block, 7x7 at 224 px).

``augment`` (true or a mapping of ``TrainAugment`` arguments) adds a parameter-free
augmentation layer in front (a Keras-style preprocessing layer, so the trainer needs no
change): in training mode it applies a random resized crop or a pixel-exact shift,
brightness / contrast / saturation jitter and optional blur / noise to the batch; in eval
mode it is the identity, so checkpoints, evaluation and Grad-CAM are unaffected.
The recipe in params.yaml uses ``{scale: [0.8, 1.0], jitter: 0.2, p_degrade: 0.0}``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register_model


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SeparableBlock(nn.Module):
    """Depthwise 3x3 (stride s) -> pointwise 1x1, each with BN + ReLU; residual when shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.dw = conv_bn(c_in, c_in, 3, stride, groups=c_in)
        self.pw = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.act = nn.ReLU(inplace=True)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x))
        return self.act(y + x if self.residual else y)


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


class CompetitionNet(nn.Module):
    """Stem + stages of depthwise-separable blocks + 1x1 conv + global average pooling + linear.

    ``stages``: one (width, depth) per stage; each stage starts with a stride-2 block, so the
    feature map is input/32 after the stem and four stages.
    """

    def __init__(self, stem: int = 24, stages: Sequence[Sequence[int]] = ((48, 1), (96, 2), (128, 2), (160, 2)),
                 head: int = 256, dropout: float = 0.2, num_classes: int = 2, augment: bool | dict = False,
                 stem_stride: int = 2):
        super().__init__()
        if augment:
            self.augment = TrainAugment(**(augment if isinstance(augment, dict) else {}))
        else:
            self.augment = nn.Identity()
        self.features = nn.Sequential()
        self.features.add_module("stem", conv_bn(3, stem, 3, stem_stride))
        c = stem
        for i, (w, depth) in enumerate(stages):
            blocks = [SeparableBlock(c, w, 2)] + [SeparableBlock(w, w, 1) for _ in range(depth - 1)]
            self.features.add_module(f"stage{i}", nn.Sequential(*blocks))
            c = w
        self.features.add_module("head_conv", conv_bn(c, head, 1))  # the last conv block: Grad-CAM target
        self.num_features = head
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.augment(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("competition", cam_layer="features.head_conv",
                description="compact depthwise-separable detector (course competition, < 1 % of SimpleNet)")
def competition(image_size: int = 224, stem: int = 24,
                stages: Sequence[Sequence[int]] = ((48, 1), (96, 2), (128, 2), (160, 2)), head: int = 256,
                dropout: float = 0.2, augment: bool | dict = False, stem_stride: int = 2) -> CompetitionNet:
    """``image_size`` is accepted for the registry's signature; the network works at any size.
    ``augment``: false, true (default ``TrainAugment``) or a mapping of ``TrainAugment`` arguments."""
    return CompetitionNet(stem=stem, stages=tuple(tuple(s) for s in stages), head=head, dropout=dropout,
                          augment=augment, stem_stride=stem_stride)
