"""Self-blended pseudo-fakes (SBI; Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images",
CVPR 2022): face-swap training data made from real faces alone.

From one real face, ``SelfBlend.pair`` makes a *source* copy with colour jitter (RGB shift, brightness,
contrast, saturation, hue) and a frequency change (Gaussian blur, sharpening, or a nearest downscale and
bilinear upscale), moves it slightly (translation, scale), and blends it back into the *target* inside a
soft, randomly deformed face mask with a blend ratio drawn from ``blend_ratios``. As in the paper, the
colour/frequency change goes to the source or (with probability 1/2) to the target, and the target is the
real image of the pair, so a pseudo-fake differs from its real only where the blend mask is above zero:
the detector can only learn the blending boundary and the statistical mismatch inside it, not the
artefacts of one forger.

The mask is landmark-free: an ellipse around the centre of the crop (random size, aspect, position and
tilt), warped by a smooth random displacement field (``torchvision.transforms.v2.functional.elastic``),
eroded and feathered with two Gaussian blurs as in the paper's ``get_blend_mask``. On the centred face crops
this project trains on it covers the face better than a landmark mask does: on 120 train-split DFDC pairs
whose fake and real are pixel-aligned, the convex hull of the pixels the face swap changed overlaps the
centred ellipse with IoU 0.62, the convex hull of dlib's 68 landmarks 0.47-0.53 and ellipses fitted to
MTCNN's box or 5 landmarks at most 0.53; and it needs no face detector, no model file and no failure path
for faces a detector misses.

Every draw comes from ``numpy.random.default_rng((seed, stream, epoch, index))``: a pseudo-fake is a pure
function of the image, the seed, the split, the epoch and its index, whatever the loader workers or
processes, and a resumed run makes the same ones. ``pseudo_fake_split`` turns a split of the training
loader into one image of each real and one pseudo-fake of it (``PairSampler`` keeps them in one batch).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from scipy import ndimage
from skimage.draw import ellipse
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode

from .config import ParamsError, TrainConfig
from .data import LABELS, EpochSampler

REAL, FAKE = LABELS["real"], LABELS["fake"]
_REFERENCE_SIZE = 256  # SBI's kernel sizes and displacements are given for 256 px faces; others scale with size


def _pair(v, name: str) -> tuple[float, float]:
    """A (low, high) range from a list or tuple of two numbers."""
    if not (isinstance(v, Sequence) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)) or v[0] > v[1]:
        raise ValueError(f"'{name}' must be a [low, high] pair of numbers, got {v!r}")
    return float(v[0]), float(v[1])


@dataclass(frozen=True)
class SelfBlend:
    """The SBI generator. Ranges are ``(low, high)``, drawn uniformly; fractions are of the image side.
    Defaults follow the paper's code where it has a value (blend ratios, RGB shift, brightness/contrast,
    downscale factors, translation and scale, the two blur kernels); the mask's ellipse is sized to
    the centred face crops (the face, brows to chin)."""

    blend_ratios: tuple = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # drawn with equal chance: 1 is three times as likely
    p_alter_source: float = 0.5  # else the target (the real of the pair) gets the colour/frequency change
    rgb_shift: float = 20.0  # per-channel shift up to this many grey levels ...
    p_rgb_shift: float = 0.3  # ... with this probability
    brightness: float = 0.1  # factor in [1 - b, 1 + b]
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.0  # fraction of the hue circle (0: off; the paper's hue shift is below one degree)
    blur_sigma: tuple = (0.5, 1.5)  # frequency change 1 of 3: Gaussian blur (sigma in px at 256 px)
    sharpness: tuple = (1.5, 3.0)  # 2 of 3: sharpening factor (1: unchanged)
    downscale: tuple = (2.0, 4.0)  # 3 of 3: nearest downscale by this factor, bilinear back up (paper: 2 or 4)
    translate_x: float = 0.03  # largest source shift
    translate_y: float = 0.015
    scale: tuple = (0.95, 1 / 0.95)
    mask_height: tuple = (0.38, 0.48)  # the ellipse's vertical semi-axis
    mask_aspect: tuple = (0.70, 0.90)  # horizontal / vertical semi-axis
    mask_shift: float = 0.04  # largest offset of the ellipse centre from the crop centre, each axis
    mask_tilt: float = 10.0  # degrees
    warp_smoothness: float = 0.08  # the mask's displacement field: Gaussian sigma ...
    warp_amplitude: float = 0.03  # ... and its standard deviation
    erode_kernel: tuple = (5, 25)  # SBI's first blur (then everything below 1 is cut): px at 256 px
    feather_kernel: tuple = (5, 25)  # SBI's second blur: kernel px at 256 px ...
    feather_sigma: tuple = (5.0, 45.0)  # ... and sigma

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(f.default, tuple):
                if f.name == "blend_ratios":
                    if not (isinstance(v, Sequence) and v and all(isinstance(x, (int, float)) and 0 < x <= 1
                                                                   for x in v)):
                        raise ValueError(f"'blend_ratios' must be a list of numbers in (0, 1], got {v!r}")
                    v = tuple(float(x) for x in v)
                else:
                    v = _pair(v, f.name)
                object.__setattr__(self, f.name, v)
            elif not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"'{f.name}' must be a number >= 0, got {v!r}")
        for name in ("p_alter_source", "p_rgb_shift"):
            if getattr(self, name) > 1:
                raise ValueError(f"'{name}' must be a probability in [0, 1], got {getattr(self, name)!r}")
        if self.downscale[0] < 1 or self.mask_height[0] <= 0 or self.mask_aspect[0] <= 0:
            raise ValueError("'downscale' must be >= 1, 'mask_height' and 'mask_aspect' > 0 "
                             f"(got {self.downscale}, {self.mask_height}, {self.mask_aspect})")

    # ------------------------------------------------------------ the pair

    def pair(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(real, pseudo-fake, blend mask) of one uint8 H x W x 3 image: the real is the image or (with
        probability 1 - ``p_alter_source``) its colour/frequency-altered copy; the fake equals it exactly
        wherever the mask (float32 H x W in [0, 1]) is 0."""
        x = torch.from_numpy(np.array(image, np.float32)).permute(2, 0, 1).div_(255)
        h, w = x.shape[-2:]
        source, target = x, x
        if rng.random() < self.p_alter_source:
            source = self.alter(x, rng)
        else:
            target = self.alter(x, rng)
        mask = torch.from_numpy(self.face_mask(h, w, rng))[None]
        # the source face moves a little, and the region it covers moves with it
        tx = rng.uniform(-self.translate_x, self.translate_x) * w
        ty = rng.uniform(-self.translate_y, self.translate_y) * h
        geometry = dict(angle=0.0, translate=[tx, ty], scale=float(rng.uniform(*self.scale)), shear=[0.0, 0.0],
                        interpolation=InterpolationMode.BILINEAR)
        source = TF.affine(source, **geometry)
        inside = TF.affine(torch.ones_like(mask), **geometry) > 0.999  # no black fill from outside the image
        mask = self.warp(TF.affine(mask, **geometry), rng) * inside
        blend = self.feather(mask, rng) * float(rng.choice(self.blend_ratios))
        fake = target + blend * (source - target)  # exactly the target where blend == 0
        return _to_uint8(target), _to_uint8(fake), blend[0].numpy()

    def alter(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Colour jitter, then one of three frequency changes (float image in [0, 1], C x H x W)."""
        if rng.random() < self.p_rgb_shift:
            x = x + torch.from_numpy(rng.uniform(-self.rgb_shift, self.rgb_shift, (3, 1, 1)) / 255).float()
            x = x.clamp_(0, 1)
        x = TF.adjust_brightness(x, 1 + rng.uniform(-self.brightness, self.brightness))
        x = TF.adjust_contrast(x, 1 + rng.uniform(-self.contrast, self.contrast))
        x = TF.adjust_saturation(x, 1 + rng.uniform(-self.saturation, self.saturation))
        if self.hue:
            x = TF.adjust_hue(x, rng.uniform(-self.hue, self.hue))
        h, w = x.shape[-2:]
        kind = rng.integers(3)
        if kind == 0:
            sigma = rng.uniform(*self.blur_sigma) * h / _REFERENCE_SIZE
            return TF.gaussian_blur(x, [_odd(6 * sigma + 1)] * 2, [sigma, sigma])
        if kind == 1:
            return TF.adjust_sharpness(x, rng.uniform(*self.sharpness))
        factor = rng.uniform(*self.downscale)
        small = TF.resize(x, [max(1, round(h / factor)), max(1, round(w / factor))],
                          interpolation=InterpolationMode.NEAREST)
        return TF.resize(small, [h, w], interpolation=InterpolationMode.BILINEAR, antialias=False).clamp_(0, 1)

    # ------------------------------------------------------------ the mask

    def face_mask(self, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        """A filled ellipse (float32 0/1, H x W) around the crop centre: random size, aspect, offset, tilt."""
        ry = rng.uniform(*self.mask_height) * h
        rx = ry * rng.uniform(*self.mask_aspect) * w / h
        cy, cx = (0.5 + rng.uniform(-self.mask_shift, self.mask_shift, 2)) * (h, w)
        rows, cols = ellipse(cy, cx, ry, rx, shape=(h, w), rotation=np.deg2rad(rng.uniform(-1, 1) * self.mask_tilt))
        out = np.zeros((h, w), np.float32)
        out[rows, cols] = 1.0
        return out

    def warp(self, mask: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """The mask (1 x H x W) moved by a smooth random displacement field: an irregular outline."""
        h, w = mask.shape[-2:]
        if self.warp_amplitude == 0:
            return mask
        # a smooth field is smooth at a quarter of the resolution too: filtered there, resized up (10x faster)
        ch, cw = max(2, h // 4), max(2, w // 4)
        coarse = ndimage.gaussian_filter(rng.standard_normal((2, ch, cw)),
                                         (0, self.warp_smoothness * ch, self.warp_smoothness * cw), mode="wrap")
        coarse *= self.warp_amplitude / max(coarse.std(), 1e-12)  # std: warp_amplitude x side
        field = TF.resize(torch.from_numpy(coarse).float(), [h, w], interpolation=InterpolationMode.BILINEAR)
        displacement = (2 * field).permute(1, 2, 0)[None]  # (1, H, W, 2), x then y, in [-1, 1] grid units
        return TF.elastic(mask, displacement, interpolation=InterpolationMode.BILINEAR)

    def feather(self, mask: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """SBI's blend mask: blur and keep only the core that stays at the maximum (an erosion), then blur
        again with a wide sigma and rescale to a peak of 1. Zero beyond the second kernel's reach."""
        k = mask.shape[-2] / _REFERENCE_SIZE
        m = _blur(mask[0].numpy(), _odd(k * rng.uniform(*self.erode_kernel)))
        if m.max() <= 0:
            return torch.zeros_like(mask)
        m = (m / m.max() >= 1 - 1e-4).astype(np.float32)  # float sums inside the face reach 1 only up to rounding
        m = _blur(m, _odd(k * rng.uniform(*self.feather_kernel)),
                  k * rng.uniform(*self.feather_sigma))
        return torch.from_numpy(m / m.max() if m.max() > 0 else m)[None]


def _blur(m: np.ndarray, size: int, sigma: float | None = None) -> np.ndarray:
    """Gaussian blur with a ``size`` x ``size`` kernel (OpenCV's sigma for that size when none is given), as
    SBI's ``cv2.GaussianBlur``: separable, and exactly zero beyond the kernel's reach."""
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8 if sigma is None else sigma
    return ndimage.gaussian_filter(m, sigma, radius=size // 2, mode="reflect")


def _odd(v: float) -> int:
    """The nearest odd kernel size >= 3."""
    return max(3, int(round(v)) // 2 * 2 + 1)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return x.mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def make_self_blend(params: dict, run: str = "") -> SelfBlend:
    """``SelfBlend`` from a section's ``pseudo_fakes_params``; a bad key or value names the key."""
    valid = [f.name for f in fields(SelfBlend)]
    for key in params:
        if key not in valid:
            raise ParamsError(f"params: unknown key 'pseudo_fakes_params.{key}' of run '{run}' "
                              f"(valid keys here: {', '.join(valid)})")
    try:
        return SelfBlend(**params)
    except ValueError as e:
        raise ParamsError(f"params: run '{run}': pseudo_fakes_params.{str(e).strip(chr(39))}") from e


# ---------------------------------------------------------------- data

class SelfBlendedDataset(Dataset):
    """Each real image of ``base`` twice: index ``2i`` is the real of the pair and ``2i + 1`` its pseudo-fake
    (labels 0 and 1). ``base``: a ``data.ManifestDataset`` with ``raw=True`` over real images only. An index
    is ``k`` or ``(k, flip, epoch)`` (``PairSampler``); the pair depends on (seed, stream, epoch, i) only,
    and both halves draw the same numbers, so the real of the pair is the image its fake was blended into."""

    def __init__(self, base, blend: SelfBlend, seed: int, stream: int = 0):
        fakes = [r["path"] for r in base.rows if int(r["label"]) != REAL]
        if fakes:
            raise ValueError(f"pseudo-fakes are made from real images only; {len(fakes)} fake rows given "
                             f"(first: {fakes[0]})")
        if not base.raw:
            raise ValueError("SelfBlendedDataset needs a raw (uint8) ManifestDataset")
        self.base, self.blend, self.seed, self.stream = base, blend, int(seed), int(stream)
        # the degradation augmentation (RandomDegrade) runs after blending, on each half, as in the paper
        self.augment, base.augment = base.augment, None
        self.transform = base.transform  # the trainer normalises batches with it
        self._last: tuple = (None, None)  # (key, pair): the two halves of a pair are asked for one after the other

    def __len__(self) -> int:
        return 2 * len(self.base)

    def generator(self, i: int, epoch: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.stream, int(epoch), int(i)))

    def __getitem__(self, index) -> tuple[np.ndarray, int]:
        k, flip, epoch = index if isinstance(index, tuple) else (index, False, 0)
        i, label = divmod(int(k), 2)
        key = (i, bool(flip), int(epoch))
        if self._last[0] != key:
            image, _ = self.base[(i, flip)]
            self._last = key, self.blend.pair(image, self.generator(i, epoch))[:2]
        out = self._last[1][label].copy()
        if self.augment is not None:
            out = self.augment(out, int(epoch), int(k))
        return out, label


class PairSampler(EpochSampler):
    """``EpochSampler`` over the reals, each expanded to its (real, pseudo-fake) pair with the flip the real
    drew and the epoch: ``(2i, flip, epoch), (2i + 1, flip, epoch)``. With an even batch size both halves
    of a pair land in one batch, as in the paper's loader; the shuffling, the flips and the sharding over
    processes are ``EpochSampler``'s."""

    def __iter__(self):
        for item in super().__iter__():
            i, flip = item if isinstance(item, tuple) else (item, False)
            yield 2 * i, bool(flip), self.epoch
            yield 2 * i + 1, bool(flip), self.epoch

    def __len__(self) -> int:
        return 2 * super().__len__()


def real_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if int(r["label"]) == REAL]


def uses_pseudo_fakes(cfg: TrainConfig, split: str) -> bool:
    """Whether ``split`` of a run is made of reals and their pseudo-fakes (train with ``pseudo_fakes``;
    val too with ``pseudo_fakes_val``; test never: a run is always scored on real fakes)."""
    if cfg.pseudo_fakes_val and cfg.pseudo_fakes == "none":
        raise ParamsError(f"params: run '{cfg.run}' sets pseudo_fakes_val but pseudo_fakes is none "
                          f"(set pseudo_fakes: sbi, or pseudo_fakes_val: false)")
    return cfg.pseudo_fakes != "none" and (split == "train" or (split == "val" and cfg.pseudo_fakes_val))


def pseudo_fake_split(base, sampler: EpochSampler, cfg: TrainConfig, seed: int, split: str):
    """(dataset, sampler) of a split made of the reals of ``base`` and their pseudo-fakes. Training: a new
    pseudo-fake per real and epoch, pairs kept together (``PairSampler``). Validation: one fixed pseudo-fake
    per real (epoch 0 of its own stream), in order."""
    ds = SelfBlendedDataset(base, make_self_blend(cfg.pseudo_fakes_params, cfg.run), seed,
                            stream=("train", "val").index(split))
    if split != "train":
        return ds, EpochSampler(len(ds), num_replicas=sampler.num_replicas, rank=sampler.rank)
    return ds, PairSampler(len(base), shuffle=True, seed=sampler.seed, hflip=sampler.hflip,
                           num_replicas=sampler.num_replicas, rank=sampler.rank)
