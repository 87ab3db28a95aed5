"""Procedural demo datasets of synthetic faces (numpy + Pillow only).

Two kinds, written in the course layout ``<out>/{train,val,test}/{real,fake}/<name>.png``:

``fakes``
    Face-swap style.  Every image shows one *identity* (a seeded set of attributes: head
    shape, skin tone, hair colour/style, eyes, brows, nose, mouth, ...) under a random pose,
    lighting, background, sensor noise and in-memory JPEG compression.  A fake takes the
    inner face (brows, eyes, nose, mouth) of another identity of the same split, rendered
    with its own lighting and camera, colour-corrects it only partially, warps it slightly
    (bicubic affine resampling), pastes it through a blurred elliptical mask and re-compresses
    the whole image.  The seam, the colour/lighting mismatch, the resampling blur and the
    double compression are the cues.  Real:fake is 2:1 (``n_fake = n // 3``).

``synthetic``
    GAN style.  Both classes are rendered, photographed (noise + JPEG) and resized through a
    half-resolution bottleneck; reals are upsampled with a smooth bicubic filter, fakes get
    in addition the period-2 residue of an unbalanced transposed-convolution kernel plus a
    faint fixed high-frequency pattern (the "generator fingerprint"), applied only inside the
    head region.  Invisible to the eye at the default strength but clear as spectral peaks at
    the Nyquist frequencies of the 2-D FFT.  Real:fake is 1:1 (``n_fake = n // 2``).

Every fake gets a ground-truth mask (``<out>/masks/<split>/fake/<name>.png``, L uint8, 255 inside
the manipulated region), ``<out>/groups.csv`` lists ``path,label,group,split`` and splits are
identity-disjoint.  Output is byte-for-byte deterministic given the seed, and the same on every x86-64
CPU: the renderer's transcendental functions are computed with IEEE-exact operations only (numpy's own
are SIMD kernels chosen per CPU; see ``_exp``), and tests/test_demo.py pins the hashes of a few images.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from .io import atomic_path, write_csv

__all__ = [
    "DEMO_KINDS",
    "DemoOptions",
    "generate_dataset",
    "make_identity",
    "render_face",
    "render_swap",
    "render_synthetic",
    "nyquist_peak_score",
]

DEMO_KINDS = ("fakes", "synthetic")
SPLITS = ("train", "val", "test")
_KIND_CODE = {"fakes": 1, "synthetic": 2}
_IMAGES_PER_IDENTITY = 3

_SKIN_LIGHT = np.array([252.0, 224.0, 200.0])
_SKIN_MID = np.array([205.0, 150.0, 110.0])
_SKIN_DARK = np.array([92.0, 58.0, 40.0])
_HAIR = np.array([
    [22, 18, 16], [48, 32, 24], [85, 55, 35], [125, 85, 50], [185, 145, 90],
    [220, 190, 130], [150, 65, 30], [135, 130, 128], [205, 200, 195],
], dtype=float)
_EYES = np.array([
    [70, 42, 22], [105, 65, 30], [55, 95, 155], [75, 125, 150], [70, 115, 75],
    [115, 118, 120], [125, 95, 45],
], dtype=float)
_HAIR_STYLES = ("short", "long", "bob", "buzz", "volume", "bald")


# ----------------------------------------------------------------------------- CPU-independent maths
# numpy runs exp, sin, cos, tanh, arctan2 and power through SIMD kernels picked for the CPU at run time
# (AVX-512, AVX2, SSE, NEON ...) whose results differ in the last bits. The renderer amplifies such a bit
# (coverage is (0.5 - d) / px), rounding to uint8 turns it into a grey level and the JPEG round trip spreads it
# over a block: other images on another CPU. These replacements use only +, -, *, / and sqrt, which IEEE 754
# rounds correctly on every CPU, one numpy call per operation (no fused multiply-add), so every CPU computes
# the same bits. Accurate to ~1e-15 (tests/test_demo.py compares them with numpy); float32 in, float32 out, a
# float for a float. (They stand in for ``math.sin`` and ``math.cos`` too: libm differs between systems.)
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10  # ln 2 = HI + LO, HI with 32 bits
_PIO2_HI, _PIO2_LO = 1.57079632673412561417e+00, 6.07710050650619224932e-11  # pi/2 likewise (33 bits)
_EXP_TAYLOR = [1.0 / math.factorial(n) for n in range(13, -1, -1)]  # |r| <= ln2/2: error < 1e-17
_SIN_TAYLOR = [(-1.0) ** n / math.factorial(2 * n + 1) for n in range(7, -1, -1)]  # |r| <= pi/4: < 1e-16
_COS_TAYLOR = [(-1.0) ** n / math.factorial(2 * n) for n in range(8, -1, -1)]
_ATAN_SERIES = [(-1.0) ** n / (2 * n + 1) for n in range(11, -1, -1)]  # |z| <= 0.2: < 1e-18


def _horner(t: np.ndarray, coeffs: list[float]) -> np.ndarray:
    p = np.full_like(t, coeffs[0])
    for c in coeffs[1:]:
        p = p * t + c
    return p


def _f64(x) -> tuple[np.ndarray, type]:
    x = np.asarray(x)
    return x.astype(np.float64), (np.float32 if x.dtype == np.float32 else np.float64)


def _back(a: np.ndarray, dtype: type):
    """``a`` as ``dtype``; a plain float for a scalar (a 0-d array would turn float32 maths into float64)."""
    a = a.astype(dtype)
    return a.item() if a.ndim == 0 else a


def _exp(x) -> np.ndarray:
    """exp(x), the same bits on every CPU: x = k ln2 + r, Taylor series of exp(r), times 2**k."""
    x, dtype = _f64(x)
    x = np.clip(x, -700.0, 700.0)
    k = np.rint(x * 1.4426950408889634)  # 1 / ln 2
    r = (x - k * _LN2_HI) - k * _LN2_LO
    return _back(np.ldexp(_horner(r, _EXP_TAYLOR), k.astype(np.int32)), dtype)


def _sin_cos_quadrant(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sin r, cos r, quadrant k mod 4) with x = k pi/2 + r, |r| <= pi/4 (exact reduction for |x| < 1e5)."""
    k = np.rint(x * (2.0 / math.pi))
    r = (x - k * _PIO2_HI) - k * _PIO2_LO
    r2 = r * r
    return r * _horner(r2, _SIN_TAYLOR), _horner(r2, _COS_TAYLOR), np.mod(k, 4.0)


def _sin(x) -> np.ndarray:
    """sin(x), the same bits on every CPU."""
    x, dtype = _f64(x)
    s, c, q = _sin_cos_quadrant(x)
    return _back(np.select([q == 0, q == 1, q == 2], [s, c, -s], -c), dtype)


def _cos(x) -> np.ndarray:
    """cos(x), the same bits on every CPU."""
    x, dtype = _f64(x)
    s, c, q = _sin_cos_quadrant(x)
    return _back(np.select([q == 0, q == 1, q == 2], [c, -s, -c], s), dtype)


def _tanh(x) -> np.ndarray:
    """tanh(x) = sign(x) (1 - e) / (1 + e) with e = exp(-2|x|), the same bits on every CPU."""
    x, dtype = _f64(x)
    e = _exp(-2.0 * np.abs(x))
    return _back(np.copysign((1.0 - e) / (1.0 + e), x), dtype)


def _atan2(y, x) -> np.ndarray:
    """arctan2(y, x) in [-pi, pi], the same bits on every CPU: atan of min/max(|x|, |y|) in [0, 1], moved to
    [-tan(pi/8), tan(pi/8)] (atan t = pi/4 + atan((t - 1) / (t + 1))), halved (atan z = 2 atan(z / (1 +
    sqrt(1 + z^2)))) to |z| <= 0.2 for the series, then put in its octant."""
    (y, dtype), (x, _) = _f64(y), _f64(x)
    ax, ay = np.abs(x), np.abs(y)
    big, small = np.maximum(ax, ay), np.minimum(ax, ay)
    t = np.divide(small, big, out=np.zeros_like(big), where=big > 0)
    high = t > 0.41421356237309503  # tan(pi/8)
    t = np.where(high, (t - 1.0) / (t + 1.0), t)
    z = t / (1.0 + np.sqrt(1.0 + t * t))
    a = 2.0 * z * _horner(z * z, _ATAN_SERIES) + np.where(high, math.pi / 4, 0.0)
    a = np.where(ay > ax, math.pi / 2 - a, a)
    a = np.where(x < 0, math.pi - a, a)
    return _back(np.copysign(a, y), dtype)

# ----------------------------------------------------------------------------- helpers
def _rng_for(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def _soft(d: np.ndarray, px: float) -> np.ndarray:
    """Anti-aliased coverage of the region ``d < 0`` (d: signed distance, px: pixel size)."""
    return np.clip(0.5 - d / px, 0.0, 1.0)


def _ellipse(x, y, cx, cy, a, b, px):
    r = np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2)
    return _soft((r - 1.0) * min(a, b), px)


def _col(c) -> np.ndarray:
    """A colour as a float32 (3, 1, 1) array, broadcastable over channel-first images."""
    return np.asarray(c, dtype=np.float32).reshape(3, 1, 1)


def _over(img: np.ndarray, alpha: np.ndarray, colour) -> None:
    """In-place alpha compositing of ``colour`` ((3,1,1) or 3xHxW) onto the 3xHxW ``img``.

    Rendering is channel-first: broadcasting the alpha over the leading channel axis is
    an order of magnitude faster than over a trailing axis of length 3."""
    img -= colour
    img *= 1.0 - alpha
    img += colour


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 1) -> np.ndarray:
    """Smooth random field (channels x size x size), ~N(0,1) per cell, bicubically upsampled."""
    low = rng.standard_normal((channels, cells, cells)).astype(np.float32)
    out = [np.asarray(Image.fromarray(c, mode="F").resize((size, size), Image.BICUBIC)) for c in low]
    return np.stack(out, axis=0)


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic (anti-aliased) resize of a float HxWx3 image to (h, w)."""
    h, w = size
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c], dtype=np.float32), mode="F")
                        .resize((w, h), Image.BICUBIC)) for c in range(img.shape[2])]
    return np.stack(chans, axis=-1).astype(np.float64)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """In-memory JPEG round trip of an HxWx3 image (float or uint8) -> uint8."""
    arr = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _pick(rng: np.random.Generator, table: np.ndarray, jitter: float) -> list[float]:
    c = table[rng.integers(len(table))] * rng.uniform(1 - jitter, 1 + jitter, 3)
    return [float(v) for v in np.clip(c, 0, 255)]


# ----------------------------------------------------------------------------- sampling
def make_identity(rng: np.random.Generator) -> dict:
    """Draw the fixed attributes of one identity (plain floats/ints, JSON-friendly)."""
    t = rng.uniform(0.0, 1.0)
    if t < 0.5:
        skin = _SKIN_LIGHT * (1 - 2 * t) + _SKIN_MID * 2 * t
    else:
        skin = _SKIN_MID * (2 - 2 * t) + _SKIN_DARK * (2 * t - 1)
    skin = np.clip(skin * rng.uniform(0.95, 1.05, 3), 0, 255)
    hair_i = int(rng.integers(len(_HAIR)))
    hair = np.clip(_HAIR[hair_i] * rng.uniform(0.9, 1.1, 3), 0, 255)
    lips = np.clip(skin * np.array([0.86, 0.6, 0.6]) + np.array([25.0, 0.0, 5.0]) * rng.uniform(0.5, 1.5), 0, 255)
    head_w = rng.uniform(0.5, 0.62)
    head_h = head_w * rng.uniform(1.22, 1.42)
    eye_y = rng.uniform(-0.1, 0.02) * head_h
    return {
        "head_w": float(head_w),
        "head_h": float(head_h),
        "jaw": float(rng.uniform(0.0, 0.3)),
        "skin": [float(v) for v in skin],
        "blush": float(rng.uniform(0.0, 0.25)),
        "hair": [float(v) for v in hair],
        "hair_style": _HAIR_STYLES[int(rng.integers(len(_HAIR_STYLES)))],
        "hairline": float(rng.uniform(0.42, 0.62)),
        "hair_volume": float(rng.uniform(1.03, 1.12)),
        "hair_freq": float(rng.uniform(25.0, 50.0)),
        "eye_colour": _pick(rng, _EYES, 0.12),
        "eye_sep": float(head_w * rng.uniform(0.36, 0.46)),
        "eye_y": float(eye_y),
        "eye_w": float(head_w * rng.uniform(0.17, 0.22)),
        "eye_h": float(head_w * rng.uniform(0.08, 0.11)),
        "iris": float(rng.uniform(0.8, 1.0)),
        "brow_dy": float(head_h * rng.uniform(0.12, 0.17)),
        "brow_thick": float(head_w * rng.uniform(0.04, 0.085)),
        "brow_tilt": float(rng.uniform(-0.25, 0.2)),
        "brow_arch": float(head_w * rng.uniform(0.0, 0.06)),
        "brow_colour": [float(v) for v in hair * rng.uniform(0.55, 0.85)],
        "nose_y": float(eye_y + head_h * rng.uniform(0.3, 0.4)),
        "nose_w": float(head_w * rng.uniform(0.11, 0.16)),
        "mouth_dy": float(head_h * rng.uniform(0.17, 0.24)),
        "mouth_w": float(head_w * rng.uniform(0.28, 0.4)),
        "lip_h": float(head_w * rng.uniform(0.07, 0.12)),
        "smile": float(head_w * rng.uniform(-0.02, 0.08)),
        "lips": [float(v) for v in lips],
        "beard": float(rng.uniform(0.55, 0.85) if rng.uniform() < 0.18 else 0.0),
        "glasses": bool(rng.uniform() < 0.15),
        "glasses_colour": _pick(rng, np.array([[20, 20, 20], [90, 50, 25], [150, 150, 160]], float), 0.1),
        "clothes": [float(v) for v in rng.uniform(20, 230, 3)],
    }


def _sample_pose(rng: np.random.Generator) -> dict:
    return {
        "cx": float(rng.uniform(-0.08, 0.08)),
        "cy": float(rng.uniform(-0.04, 0.08)),
        "scale": float(rng.uniform(0.72, 0.95)),
        "roll": float(rng.uniform(-0.14, 0.14)),
        "yaw": float(rng.uniform(-1.0, 1.0)),
        "gaze": float(rng.uniform(-0.3, 0.3)),
    }


def _sample_scene(rng: np.random.Generator) -> dict:
    ang = rng.uniform(0, 2 * math.pi)
    return {
        "bg_type": int(rng.integers(4)),
        "bg_a": [float(v) for v in rng.uniform(20, 235, 3)],
        "bg_b": [float(v) for v in rng.uniform(20, 235, 3)],
        "bg_angle": float(rng.uniform(0, 2 * math.pi)),
        "light": [float(_cos(ang) * rng.uniform(0.2, 0.8)), float(_sin(ang) * rng.uniform(0.2, 0.8))],
        "ambient": float(rng.uniform(0.45, 0.7)),
        "gradient": [float(v) for v in rng.uniform(-0.12, 0.12, 2)],
        "wb": [float(v) for v in rng.uniform(0.92, 1.08, 3)],
        "exposure": float(rng.uniform(0.85, 1.1)),
        "vignette": float(rng.uniform(0.0, 0.25)),
        "noise": float(rng.uniform(1.0, 4.0)),
        "jpeg": int(rng.integers(60, 96)),
    }


# ----------------------------------------------------------------------------- rendering
def _grid(size: int, pose: dict):
    c = ((np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    u, v = np.meshgrid(c, c)
    du, dv = (u - pose["cx"]) / pose["scale"], (v - pose["cy"]) / pose["scale"]
    cr, sr = _cos(pose["roll"]), _sin(pose["roll"])
    x = cr * du + sr * dv
    y = -sr * du + cr * dv
    return u, v, x, y, 2.0 / size / pose["scale"]


def _background(rng, size, scene, u, v):
    a, b = _col(scene["bg_a"]), _col(scene["bg_b"])
    ca, sa = _cos(scene["bg_angle"]), _sin(scene["bg_angle"])
    t = np.clip(0.5 + 0.5 * (u * ca + v * sa), 0, 1)
    img = a * (1 - t) + b * t
    kind = scene["bg_type"]
    if kind == 1:  # blotchy painted backdrop
        img = img + 28.0 * _smooth_noise(rng, size, int(rng.integers(3, 7)), 3)
    elif kind == 2:  # panelled wall / stripes
        period = rng.uniform(0.15, 0.5)
        phase = rng.uniform(0, 2 * math.pi)
        s = _sin((u * sa - v * ca) * 2 * math.pi / period + phase)
        img = img * (1.0 + 0.1 * _tanh(3 * s))
    elif kind == 3:  # out-of-focus lights
        for _ in range(int(rng.integers(4, 9))):
            cx, cy, r = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.08, 0.25)
            blob = _exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * r * r))
            img = img + _col(rng.uniform(20, 60) * rng.uniform(0.6, 1.0, 3)) * blob
    img = img + 4.0 * _smooth_noise(rng, size, max(8, size // 6), 1)
    return img.astype(np.float32)


class _Canvas:
    """The picture being drawn: a channel-first float32 image (``img``, the scene's background to start
    with) over image coordinates ``u, v`` in [-1, 1] and face-local coordinates ``x, y`` (the pose undone);
    ``px`` is one pixel in face-local units.

    Small features are computed only inside their bounding box (``box``), which keeps a 128 px render
    at a few milliseconds.
    """

    def __init__(self, size: int, pose: dict, scene: dict, rng: np.random.Generator):
        self.size, self.pose = size, pose
        self.u, self.v, self.x, self.y, self.px = _grid(size, pose)
        self.img = _background(rng, size, scene, self.u, self.v)

    def box(self, x0, x1, y0, y1):
        """Pixel slices covering the face-local rectangle [x0,x1]x[y0,y1] (None when off-image)."""
        pose, size = self.pose, self.size
        cr, sr, sc = _cos(pose["roll"]), _sin(pose["roll"]), pose["scale"]
        xs = np.array([x0, x1, x0, x1])
        ys = np.array([y0, y0, y1, y1])
        cu = pose["cx"] + sc * (cr * xs - sr * ys)
        cv = pose["cy"] + sc * (sr * xs + cr * ys)
        j0 = max(int(math.floor((cu.min() + 1) / 2 * size)) - 2, 0)
        j1 = min(int(math.ceil((cu.max() + 1) / 2 * size)) + 2, size)
        i0 = max(int(math.floor((cv.min() + 1) / 2 * size)) - 2, 0)
        i1 = min(int(math.ceil((cv.max() + 1) / 2 * size)) + 2, size)
        if j1 <= j0 or i1 <= i0:
            return None
        return (slice(i0, i1), slice(j0, j1))

    def at(self, sl):
        """Channel-first view of the image in a pixel box."""
        return self.img[(slice(None),) + sl]


@dataclass
class _Face:
    """Where an identity's features sit under a pose (face-local units), and its skin and hair colours."""

    hw: float  # head half-width
    hh: float  # head half-height
    yaw: float
    fx: float  # horizontal shift of the features when the head turns
    ey: float  # eye line
    ew: float
    eh: float
    ny: float  # nose tip
    nw: float
    my: float  # mouth line
    skin: np.ndarray
    hair: np.ndarray

    @classmethod
    def of(cls, idt: dict, pose: dict) -> "_Face":
        hw, ny = idt["head_w"], idt["nose_y"]
        return cls(hw=hw, hh=idt["head_h"], yaw=pose["yaw"], fx=0.09 * pose["yaw"] * hw, ey=idt["eye_y"],
                   ew=idt["eye_w"], eh=idt["eye_h"], ny=ny, nw=idt["nose_w"], my=ny + idt["mouth_dy"],
                   skin=_col(idt["skin"]), hair=_col(idt["hair"]))


def _head_shape(c: _Canvas, f: _Face, idt: dict) -> np.ndarray:
    """Coverage of the head: an ellipse narrowing towards the chin."""
    wy = 1.0 - idt["jaw"] * np.clip(c.y / f.hh, 0, 1) ** 2
    r_head = np.sqrt((c.x / (f.hw * wy)) ** 2 + (c.y / f.hh) ** 2)
    return _soft((r_head - 1.0) * f.hw, c.px)


def _hair_texture(c: _Canvas, f: _Face, idt: dict, rng: np.random.Generator) -> np.ndarray:
    """The hair colour over the whole image, with strands radiating from the crown."""
    theta = _atan2(c.x, c.y + 0.35 * f.hh)
    strands = _sin(idt["hair_freq"] * theta + 2.5 * _smooth_noise(rng, c.size, 5)[0])
    return f.hair * (1.0 + 0.12 * strands + 0.07 * _smooth_noise(rng, c.size, max(8, c.size // 8))[0])


def _draw_hair_behind(c: _Canvas, f: _Face, style: str, hair_img: np.ndarray) -> None:
    x, y, px, hw, hh = c.x, c.y, c.px, f.hw, f.hh
    if style == "long":
        back = _ellipse(x, y, 0.0, 0.2 * hh, hw * 1.25, hh * 1.25, px) * _soft(y - 1.35 * hh, px)
    elif style == "bob":
        back = _ellipse(x, y, 0.0, 0.0, hw * 1.22, hh * 1.1, px) * _soft(y - 0.45 * hh, px)
    elif style == "volume":
        back = _ellipse(x, y, 0.0, -0.25 * hh, hw * 1.45, hh * 1.05, px)
    else:
        return
    _over(c.img, back, hair_img * 0.8)


def _draw_neck_and_clothes(c: _Canvas, f: _Face, idt: dict, rng: np.random.Generator) -> np.ndarray:
    """The neck and the clothes; returns the neck's coverage (it is lit with the head)."""
    x, y, px, hw, hh = c.x, c.y, c.px, f.hw, f.hh
    neck = _soft(np.abs(x) - 0.45 * hw, px) * _soft(0.4 * hh - y, px)
    _over(c.img, neck, f.skin * 0.78)
    cy0 = hh * 1.55
    sl = c.box(-2.4 * hw, 2.4 * hw, cy0 - 0.25, 4.0)
    if sl is not None:
        xs, ys = x[sl], y[sl]
        clothes = np.maximum(_ellipse(xs, ys, 0.0, cy0 + 0.55, 2.3 * hw, 0.75, px),
                             _soft(cy0 + 0.55 - ys, px) * _soft(np.abs(xs) - 2.3 * hw, px))
        clothes = clothes * (1 - _ellipse(xs, ys, 0.0, cy0 - 0.12, 0.45 * hw, 0.3 * hh, px))
        cloth_c = _col(idt["clothes"]) * (1 + 0.05 * _smooth_noise(rng, c.size, 10)[0][sl])
        _over(c.at(sl), clothes, cloth_c)
    return neck


def _draw_ears(c: _Canvas, f: _Face) -> None:
    hw, hh = f.hw, f.hh
    for s in (-1.0, 1.0):
        ear_x = s * hw * 0.97 - 0.05 * f.yaw * hw
        ear_y = f.ey + 0.12 * hh
        sl = c.box(ear_x - 0.17 * hw, ear_x + 0.17 * hw, ear_y - 0.18 * hh, ear_y + 0.18 * hh)
        if sl is None:
            continue
        xs, ys = c.x[sl], c.y[sl]
        _over(c.at(sl), _ellipse(xs, ys, ear_x, ear_y, hw * 0.16, hh * 0.17, c.px), f.skin * 0.9)
        _over(c.at(sl), 0.5 * _ellipse(xs, ys, ear_x, ear_y, hw * 0.08, hh * 0.1, c.px), f.skin * 0.7)


def _draw_skin(c: _Canvas, f: _Face, idt: dict, head: np.ndarray, rng: np.random.Generator) -> None:
    """The head with a little skin texture, and the blush on the cheeks."""
    skin_img = f.skin * (1.0 + 0.025 * _smooth_noise(rng, c.size, max(8, c.size // 5)))
    _over(c.img, head, skin_img)
    for s in (-1.0, 1.0):
        bx = s * idt["eye_sep"] * 1.1 + f.fx
        sl = c.box(bx - 0.5 * f.hw, bx + 0.5 * f.hw, f.ny - 0.3 * f.hh, f.ny + 0.3 * f.hh)
        if sl is None or idt["blush"] <= 0:
            continue
        blush = _exp(-(((c.x[sl] - bx) / (0.2 * f.hw)) ** 2 + ((c.y[sl] - f.ny) / (0.12 * f.hh)) ** 2))
        _over(c.at(sl), idt["blush"] * blush * head[sl], _col([215.0, 90.0, 90.0]))


def _draw_beard(c: _Canvas, f: _Face, idt: dict, head: np.ndarray, hair_img: np.ndarray,
                rng: np.random.Generator) -> None:
    if idt["beard"] <= 0:
        return
    sl = c.box(-f.hw, f.hw, f.ny - 0.1 * f.hh, f.hh)
    if sl is None:
        return
    xs, ys, px = c.x[sl], c.y[sl], c.px
    beard = head[sl] * _soft(f.ny + 0.05 * f.hh - ys, 3 * px) * _soft(np.abs(xs - f.fx) - f.hw * 0.95, px)
    beard = beard * (1.0 - 0.8 * _ellipse(xs, ys, f.fx, f.ny + 0.04 * f.hh, f.nw * 2.0, 0.05 * f.hh, 3 * px))
    density = np.clip(0.8 + 0.4 * _smooth_noise(rng, c.size, max(8, c.size // 4))[0][sl], 0, 1)
    _over(c.at(sl), idt["beard"] * beard * density, hair_img[(slice(None),) + sl] * 0.9)


def _draw_eye(c: _Canvas, f: _Face, idt: dict, ex: float, gaze: float) -> None:
    """One eye centred at face-local ``ex``: socket shadow, sclera, iris, pupil, highlight and lids."""
    ew, eh, ey, px, skin = f.ew, f.eh, f.ey, c.px, f.skin
    sl = c.box(ex - 1.3 * ew, ex + 1.3 * ew, ey - 1.5 * eh - 0.3 * eh, ey + 1.5 * eh)
    if sl is None:
        return
    xs, ys = c.x[sl], c.y[sl]
    sub = c.at(sl)
    xe, ye = xs - ex, ys - ey
    almond = eh * (1.0 - 0.35 * (xe / ew) ** 2)
    r_eye = np.sqrt((xe / ew) ** 2 + (ye / np.maximum(almond, 1e-3)) ** 2)
    sclera = _soft((r_eye - 1.0) * eh, px)
    socket = _ellipse(xs, ys, ex, ey - 0.3 * eh, ew * 1.25, eh * 1.5, px)
    _over(sub, 0.35 * socket * (1 - sclera), skin * 0.75)
    _over(sub, sclera, _col([238.0, 234.0, 228.0]))
    ir = eh * idt["iris"]
    ix = ex + gaze * ew * 0.35
    rr = np.sqrt((xs - ix) ** 2 + ye ** 2)
    iris = _soft(rr - ir, px) * sclera
    _over(sub, iris, _col(idt["eye_colour"]) * (1.15 - 0.5 * np.clip(rr / ir, 0, 1)))
    _over(sub, _soft(rr - 0.45 * ir, px) * sclera, _col([12.0, 10.0, 10.0]))
    hl = _soft(np.sqrt((xs - ix + 0.3 * ir) ** 2 + (ye + 0.35 * ir) ** 2) - 0.22 * ir, px) * sclera
    _over(sub, 0.85 * hl, _col([255.0, 255.0, 255.0]))
    lid = _soft(np.abs(r_eye - 1.05) * eh - 0.09 * eh - 0.6 * px, px) * _soft(ye - 0.25 * eh, px)
    _over(sub, 0.9 * lid, _col([35.0, 22.0, 20.0]))
    low = _soft(np.abs(r_eye - 1.05) * eh - 0.03 * eh - 0.3 * px, px) * _soft(-ye, px)
    _over(sub, 0.3 * low, skin * 0.5)


def _draw_brow(c: _Canvas, f: _Face, idt: dict, ex: float, s: float) -> None:
    """The brow above the eye at ``ex``; ``s``: -1 left, 1 right (the tilt is mirrored)."""
    px = c.px
    bw = f.ew * 1.3
    by = f.ey - idt["brow_dy"]
    reach = idt["brow_arch"] + abs(idt["brow_tilt"]) * bw * 0.5 + idt["brow_thick"]
    sl = c.box(ex - bw - 0.02, ex + bw + 0.02, by - reach - 0.02, by + reach + 0.02)
    if sl is None:
        return
    xs, ys = c.x[sl], c.y[sl]
    xb = (xs - ex) * s
    yc = by - idt["brow_arch"] * (1 - (xb / bw) ** 2) - idt["brow_tilt"] * xb * 0.5
    thick = idt["brow_thick"] * (1.0 - 0.45 * np.clip((xb / bw + 1) / 2, 0, 1))
    brow = _soft(np.abs(ys - yc) - thick / 2, px) * _soft(np.abs(xb) - bw, 2 * px)
    _over(c.at(sl), 0.92 * brow, _col(idt["brow_colour"]))


def _draw_nose(c: _Canvas, f: _Face, scene: dict) -> None:
    """Shadowed bridge, tip, highlight and nostrils."""
    nx, nw, ny, px, skin = f.fx * 1.6, f.nw, f.ny, c.px, f.skin
    side = 1.0 if scene["light"][0] < 0 else -1.0  # shadow side of the nose bridge
    sl = c.box(nx - 2 * nw, nx + 2 * nw, f.ey - 0.05 * f.hh, ny + nw)
    if sl is None:
        return
    xs, ys = c.x[sl], c.y[sl]
    sub = c.at(sl)
    ridge = (_exp(-((xs - nx - side * nw * 0.55) / (nw * 0.35)) ** 2)
             * _soft(f.ey + 0.08 * f.hh - ys, 6 * px) * _soft(ys - ny, 3 * px))
    _over(sub, 0.45 * ridge, skin * 0.5)
    _over(sub, 0.5 * _ellipse(xs, ys, nx, ny + 0.2 * nw, nw * 1.1, nw * 0.45, 3 * px), skin * 0.55)
    _over(sub, 0.35 * _ellipse(xs, ys, nx - side * 0.15 * nw, ny - 0.25 * nw, nw * 0.45, nw * 0.35, 3 * px),
          np.minimum(skin * 1.2 + 20, 255))
    for s in (-1.0, 1.0):
        nostril = _ellipse(xs, ys, nx + s * nw * 0.5, ny + 0.15 * nw, nw * 0.28, nw * 0.16, px)
        _over(sub, 0.75 * nostril, skin * 0.35)


def _draw_mouth(c: _Canvas, f: _Face, idt: dict) -> None:
    """Lips (upper with a bow), the line between them and the shade of the chin."""
    mx, my, mw, lh, px = f.fx * 1.2, f.my, idt["mouth_w"], idt["lip_h"], c.px
    curve = abs(idt["smile"])
    sl = c.box(mx - 1.1 * mw, mx + 1.1 * mw, my - curve - lh - 0.02, my + curve + 2.2 * lh + 0.02)
    if sl is None:
        return
    xs, ys = c.x[sl], c.y[sl]
    sub = c.at(sl)
    xm = (xs - mx) / mw
    inside = np.clip(1 - xm ** 2, 0, 1)
    yl = my - idt["smile"] * xm ** 2
    bow = 1 - 0.25 * _exp(-(xm / 0.15) ** 2)
    upper = _soft(np.maximum(yl - ys - 0.8 * lh * np.sqrt(inside) * bow, ys - yl), px)
    lower = _soft(np.maximum(ys - yl - lh * np.sqrt(inside), yl - ys), px)
    lips = np.maximum(upper, lower) * _soft(np.abs(xm) - 1.0, px / mw)
    lip_c = _col(idt["lips"])
    _over(sub, lips, lip_c * (1.0 - 0.15 * upper))
    line = _soft(np.abs(ys - yl) - 0.5 * px, px) * _soft(np.abs(xm) - 1.02, px / mw)
    _over(sub, 0.85 * line, lip_c * 0.35)
    _over(sub, 0.25 * _ellipse(xs, ys, mx, yl + 1.6 * lh, mw * 0.5, lh * 0.5, 3 * px), f.skin * 0.7)  # chin shade


def _draw_hair_front(c: _Canvas, f: _Face, idt: dict, head: np.ndarray, hair_img: np.ndarray) -> np.ndarray:
    """The hair over the head (its shape by style); returns its coverage (it is lit with the head)."""
    x, y, px, hw, hh, ey = c.x, c.y, c.px, f.hw, f.hh, f.ey
    style = idt["hair_style"]
    yy = y / hh
    side = np.clip((np.abs(x) / hw - 0.6) / 0.3, 0, 1)
    hl = -idt["hairline"] + 0.1 * (x / hw) ** 2 + (ey / hh + 0.05 + idt["hairline"]) * side * np.sqrt(side)  # side**1.5
    if style == "bob":
        hl = -0.28 + 0.02 * _sin(x * 45.0) + (ey / hh + 0.3) * np.clip((np.abs(x) / hw - 0.65) / 0.3, 0, 1)
    vol = idt["hair_volume"]
    cap = _ellipse(x, y, 0.0, -0.04 * hh, hw * vol, hh * (vol - 0.02), px) * _soft((yy - hl) * hh, px)
    if style == "long":
        cap = np.maximum(cap, _ellipse(x, y, 0, 0.2 * hh, hw * 1.22, hh * 1.2, px)
                         * _soft(hw * 0.86 - np.abs(x), px) * _soft(y - 1.3 * hh, px))
    elif style == "bob":
        cap = np.maximum(cap, _ellipse(x, y, 0, 0.0, hw * 1.2, hh * 1.08, px)
                         * _soft(hw * 0.88 - np.abs(x), px) * _soft(y - 0.45 * hh, px))
    elif style == "volume":
        cap = np.maximum(cap, _ellipse(x, y, 0, -0.3 * hh, hw * 1.4, hh * 0.95, px) * _soft((yy + 0.45) * hh, px))
    elif style == "buzz":
        cap = cap * 0.55 * head
    elif style == "bald":
        cap = 0.6 * cap * _soft(hw * 0.75 - np.abs(x), px) * _soft(y + 0.15 * hh, px)  # fringe at the sides only
    _over(c.img, cap, hair_img)
    return cap


def _draw_glasses(c: _Canvas, f: _Face, idt: dict) -> None:
    if not idt["glasses"]:
        return
    ew, ey, fx, sep, px = f.ew, f.ey, f.fx, idt["eye_sep"], c.px
    gc = _col(idt["glasses_colour"])
    t = 0.044 * f.hw
    sl = c.box(fx - sep - 1.6 * ew, fx + sep + 1.6 * ew, ey - 1.25 * ew, ey + 1.25 * ew)
    if sl is None:
        return
    xs, ys = c.x[sl], c.y[sl]
    sub = c.at(sl)
    for s in (-1.0, 1.0):
        gx = s * sep + fx
        rg = np.sqrt(((xs - gx) / (ew * 1.45)) ** 2 + ((ys - ey) / (ew * 1.1)) ** 2)
        _over(sub, _soft(np.abs(rg - 1.0) * ew * 1.1 - t, px), gc)
        _over(sub, 0.08 * _soft((rg - 1.0) * ew, px), _col([255.0, 255.0, 255.0]))
    bridge = _soft(np.abs(ys - ey + 0.25 * ew) - t, px) * _soft(np.abs(xs - fx) - (sep - ew * 1.4), px)
    _over(sub, bridge, gc)


def _lit(c: _Canvas, f: _Face, scene: dict, head: np.ndarray, cap: np.ndarray, neck: np.ndarray) -> np.ndarray:
    """The image under the scene's light: lambertian shading of the head as a sphere, global gradient,
    white balance, vignette (a new array)."""
    x, y, u, v = c.x, c.y, c.u, c.v
    lx, ly = scene["light"]
    lz = math.sqrt(max(0.05, 1 - lx * lx - ly * ly))
    nxn = np.clip(x / (f.hw * 1.1), -1, 1)
    nyn = np.clip(y / (f.hh * 1.1), -1, 1)
    nz = np.sqrt(np.clip(1 - nxn ** 2 - nyn ** 2, 0, 1))
    amb = scene["ambient"]
    shade = amb + (1 - amb) * np.clip(nxn * lx + nyn * ly + nz * lz, 0, 1) / max(lz, 0.3)
    shade = np.minimum(shade, 1.25)
    fg = np.maximum(head, 0.7 * np.clip(cap + neck, 0, 1))
    light = 1.0 + fg * (shade - 1.0)
    light *= 1.0 + scene["gradient"][0] * u + scene["gradient"][1] * v
    light *= 1.0 - scene["vignette"] * (u * u + v * v) / 2
    return c.img * (light * scene["exposure"]) * _col(scene["wb"])


def _geometry(c: _Canvas, f: _Face, idt: dict, head: np.ndarray) -> dict:
    """What the fakes need of a render: the head's coverage, the face-local grid and the inner face
    (forehead above the brows to the chin below the lower lip, cheek to cheek) as an ellipse."""
    top = f.ey - idt["brow_dy"] - idt["brow_thick"] - 0.07 * f.hh
    bottom = min(f.my + idt["lip_h"] + 0.14 * f.hh, 0.8 * f.hh)
    return {
        "head": head,
        "x": c.x, "y": c.y, "px": c.px,
        "inner_center": (f.fx, 0.5 * (top + bottom)),
        "inner_axes": (min(idt["eye_sep"] + f.ew * 1.9, 0.8 * f.hw), 0.5 * (bottom - top)),
    }


def _render(identity: dict, pose: dict, scene: dict, size: int, rng: np.random.Generator):
    """Noise-free render; returns (float32 HxWx3 image in 0..255, geometry dict).

    Drawn back to front, one function per feature. The draws from ``rng`` follow this order: changing
    the order changes every demo image.
    """
    idt = identity
    c = _Canvas(size, pose, scene, rng)
    f = _Face.of(idt, pose)
    head = _head_shape(c, f, idt)
    hair_img = _hair_texture(c, f, idt, rng)
    _draw_hair_behind(c, f, idt["hair_style"], hair_img)
    neck = _draw_neck_and_clothes(c, f, idt, rng)
    _draw_ears(c, f)
    _draw_skin(c, f, idt, head, rng)
    _draw_beard(c, f, idt, head, hair_img, rng)
    for s in (-1.0, 1.0):
        ex = s * idt["eye_sep"] + f.fx
        _draw_eye(c, f, idt, ex, pose["gaze"])
        _draw_brow(c, f, idt, ex, s)
    _draw_nose(c, f, scene)
    _draw_mouth(c, f, idt)
    cap = _draw_hair_front(c, f, idt, head, hair_img)
    _draw_glasses(c, f, idt)
    img = _lit(c, f, scene, head, cap, neck)
    return np.ascontiguousarray(img.transpose(1, 2, 0), dtype=np.float32), _geometry(c, f, idt, head)


def _camera(img: np.ndarray, scene: dict, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise (signal dependent) + JPEG at the scene's quality -> uint8."""
    sig = scene["noise"] * (0.6 + 0.4 * np.sqrt(np.clip(img, 0, 255) / 255.0))
    noisy = img + rng.standard_normal(img.shape, dtype=np.float32) * sig
    return _jpeg(noisy, scene["jpeg"])


def render_face(rng: np.random.Generator, image_size: int, identity: dict | None = None,
                pose: dict | None = None, scene: dict | None = None, camera: bool = True) -> np.ndarray:
    """Render one face photo (HxWx3 uint8).  Missing identity/pose/scene are drawn from ``rng``.

    ``camera=True`` adds sensor noise and an in-memory JPEG round trip at the scene's quality.
    """
    identity = make_identity(rng) if identity is None else identity
    pose = _sample_pose(rng) if pose is None else pose
    scene = _sample_scene(rng) if scene is None else scene
    img, _ = _render(identity, pose, scene, image_size, rng)
    return _camera(img, scene, rng) if camera else _to_uint8(img)


# ----------------------------------------------------------------------------- fakes
def render_swap(rng: np.random.Generator, image_size: int, target: dict, source: dict,
                strength: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face-swap: paste the inner face of ``source`` onto a photo of ``target``.

    Returns ``(fake, mask, pristine)``: the fake image (uint8 HxWx3), the ground-truth mask
    (uint8 HxW, 255 where the blend weight >= 0.5) and the untouched target photo the fake was
    made from (what a real image at the same pose/scene looks like).
    """
    size = image_size
    pose, scene = _sample_pose(rng), _sample_scene(rng)
    tgt_clean, geom = _render(target, pose, scene, size, rng)
    pristine = _camera(tgt_clean, scene, rng)

    # the source is aligned to the target's pose (as a face-swap pipeline does) but lit,
    # white-balanced and photographed on its own
    src_pose = dict(pose)
    src_scene = _sample_scene(rng)
    src_scene["jpeg"] = int(rng.integers(55, 90))
    src_clean, _ = _render(source, src_pose, src_scene, size, rng)
    src = _camera(src_clean, src_scene, rng).astype(np.float64)

    # soft elliptical blend mask around brows..mouth of the target
    (icx, icy), (iax, iay) = geom["inner_center"], geom["inner_axes"]
    hard = (((geom["x"] - icx) / iax) ** 2 + ((geom["y"] - icy) / iay) ** 2 <= 1.0).astype(np.float64)
    sigma = rng.uniform(1.5, 3.0) * size / 128.0
    m = ndimage.gaussian_filter(hard, sigma, mode="constant")

    # partial colour transfer: source statistics moved most (not all) of the way to the target's
    pr = pristine.astype(np.float64)
    w = m[..., None]
    mu_t = (pr * w).sum((0, 1)) / w.sum()
    mu_s = (src * w).sum((0, 1)) / w.sum()
    keep = np.clip(strength * rng.uniform(0.2, 0.4), 0.0, 1.0)  # fraction of the mismatch left
    src = src + (1.0 - keep) * (mu_t - mu_s) + strength * rng.uniform(-6, 6, 3)

    # face-swap generators work at a lower resolution than the photo: the pasted face is
    # rendered small and upscaled, so it is softer than the skin around it
    low = max(8, int(round(size / (1.0 + strength * rng.uniform(0.25, 0.9)))))
    src_img = Image.fromarray(_to_uint8(src), mode="RGB")
    src = np.asarray(src_img.resize((low, low), Image.BILINEAR).resize((size, size), Image.BICUBIC)).astype(np.float64)

    # slight affine warp of the source (bicubic resampling blurs it a little)
    ang = math.radians(rng.uniform(-4, 4)) * strength
    sc = 1.0 + rng.uniform(-0.04, 0.04) * strength
    tx, ty = rng.uniform(-1.5, 1.5, 2) * strength * size / 128.0
    c = (size - 1) / 2.0
    ca, sa = _cos(ang) / sc, _sin(ang) / sc
    coeffs = (ca, -sa, c - ca * c + sa * c - tx, sa, ca, c - sa * c - ca * c - ty)
    warped = Image.fromarray(_to_uint8(src), mode="RGB").transform((size, size), Image.AFFINE, coeffs,
                                                                   resample=Image.BICUBIC)
    warped = np.asarray(warped).astype(np.float64)

    fake = pr * (1.0 - w) + warped * w
    fake = _jpeg(fake, int(rng.integers(70, 96)))  # re-compression of the composite
    mask = np.where(m >= 0.5, 255, 0).astype(np.uint8)
    return fake, mask, pristine


def _real_photo(rng: np.random.Generator, size: int, identity: dict) -> np.ndarray:
    pose, scene = _sample_pose(rng), _sample_scene(rng)
    img, _ = _render(identity, pose, scene, size, rng)
    photo = _camera(img, scene, rng)
    if rng.uniform() < 0.5:  # many real photos are re-saved too, so whole-image double JPEG is not a giveaway
        photo = _jpeg(photo, int(rng.integers(70, 96)))
    return photo


# ----------------------------------------------------------------------------- synthetic (GAN)
_BILINEAR_TAPS = np.array([0.25, 0.75, 0.75, 0.25])


def _fingerprint(seed: int, size: int) -> dict:
    """The 'generator': unbalanced transposed-conv taps + a fixed high-frequency pattern."""
    rng = _rng_for(seed, 7, 3)
    ex, ey = rng.uniform(0.6, 1.0, 2) * 0.008
    alt = np.array([1.0, -1.0, 1.0, -1.0]) / 2.0
    kx, ky = _BILINEAR_TAPS + ex * alt, _BILINEAR_TAPS + ey * alt
    delta = np.outer(ky, kx) - np.outer(_BILINEAR_TAPS, _BILINEAR_TAPS)
    c = np.arange(size, dtype=np.float64)
    jj, ii = np.meshgrid(c, c)
    pattern = np.zeros((size, size))
    for _ in range(3):
        f = rng.uniform(0.3, 0.47)
        th = rng.uniform(0, 2 * math.pi)
        pattern += _cos(2 * math.pi * f * (jj * _cos(th) + ii * _sin(th)) + rng.uniform(0, 2 * math.pi))
    pattern *= 0.6 / np.sqrt(3.0 / 2.0)  # ~0.6 grey levels RMS
    return {"delta": delta, "pattern": pattern[..., None] * rng.uniform(0.8, 1.2, 3)}


def _transposed_conv_residue(half: np.ndarray, delta: np.ndarray, size: int) -> np.ndarray:
    """Zero-insertion x2 upsampling convolved with the kernel imbalance: a period-2 residue."""
    h, w = half.shape[:2]
    z = np.zeros((2 * h, 2 * w, 3))
    z[::2, ::2] = half
    res = np.stack([ndimage.convolve(z[..., ch], delta, mode="nearest") for ch in range(3)], axis=-1)
    if res.shape[0] != size:
        res = np.pad(res, ((0, size - res.shape[0]), (0, size - res.shape[1]), (0, 0)), mode="reflect")
    return res


def render_synthetic(rng: np.random.Generator, image_size: int, identity: dict, fake: bool,
                     strength: float = 1.0, fingerprint: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One image of the ``synthetic`` kind; returns ``(image uint8 HxWx3, mask uint8 HxW)``.

    Both classes pass through the same half-resolution bicubic resize; fakes in addition get the
    generator fingerprint inside the head region (``mask`` = 255 there; all zeros for reals).
    """
    size = image_size
    fingerprint = _fingerprint(0, size) if fingerprint is None else fingerprint
    pose, scene = _sample_pose(rng), _sample_scene(rng)
    scene["jpeg"] = int(rng.integers(75, 98))
    clean, geom = _render(identity, pose, scene, size, rng)
    photo = _camera(clean, scene, rng).astype(np.float64)
    half = _resize(photo, (size // 2, size // 2))
    out = _resize(half, (size, size))
    region = geom["head"]
    if fake:
        fp = _transposed_conv_residue(half, fingerprint["delta"], size) + fingerprint["pattern"]
        out = out + strength * region[..., None] * fp
        mask = np.where(region >= 0.5, 255, 0).astype(np.uint8)
    else:
        mask = np.zeros((size, size), np.uint8)
    out = out + rng.standard_normal(out.shape) * rng.uniform(0.5, 1.2)  # light output noise, both classes
    return _to_uint8(out), mask


def nyquist_peak_score(img: np.ndarray) -> float:
    """Log ratio of spectral power at the Nyquist peaks (N/2,0), (0,N/2), (N/2,N/2) to the
    median power at high frequencies.  Large for images carrying a period-2 fingerprint."""
    g = np.asarray(img, dtype=np.float64)
    if g.ndim == 3:
        g = g.mean(axis=2)
    g = g - ndimage.uniform_filter(g, 5, mode="reflect")
    p = np.abs(np.fft.fftshift(np.fft.fft2(g))) ** 2
    h, w = p.shape
    fy = (np.arange(h) - h // 2)[:, None] / h
    fx = (np.arange(w) - w // 2)[None, :] / w
    peaks = []
    for py, px_ in ((0, w // 2), (h // 2, 0), (0, 0)):  # shifted coords of (N/2,0), (0,N/2), (N/2,N/2)
        peaks.append(p[max(py - 1, 0): py + 2, max(px_ - 1, 0): px_ + 2].mean())
    hf = p[np.sqrt(fx ** 2 + fy ** 2) > 0.25]
    return float(np.log(np.mean(peaks) + 1e-12) - np.log(np.median(hf) + 1e-12))


# ----------------------------------------------------------------------------- dataset
def _validate(kind, counts, image_size, strength):
    if kind not in DEMO_KINDS:
        raise ValueError(f"kind must be one of {DEMO_KINDS}, got {kind!r}")
    for name, n in counts.items():
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 2:
            raise ValueError(f"{name} must be an integer >= 2, got {n!r}")
    if not isinstance(image_size, (int, np.integer)) or isinstance(image_size, bool) or image_size < 32:
        raise ValueError(f"image_size must be an integer >= 32, got {image_size!r}")
    if not (isinstance(strength, (int, float)) and math.isfinite(strength) and strength >= 0):
        raise ValueError(f"strength must be a finite number >= 0, got {strength!r}")


def _plan(kind: str, counts: dict) -> list[dict]:
    """Deterministic list of images to make: split, label, name, identity (global id), donor."""
    plan = []
    gid0 = 0
    for si, split in enumerate(SPLITS):
        n = int(counts[f"n_{split}"])
        n_fake = max(1, n // 3) if kind == "fakes" else n // 2
        n_real = n - n_fake
        n_id = max(2, math.ceil(n / _IMAGES_PER_IDENTITY))
        for label, count in ((0, n_real), (1, n_fake)):
            for i in range(count):
                local = i % n_id
                plan.append({"split": split, "split_index": si, "label": label, "index": i,
                             "name": f"{i:05d}.png", "gid": gid0 + local, "n_id": n_id, "gid0": gid0})
        gid0 += n_id
    return plan


def _save_png(path: Path, arr: np.ndarray) -> None:
    mode = "RGB" if arr.ndim == 3 else "L"
    # zlib level 1: ~4x faster than the default on noisy images, ~10 % larger, still deterministic
    with atomic_path(path) as tmp:
        Image.fromarray(arr, mode=mode).save(tmp, format="PNG", compress_level=1)


@dataclass(frozen=True)
class DemoOptions:
    """How a demo dataset is drawn: ``image_size`` (px, >= 32), ``seed`` and the ``strength`` of the fakes' traces
    (>= 0; 1 the default)."""

    image_size: int = 128
    seed: int = 0
    strength: float = 1.0


def generate_dataset(out_dir, kind: str, n_train: int, n_val: int, n_test: int, options: DemoOptions | None = None,
                     progress: bool = True) -> list[dict]:
    """Write a demo dataset; n_* are total images per split (both classes; fakes 2:1 real:fake
    with ``n_fake = n // 3`` (at least 1), synthetic 1:1 with ``n_fake = n // 2``); ``options``: size, seed and
    strength (``DemoOptions``).

    Returns one record per image: ``{"path": "train/real/00012.png", "label": 0|1,
    "split": "train"|"val"|"test", "group": "id00003", "mask": "masks/train/fake/00004.png" or ""}``.
    Raises ValueError naming the argument for an unknown kind, n_* < 2, image_size < 32,
    negative strength.  Stale PNGs of an earlier run in the layout's folders are removed.
    """
    o = options or DemoOptions()
    counts = {"n_train": n_train, "n_val": n_val, "n_test": n_test}
    _validate(kind, counts, o.image_size, o.strength)
    seed = int(o.seed)
    size = int(o.image_size)
    strength = o.strength
    code = _KIND_CODE[kind]
    out = Path(out_dir)

    identities: dict[int, dict] = {}

    def identity(gid: int) -> dict:
        if gid not in identities:
            identities[gid] = make_identity(_rng_for(seed, code, 1, gid))
        return identities[gid]

    fingerprint = _fingerprint(seed, size) if kind == "synthetic" else None
    plan = _plan(kind, counts)
    records: list[dict] = []
    for item in tqdm(plan, desc=f"demo {kind}", unit="img", disable=not progress):
        rng = _rng_for(seed, code, 2, item["split_index"], item["label"], item["index"])
        cls = "fake" if item["label"] else "real"
        rel = f"{item['split']}/{cls}/{item['name']}"
        mask_rel = ""
        tgt = identity(item["gid"])
        if kind == "fakes":
            if item["label"]:
                # donor: another identity of the same split
                off = int(rng.integers(1, item["n_id"]))
                donor = item["gid0"] + (item["gid"] - item["gid0"] + off) % item["n_id"]
                img, mask, _ = render_swap(rng, size, tgt, identity(donor), strength)
            else:
                img, mask = _real_photo(rng, size, tgt), None
        else:
            img, mask = render_synthetic(rng, size, tgt, bool(item["label"]), strength, fingerprint)
            if not item["label"]:
                mask = None
        _save_png(out / rel, img)
        if mask is not None:
            mask_rel = f"masks/{item['split']}/fake/{item['name']}"
            _save_png(out / mask_rel, mask)
        records.append({"path": rel, "label": int(item["label"]), "split": item["split"],
                        "group": f"id{item['gid']:05d}", "mask": mask_rel})

    _remove_stale(out, records)
    write_csv(out / "groups.csv", ({**r, "label": "fake" if r["label"] else "real"} for r in records),
              ["path", "label", "group", "split"], lineterminator="\n", extrasaction="ignore")
    return records


def _remove_stale(out: Path, records: list[dict]) -> None:
    keep = {r["path"] for r in records} | {r["mask"] for r in records if r["mask"]}
    folders = [f"{s}/{c}" for s in SPLITS for c in ("real", "fake")] + [f"masks/{s}/fake" for s in SPLITS]
    for folder in folders:
        d = out / folder
        if d.is_dir():
            for p in sorted(d.glob("*.png")):
                if f"{folder}/{p.name}" not in keep:
                    p.unlink()
