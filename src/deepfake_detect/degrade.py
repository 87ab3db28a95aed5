"""What happens to an image on its way to a detector: the degradations themselves (JPEG, resize, blur), which
the robustness panel (``robustness.PANEL``) and the random degradation augmentation of training (CNNDetection:
Wang et al., CVPR 2020) apply.

Every operation is torchvision's (``transforms.v2.functional``: ``jpeg`` -- a real libjpeg encode and decode,
``resize`` with antialiasing, ``gaussian_blur``) on uint8 (3, H, W) tensors. The functional forms are used,
not the ``v2.JPEG`` / ``v2.GaussianBlur`` classes, because those draw their parameters from torch's global
random generator even when the parameters are fixed: a panel or a training step would shift every random
number drawn after it.

``RandomDegrade``: with probability ``p_blur`` a Gaussian blur of sigma ~ U[0, sigma_max], then with
probability ``p_jpeg`` a JPEG re-encoding at quality ~ U{quality_min, ..., 100}; every draw is a function of
(seed, epoch, image index) alone, so loader workers, DDP processes and resumed runs see the same images.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .config import TrainConfig


@functools.cache
def _tv():
    """torchvision's v2 functional ops, imported on first use: the import costs seconds (it loads torch's
    compiler stack) in every training process, most of which never degrade an image."""
    from torchvision.transforms.v2 import functional

    return functional


def _bilinear():
    from torchvision.transforms import InterpolationMode

    return InterpolationMode.BILINEAR


def _check(img: torch.Tensor) -> torch.Tensor:
    if img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
        raise ValueError(f"expected a uint8 image (3, H, W), got {img.dtype} {tuple(img.shape)}")
    return img.contiguous()


def jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode as JPEG at ``quality`` (1-100, libjpeg's 4:2:0 default, as PIL saves) and decode."""
    return _tv().jpeg(_check(img), int(quality))


def rescale(img: torch.Tensor, factor: float) -> torch.Tensor:
    """Resized by ``factor`` (each side rounded, at least 1 px): bilinear, antialiased when shrinking."""
    h, w = img.shape[-2:]
    size = [max(1, round(h * factor)), max(1, round(w * factor))]
    return _tv().resize(_check(img), size, interpolation=_bilinear(), antialias=True)


def down_up(img: torch.Tensor, factor: float) -> torch.Tensor:
    """Resized by ``factor`` and back to its own size: the detail a downscaled copy lost, at the same size."""
    h, w = img.shape[-2:]
    return _tv().resize(rescale(img, factor), [h, w], interpolation=_bilinear(), antialias=True)


def blur_kernel_size(sigma: float) -> int:
    """Odd kernel side covering +-3 sigma (99.7 % of the Gaussian's mass)."""
    return 2 * math.ceil(3 * sigma) + 1


def blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of standard deviation ``sigma`` px (reflected borders); ``sigma`` 0 is the identity."""
    if sigma <= 0:
        return _check(img)
    k = blur_kernel_size(sigma)
    h, w = img.shape[-2:]
    k = min(k, 2 * min(h, w) - 1)  # reflection padding needs a border narrower than the image
    return _tv().gaussian_blur(_check(img), [k, k], [float(sigma), float(sigma)]) if k > 1 else _check(img)


OPERATIONS = {"jpeg": jpeg, "rescale": rescale, "down_up": down_up, "blur": blur}


def apply(img: torch.Tensor, steps: tuple[tuple[str, float], ...]) -> torch.Tensor:
    """``img`` (uint8, 3 x H x W) through ``steps`` in order: (operation of ``OPERATIONS``, argument) pairs
    (a ``robustness.PANEL`` value)."""
    for op, arg in steps:
        img = OPERATIONS[op](img, arg)
    return img


@dataclass(frozen=True)
class RandomDegrade:
    """The CNNDetection training augmentation, on uint8 images (H x W x 3 numpy, as the decoded cache holds
    them): blur with probability ``p_blur`` (sigma ~ U[0, ``sigma_max``]), then JPEG with probability ``p_jpeg``
    (quality ~ U{``quality_min`` .. 100}). Draws come from a generator seeded by (``seed``, epoch, index)."""

    p_blur: float
    p_jpeg: float
    sigma_max: float = 3.0
    quality_min: int = 30
    seed: int = 0

    @classmethod
    def from_cfg(cls, cfg: TrainConfig, seed: int) -> RandomDegrade | None:
        """The augmentation of a training section (keys ``degrade_*``); None when both probabilities are 0."""
        if not (cfg.degrade_p_blur or cfg.degrade_p_jpeg):
            return None
        return cls(cfg.degrade_p_blur, cfg.degrade_p_jpeg, cfg.degrade_blur_sigma_max,
                   cfg.degrade_jpeg_quality_min, seed)

    def draw(self, epoch: int, index: int) -> tuple[float | None, int | None]:
        """(blur sigma or None, JPEG quality or None) for image ``index`` in ``epoch``."""
        rng = np.random.default_rng((self.seed, epoch, index))
        u_blur, sigma, u_jpeg, quality = rng.random(), rng.uniform(0, self.sigma_max), rng.random(), \
            int(rng.integers(self.quality_min, 101))  # all four drawn always: one p's value never shifts the other
        return (sigma if u_blur < self.p_blur else None), (quality if u_jpeg < self.p_jpeg else None)

    def __call__(self, hwc: np.ndarray, epoch: int, index: int) -> np.ndarray:
        sigma, quality = self.draw(epoch, index)
        if sigma is None and quality is None:
            return hwc
        x = torch.from_numpy(np.array(hwc, dtype=np.uint8)).permute(2, 0, 1)
        if sigma is not None:
            x = blur(x, sigma)
        if quality is not None:
            x = jpeg(x, quality)
        return x.permute(1, 2, 0).numpy()

