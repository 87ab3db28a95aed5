"""Faces first: find each face in a picture and crop it the way the training images frame theirs.

The detector is MTCNN from ``facenet-pytorch==2.5.3``: plain PyTorch (no TensorFlow), CPU, and its three
weight files (P-, R- and O-Net, 2 MB together) ship inside the wheel, so nothing is downloaded. It gives a
box and a confidence per face; MTCNN's boxes run from the hairline to the chin.

A crop is a square around a face box: its side is ``scale`` times the box's longer side and its centre is
offset from the box centre by ``(ox, oy)`` box sides (``Framing``). Training records the framing of its own
images (``measure_framing``, median over a sample of the training split), so a face in a larger photo is cut
out with the margin the model learned from: FFHQ-style crops leave a margin around the box (scale ~1.4),
the DFDC crops cut inside it (scale ~0.7). A crop is kept inside the image (shifted, and no larger than the
image's shorter side) and then resized to the model's size like any training image.

An image that already is a face crop -- near-square, its largest face's crop covering at least half of
it -- is scored as it is (``regions``): the training and test images of every dataset here are such crops,
and they keep exactly the score they had without face detection.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
from PIL import Image

from .errors import UserError

DETECTOR = "MTCNN (facenet-pytorch 2.5.3)"
MIN_CONFIDENCE = 0.7  # O-Net's face probability, MTCNN's own last-stage threshold: no false positive on the 100 blurred
#                        backgrounds, and 96 % of the demo faces (0.9: 83 %) (bench/faces.py)
MIN_FACE = 20  # px at detection size: MTCNN's smallest pyramid level
DETECT_MAX_SIDE = 1024  # larger pictures are detected on a copy this size: faces under ~20 px there are too
#                         small for a 128-256 px model anyway, and the pyramid of a 12-megapixel photo is slow
WHOLE_FRACTION = 0.5  # an image whose largest face's crop covers this much of it is a face crop already
WHOLE_MAX_ASPECT = 1.2  # ... if it is near-square: squashing a portrait photo would distort the face
MAX_UPSCALE = 4.0  # a face whose crop a detector would have to enlarge more than this to its input size is "too
#                   small to judge": listed, not scored (40 px faces in 2000 px photos, cut to ~20-30 px and blown up
#                   to 224, were called fake 14 times in 20; the same faces at 256 px 3 times). For a 224 px detector:
#                   crops under 56 px; the training crops here are scored at 0.5-1.3x
FRAMING_SAMPLE = 32  # training images measure_framing looks at
FACE_CROPS_MIN = 0.8  # a training set is one of face crops when a face is found in this share of the sample


class FaceDetectorError(UserError, RuntimeError):
    """The face detector cannot be loaded; the message says how to install it or how to do without."""


@dataclass(frozen=True)
class Face:
    """One detection: ``box`` (x0, y0, x1, y1) in the picture's pixels (it may reach past the edges)."""

    box: tuple[float, float, float, float]
    confidence: float

    @property
    def side(self) -> float:
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


@dataclass(frozen=True)
class Framing:
    """How a crop frames a face box: side = ``scale`` x the box's longer side, centre = box centre +
    (``ox``, ``oy``) x that side."""

    scale: float = 1.35  # FFHQ's framing of MTCNN's box (bench/faces.py), used when a checkpoint records none
    ox: float = 0.0
    oy: float = -0.05

    @classmethod
    def of_checkpoint(cls, ckpt: Any, margin: float | None = None) -> "Framing":
        """The framing the checkpoint's training images had (``domain.framing`` of a ``checkpoint.Checkpoint``;
        not imported: the frame-faces stage runs this module alone), else the default; ``margin`` (``--face-margin``)
        replaces the scale by 1 + margin."""
        rec = ((ckpt.domain or {}).get("framing") or {})
        f = cls(**{k: float(rec[k]) for k in ("scale", "ox", "oy") if isinstance(rec.get(k), (int, float))})
        return f if margin is None else cls(1.0 + float(margin), f.ox, f.oy)


@dataclass(frozen=True)
class Region:
    """A part of a picture to score: ``face`` (1 = the largest), its detected ``box``, and ``crop``
    (left, top, right, bottom), the square cut out of the picture; ``whole``: the picture itself is scored."""

    face: int
    box: tuple[float, float, float, float] | None
    crop: tuple[int, int, int, int]
    whole: bool


class FaceFinder:
    """MTCNN, built on first use (so a Dataset holding one can be sent to loader workers): faces with
    confidence >= ``min_confidence``, largest first."""

    def __init__(self, min_confidence: float = MIN_CONFIDENCE, max_side: int = DETECT_MAX_SIDE):
        self.min_confidence, self.max_side = float(min_confidence), int(max_side)
        self._mtcnn = None

    def load(self):
        if self._mtcnn is None:
            try:
                from facenet_pytorch import MTCNN
            except ImportError as e:
                raise FaceDetectorError(
                    f"face detection needs facenet-pytorch ({e}): `pip install facenet-pytorch==2.5.3` "
                    "(see requirements.txt), or score whole images with --crop whole") from e
            self._mtcnn = MTCNN(keep_all=True, select_largest=True, post_process=False, min_face_size=MIN_FACE,
                                device="cpu")
        return self._mtcnn

    def __call__(self, im: Image.Image) -> list[Face]:
        import torch

        f = min(1.0, self.max_side / max(im.size))
        small = im if f == 1.0 else im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))),
                                              Image.BILINEAR)
        if min(small.size) < MIN_FACE:
            return []
        # one thread: MTCNN is hundreds of small convolutions that gain nothing from more, and lose much when
        # the cores are busy (2 loaded cores: 0.02 s per 128 px picture on one thread, 1.8 s on two)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                boxes, probs = self.load().detect(small.convert("RGB"))
        finally:
            torch.set_num_threads(threads)
        if boxes is None:
            return []
        # facenet-pytorch 2.5.3 returns object arrays under numpy 2: make them numbers
        boxes, probs = np.asarray(boxes, np.float64).reshape(-1, 4) / f, np.asarray(probs, np.float64).ravel()
        found = [Face(tuple(float(v) for v in b), float(p)) for b, p in zip(boxes, probs) if p >= self.min_confidence]
        return sorted(found, key=lambda face: -face.side)


def crop_square(face: Face, size: tuple[int, int], framing: Framing) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the square that frames ``face`` in a picture of ``size`` (W, H): no
    larger than the shorter side, shifted to lie inside the picture."""
    w, h = size
    x0, y0, x1, y1 = face.box
    side = int(round(min(framing.scale * face.side, w, h)))
    side = max(side, 1)
    cx, cy = (x0 + x1) / 2 + framing.ox * face.side, (y0 + y1) / 2 + framing.oy * face.side
    left = int(round(min(max(cx - side / 2, 0), w - side)))
    top = int(round(min(max(cy - side / 2, 0), h - side)))
    return left, top, left + side, top + side


def regions(size: tuple[int, int], found: list[Face], framing: Framing) -> list[Region]:
    """What to score in a picture of ``size`` with faces ``found`` (largest first): the whole picture when it
    is a face crop already (see the module doc), else one square crop per face; [] when no face was found."""
    if not found:
        return []
    w, h = size
    left, top, right, bottom = crop_square(found[0], size, framing)
    if max(w, h) <= WHOLE_MAX_ASPECT * min(w, h) and (right - left) * (bottom - top) >= WHOLE_FRACTION * w * h:
        return [Region(1, found[0].box, (0, 0, w, h), True)]
    return [Region(i + 1, f.box, crop_square(f, size, framing), False) for i, f in enumerate(found)]


def regions_per_detector(size: tuple[int, int], found: list[Face], framings: list[Framing]) -> list[list[Region]]:
    """What each of several detectors scores in a picture of ``size``, face by face: one list per face (largest
    first) of one ``Region`` per framing, so that every detector sees a face framed as its own training images
    were (``regions`` per framing), the faces found once. When the picture is a face crop already for any of them,
    it is one face (the largest), whole for those and cropped for the others; [] when no face was found."""
    per = [regions(size, found, f) for f in framings]
    if not found:
        return []
    if any(r[0].whole for r in per):
        return [[r[0] if r[0].whole else Region(1, found[0].box, crop_square(found[0], size, f), False)
                 for r, f in zip(per, framings)]]
    return [[r[i] for r in per] for i in range(len(found))]


def too_small(region: Region, image_size: int) -> bool:
    """A region too small to judge for a detector of ``image_size`` px: its crop (or whole picture) would be enlarged
    more than ``MAX_UPSCALE`` times."""
    left, top, right, bottom = region.crop
    return min(right - left, bottom - top) * MAX_UPSCALE < image_size


def clipped_box(box: tuple[float, float, float, float], size: tuple[int, int]) -> list[int]:
    """A detected box as integer pixels inside the picture (for reports)."""
    w, h = size
    x0, y0, x1, y1 = box
    return [int(round(min(max(v, 0), lim))) for v, lim in ((x0, w), (y0, h), (x1, w), (y1, h))]


def measure_framing(images: Iterable[Image.Image], detector: FaceFinder | None = None) -> dict:
    """How a set of training images frames its faces: ``n_checked``, ``n_with_face``, ``face_crops`` (a face in
    at least ``FACE_CROPS_MIN`` of them) and, when so, ``framing`` (median scale and offsets of the largest
    face, in the image squashed to a square as the model sees it)."""
    detector = detector or FaceFinder()
    scales, oxs, oys, n = [], [], [], 0
    for im in images:
        n += 1
        found = detector(im)
        if not found:
            continue
        x0, y0, x1, y1 = found[0].box
        w, h = im.size
        bw, bh = (x1 - x0) / w, (y1 - y0) / h  # in units of the squashed image
        side = max(bw, bh)
        scales.append(1.0 / side)
        oxs.append((0.5 - (x0 + x1) / 2 / w) / side)
        oys.append((0.5 - (y0 + y1) / 2 / h) / side)
    out = {"detector": DETECTOR, "n_checked": n, "n_with_face": len(scales),
           "face_crops": bool(n and len(scales) >= FACE_CROPS_MIN * n)}
    if out["face_crops"]:
        out["framing"] = {k: round(statistics.median(v), 4) for k, v in (("scale", scales), ("ox", oxs),
                                                                          ("oy", oys))}
    return out
