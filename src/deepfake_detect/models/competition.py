"""The course competition: a compact detector (< 1 % of SimpleNet's parameters).

A MobileNet-style stack: a 3x3 stem, then depthwise-separable blocks (3x3 depthwise ->
BN -> ReLU -> 1x1 pointwise -> BN -> ReLU, with a residual add where the shape allows),
global average pooling, dropout and one linear layer. Every conv is followed by
BatchNorm; there is no flatten of a spatial map, so any input size works and the
parameter count does not depend on it.

With the defaults (stem 24, stages 48x1, 96x2, 128x2, 160x2 blocks, 1x1 head conv to 256):
141,522 params, 0.84 % of SimpleNet's 16,901,762 at 256 px. Grad-CAM target:
``features.head_conv`` (the last conv block, 7x7 at 224 px).

``augment`` (true or a mapping of ``augment.TrainAugment`` arguments) adds a parameter-free
augmentation layer in front (a Keras-style preprocessing layer, so the trainer needs no
change): in training mode it applies a random resized crop or a pixel-exact shift,
brightness / contrast / saturation jitter and optional blur / noise to the batch; in eval
mode it is the identity, so checkpoints, evaluation and Grad-CAM are unaffected.
The recipe in params.yaml uses ``{scale: [0.8, 1.0], jitter: 0.2, p_degrade: 0.0}``.

``backbone: efficientnet_lite0`` swaps the stem and the first stages for the front of an ImageNet
EfficientNet-Lite0 (``weights: packaged`` works offline): conv stem and blocks 0-2 plus the first block of
stage 3, 87,584 params, 80 channels at stride 16, as the attribute ``backbone`` (so ``backbone_lr`` and
``frozen_layers: [backbone.0, ...]`` apply). ``stages`` then continue from there; with
``stages: [[128, 2]]`` and ``head: 256`` the whole has 150,802 params. Small data learns faster from
pretrained edges and textures than from scratch; the normalisation becomes the backbone's (ImageNet).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register_model
from .augment import make_augment

LITE_FRONT = "efficientnet_lite0"  # the one pretrained front the competition model takes


def lite0_front(weights: str = "packaged") -> nn.Sequential:
    """EfficientNet-Lite0's conv stem, blocks 0-2 and the first block of stage 3 (80 channels, stride 16)."""
    from .backbones import load_backbone

    net = load_backbone(LITE_FRONT, weights)
    return nn.Sequential(nn.Sequential(net.conv_stem, net.bn1), *net.blocks[:3], net.blocks[3][0])


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


class CompetitionNet(nn.Module):
    """Stem + stages of depthwise-separable blocks + 1x1 conv + global average pooling + linear.

    ``stages``: one (width, depth) per stage; each stage starts with a stride-2 block, so the
    feature map is input/32 after the stem and four stages.
    """

    def __init__(self, stem: int = 24, stages: Sequence[Sequence[int]] = ((48, 1), (96, 2), (128, 2), (160, 2)),
                 head: int = 256, dropout: float = 0.2, num_classes: int = 2, augment: bool | dict = False,
                 stem_stride: int = 2, backbone: str = "none", weights: str = "none"):
        super().__init__()
        self.augment = make_augment(augment)
        if backbone not in ("none", LITE_FRONT):
            raise ValueError(f"competition: model_params.backbone must be none or {LITE_FRONT}, got {backbone!r}")
        self.backbone = lite0_front(weights) if backbone != "none" else None
        self.features = nn.Sequential()
        if self.backbone is None:
            self.features.add_module("stem", conv_bn(3, stem, 3, stem_stride))
        c = stem if self.backbone is None else self.backbone[-1].conv_pwl.out_channels
        for i, (w, depth) in enumerate(stages):
            blocks = [SeparableBlock(c, w, 2)] + [SeparableBlock(w, w, 1) for _ in range(depth - 1)]
            self.features.add_module(f"stage{i}", nn.Sequential(*blocks))
            c = w
        self.features.add_module("head_conv", conv_bn(c, head, 1))  # the last conv block: Grad-CAM target
        self.num_features = head
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head, num_classes))
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if self.backbone is not None:  # the pretrained front expects its own normalisation
            from timm.models import get_pretrained_cfg

            cfg = get_pretrained_cfg(LITE_FRONT)
            self.mean, self.std = tuple(cfg.mean), tuple(cfg.std)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.augment(x)
        return self.features(x if self.backbone is None else self.backbone(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("competition", cam_layer="features.head_conv",
                description="compact depthwise-separable detector (course competition, < 1 % of SimpleNet)")
def competition(image_size: int = 224, stem: int = 24,
                stages: Sequence[Sequence[int]] = ((48, 1), (96, 2), (128, 2), (160, 2)), head: int = 256,
                dropout: float = 0.2, augment: bool | dict = False, stem_stride: int = 2, backbone: str = "none",
                weights: str = "none") -> CompetitionNet:
    """``image_size`` is accepted for the registry's signature; the network works at any size.
    ``augment``: false, true (default ``TrainAugment``) or a mapping of ``TrainAugment`` arguments.
    ``backbone``: none (all from scratch) or efficientnet_lite0 (a pretrained front, ``weights``: none |
    packaged | timm | a file, as for the timm backbones)."""
    return CompetitionNet(stem=stem, stages=tuple(tuple(s) for s in stages), head=head, dropout=dropout,
                          augment=augment, stem_stride=stem_stride, backbone=backbone, weights=weights)
