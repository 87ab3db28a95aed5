"""MesoNet (Afchar et al., "MesoNet: a Compact Facial Video Forgery Detection Network", WIFS 2018).

``meso4`` (27,977 params) and ``mesoinception4`` (28,615 params) at the paper's 256x256 input,
layer for layer as in the authors' Keras code: conv (ReLU) → batch norm → max-pool ('same'
pooling, hence ``ceil_mode``), then dropout 0.5 → dense 16 → LeakyReLU 0.1 → dropout 0.5 →
one output. Inputs are scaled to [0, 1] (mean 0, std 1) as in the paper.

The paper's single sigmoid output ``z`` is returned as the two logits ``(-z/2, z/2)``: softmax
gives P(fake) = sigmoid(z) and cross-entropy equals the paper's binary cross-entropy, so the
parameter count stays the paper's while every tool here sees (N, 2) logits.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from . import register_model

UNIT = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # images scaled to [0, 1], no centring


def _block(layer: nn.Module, channels: int, pool: int) -> nn.Sequential:
    """layer (with its ReLU) → BatchNorm → MaxPool('same')."""
    return nn.Sequential(layer, nn.BatchNorm2d(channels), nn.MaxPool2d(pool, pool, ceil_mode=True))


def _conv(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2), nn.ReLU(inplace=True))


class InceptionLayer(nn.Module):
    """MesoInception's block: 1x1 | 1x1→3x3 | 1x1→3x3 dilated 2 | 1x1→3x3 dilated 3, concatenated."""

    def __init__(self, c_in: int, a: int, b: int, c: int, d: int):
        super().__init__()
        self.b1 = _conv(c_in, a, 1)
        self.b2 = nn.Sequential(_conv(c_in, b, 1), _conv(b, b, 3))
        self.b3 = nn.Sequential(_conv(c_in, c, 1), nn.Conv2d(c, c, 3, padding=2, dilation=2), nn.ReLU(inplace=True))
        self.b4 = nn.Sequential(_conv(c_in, d, 1), nn.Conv2d(d, d, 3, padding=3, dilation=3), nn.ReLU(inplace=True))
        self.out_channels = a + b + c + d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class MesoNet(nn.Module):
    def __init__(self, features: nn.Sequential, image_size: int = 256, dropout: float = 0.5):
        super().__init__()
        self.features = features
        side = image_size
        for block in features:
            side = -(-side // block[-1].kernel_size)  # 'same' pooling: ceil
        self.flat = 16 * side * side
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(self.flat, 16), nn.LeakyReLU(0.1),
            nn.Dropout(dropout), nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.classifier(self.features(x))
        return torch.cat([-z / 2, z / 2], 1)  # softmax → P(fake) = sigmoid(z)


@register_model("meso4", cam_layer="features.3.1", mean=UNIT[0], std=UNIT[1],
                description="MesoNet Meso-4 (27,977 params at 256 px)")
def meso4(image_size: int = 256, dropout: float = 0.5) -> MesoNet:
    features = nn.Sequential(
        _block(_conv(3, 8, 3), 8, 2),
        _block(_conv(8, 8, 5), 8, 2),
        _block(_conv(8, 16, 5), 16, 2),
        _block(_conv(16, 16, 5), 16, 4),
    )
    return MesoNet(features, image_size, dropout)


@register_model("mesoinception4", cam_layer="features.3.1", mean=UNIT[0], std=UNIT[1],
                description="MesoNet MesoInception-4 (28,615 params at 256 px)")
def mesoinception4(image_size: int = 256, dropout: float = 0.5) -> MesoNet:
    features = nn.Sequential(
        _block(InceptionLayer(3, 1, 4, 4, 2), 11, 2),
        _block(InceptionLayer(11, 2, 4, 4, 2), 12, 2),
        _block(_conv(12, 16, 5), 16, 2),
        _block(_conv(16, 16, 5), 16, 4),
    )
    return MesoNet(features, image_size, dropout)
