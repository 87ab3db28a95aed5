"""Frozen-feature probe: pooled intermediate feature maps of a pretrained timm backbone and a linear head.

``get_model("probe", backbone="efficientnet_lite0", weights="packaged", indices=(-3, -2, -1))``:

* ``backbone``: any timm architecture with ``forward_intermediates``, its weights from ``load_backbone``
  (``weights``: packaged | timm | none | a weights file). It is pruned after the last used stage
  (``prune_intermediate_layers``, head and final norm dropped) after the weights are loaded, so a model
  rebuilt with ``weights: none`` has the same state-dict keys.
* ``indices``: timm's ``forward_intermediates`` stage indices, i.e. positions in the backbone's
  ``feature_info`` (negative: from the end). EfficientNet(-Lite) has 5 stages, 0..4 = ``blocks.0``,
  ``blocks.1``, ``blocks.2``, ``blocks.4``, ``blocks.6`` (strides 2, 4, 8, 16, 32); the default
  ``(-3, -2, -1)`` takes the last three, ``blocks.2/4/6`` (Lite0: 40 + 112 + 320 channels): a frozen-feature
  logistic probe on stylegan_faces found the mid/late blocks best (``bench/stylegan_probe.py``).
* ``pool``: per map, ``meanstd`` (channel means and channel standard deviations) or ``mean``; all
  concatenated, then ``BatchNorm1d`` (standardises the features), ``Dropout(dropout)``, ``Linear(F, 2)``.
* ``train_backbone: false`` (default) sets ``frozen_prefixes = ("backbone",)``: the trainer gives those
  parameters no gradients and keeps their BatchNorms in eval mode (``train()`` here keeps the whole frozen
  backbone in eval mode as well). Parameters keep ``requires_grad`` so that Grad-CAM can explain a loaded model.
* ``cam_layer`` is the module of the last used stage (e.g. ``backbone.blocks.6``); ``mean``/``std`` come
  from the backbone's timm data config (both set on the module, so ``get_model`` keeps them).
"""
from __future__ import annotations

from collections.abc import Sequence

import timm
import timm.data
import torch
import torch.nn as nn

from . import register_model
from .backbones import load_backbone

POOLS = ("meanstd", "mean")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureProbe(nn.Module):
    """``head(pool(backbone.forward_intermediates(x, indices)))``; head = BatchNorm1d, Dropout, Linear(F, 2)."""

    def __init__(self, backbone: nn.Module, indices: list[int], channels: Sequence[int], pool: str = "meanstd",
                 dropout: float = 0.0, train_backbone: bool = False):
        super().__init__()
        self.backbone = backbone
        self.indices = list(indices)  # absolute stage indices, ascending (the order forward_intermediates returns)
        self.pool = pool
        features = sum(channels) * (2 if pool == "meanstd" else 1)
        self.head = nn.Sequential(nn.BatchNorm1d(features), nn.Dropout(dropout), nn.Linear(features, 2))
        if not train_backbone:
            self.frozen_prefixes = ("backbone",)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled, concatenated feature vector (N, F), before the head."""
        maps = self.backbone.forward_intermediates(x, indices=self.indices, intermediates_only=True)
        parts = []
        for m in maps:
            parts.append(m.mean((2, 3)))
            if self.pool == "meanstd":  # eps: finite gradients on 1x1 maps and constant channels
                parts.append((m.var((2, 3), correction=0) + 1e-6).sqrt())
        return torch.cat(parts, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def train(self, mode: bool = True) -> FeatureProbe:
        super().train(mode)
        if getattr(self, "frozen_prefixes", ()):
            self.backbone.eval()  # frozen features: pretrained BatchNorm statistics, no stochastic layers
        return self


def _stage_indices(indices, n: int) -> list[int]:
    """``indices`` (ints, negative from the end) as ascending absolute stage indices; ValueError names the key."""
    if isinstance(indices, int) or not isinstance(indices, Sequence) or not indices:
        raise ValueError(f"model 'probe': model_params.indices must be a non-empty list of stage indices, "
                         f"got {indices!r}")
    out = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
            raise ValueError(f"model 'probe': model_params.indices: {i!r} is out of range; the backbone has {n} "
                             f"stages (indices 0..{n - 1}, or -{n}..-1 from the end)")
        out.append(i % n)
    if len(set(out)) != len(out):
        raise ValueError(f"model 'probe': model_params.indices {list(indices)} name a stage twice")
    return sorted(out)


@register_model("probe", cam_layer="backbone.blocks.6", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                description="frozen-feature probe: pooled mean/std of a timm backbone's last stages + BN + Linear")
def probe(image_size: int = 224, backbone: str = "efficientnet_lite0", weights: str = "packaged",
          indices: Sequence[int] = (-3, -2, -1), pool: str = "meanstd", train_backbone: bool = False,
          dropout: float = 0.0) -> FeatureProbe:
    """A linear probe on pooled intermediate features of ``backbone`` (see the module docstring)."""
    if pool not in POOLS:
        raise ValueError(f"model 'probe': model_params.pool must be one of {' / '.join(POOLS)}, got {pool!r}")
    if not timm.is_model(backbone):
        raise ValueError(f"model 'probe': model_params.backbone '{backbone}' is not a timm architecture")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"model 'probe': model_params.dropout must be in [0, 1), got {dropout!r}")
    kw = {}
    cfg = timm.models.get_pretrained_cfg(backbone)
    if cfg is not None and cfg.fixed_input_size:  # ViT-like: positional embeddings sized to the input
        kw["img_size"] = image_size
    net = load_backbone(backbone, weights, **kw)
    if not hasattr(net, "forward_intermediates") or not hasattr(net, "prune_intermediate_layers"):
        raise ValueError(f"model 'probe': model_params.backbone '{backbone}' has no forward_intermediates in timm")
    info = net.feature_info
    stages = info.get_dicts() if hasattr(info, "get_dicts") else list(info)
    take = _stage_indices(indices, len(stages))
    data_cfg = timm.data.resolve_data_config({}, model=net)
    net.prune_intermediate_layers(take, prune_head=True, prune_norm=True)  # after loading: same keys for any source
    model = FeatureProbe(net, take, [stages[i]["num_chs"] for i in take], pool, float(dropout), bool(train_backbone))
    model.cam_layer = "backbone." + stages[take[-1]]["module"]
    model.mean, model.std = tuple(data_cfg["mean"]), tuple(data_cfg["std"])
    return model
