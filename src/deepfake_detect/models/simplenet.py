"""The course's SimpleNet: conv 3->6->16->24 (7x7, ReLU, 2x2 max-pool), fc ->1024->256->2.

At 256x256 input: 24*26*26 features, 16,901,762 parameters. The flatten size is
computed from ``image_size`` so other sizes work.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from . import register_model


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=7), nn.ReLU(inplace=True), nn.MaxPool2d(2))


class SimpleNet(nn.Module):
    def __init__(self, image_size: int = 256, num_classes: int = 2):
        super().__init__()
        self.features = nn.Sequential(_conv_block(3, 6), _conv_block(6, 16), _conv_block(16, 24))
        side = image_size
        for _ in range(3):
            side = (side - 6) // 2
        if side < 1:
            raise ValueError(f"SimpleNet needs image_size >= 50, got {image_size}")
        self.flat = 24 * side * side
        self.classifier = nn.Sequential(
            nn.Linear(self.flat, 1024), nn.ReLU(inplace=True),
            nn.Linear(1024, 256), nn.ReLU(inplace=True),
            nn.Linear(256, num_classes),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(x, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("simplenet", cam_layer="features.2", description="course SimpleNet (16.9 M params at 256 px)")
def simplenet(image_size: int = 256, num_classes: int = 2) -> SimpleNet:
    return SimpleNet(image_size=image_size, num_classes=num_classes)
