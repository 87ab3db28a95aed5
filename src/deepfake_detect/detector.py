"""``Detector``: a checkpoint ready to score, the one object every non-training scoring path goes through
(the evaluate-roc-det and explain stages, ``deepfake-detect evaluate`` and ``predict``, the robustness panel).

Like timm's ``pretrained_cfg`` or torchvision's ``Weights.transforms()``, a detector carries what it takes to
use its weights: the input size and normalisation (``data.Preprocess``, exactly as training read files), the
test-time augmentation, the decision threshold and the rule that chose it, and an optional calibration of the
output. Load one from a checkpoint path or a shipped name::

    from deepfake_detect.detector import Detector

    det = Detector.load("generated")                # src/deepfake_detect/detectors/generated.pt + .json
    det = Detector.load("models/simplenet-fakes.pt", precision="fp32")
    p = det.score([np.asarray(Image.open("face.png").convert("RGB"))])   # p(fake), float64
    p, errors = det.score_paths(["a.png", "b.jpg"])   # NaN + {index: message} for files that do not decode
    det.is_fake(p)                                    # p > det.threshold

A shipped detector has a model card (``<name>.json``, ``"format": "deepfake-detect-card"``) beside its weights;
its ``threshold``, ``threshold_rule`` and ``calibration`` replace the checkpoint's. ``calibration`` (Platt
scaling) maps the model's p to ``sigmoid(a * logit(p) + b)``; the threshold is on that output.

Precision: ``fp32``, ``bf16`` (autocast around the forward pass) or ``auto``: bf16 on CUDA and on CPUs with
native bf16 instructions (AVX512-BF16 or AMX), where it is measured faster at the same AUC
(bench/inference_precision.py, docs/predict.md), fp32 elsewhere (emulated bf16 is slower than fp32).
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from . import score as _score
from .checkpoint import load_model
from .data import Preprocess
from .engine import predict, resolve_device
from .errors import UserError

SHIPPED = ("faceswap", "generated")  # the detectors `deepfake-detect predict` runs when no --model is given
SHIPPED_DIR = Path(__file__).resolve().parent / "detectors"  # <name>.pt + <name>.json, written by the release stage
CARD_FORMAT = "deepfake-detect-card"
PRECISIONS = ("auto", "fp32", "bf16")
LOGIT_EPS = 1e-6  # logit(p) of a calibration is taken on p clipped to [eps, 1 - eps]


class DetectorError(UserError, ValueError):
    """A detector that cannot be loaded or used as asked; the message names the file or option and the fix."""


def shipped_path(name: str) -> Path:
    """The weights of shipped detector ``name``: ``SHIPPED_DIR/<name>.pt`` (read at call time: tests move it)."""
    return SHIPPED_DIR / f"{name}.pt"


def native_bf16(device: torch.device | str) -> bool:
    """Does ``device`` run bf16 natively? CUDA: yes (autocast picks the kernels). CPU: when it has AVX512-BF16
    or AMX-BF16 (Linux /proc/cpuinfo flags; torch's ``get_cpu_capability`` reports AMX as ``AVX512_AMX``)."""
    device = torch.device(device)
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    if "AMX" in str(torch.backends.cpu.get_cpu_capability()).upper():
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: without a probe, fp32 is the safe guess
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device | str, source: str = "--precision") -> str:
    """``fp32`` or ``bf16``: ``auto`` is bf16 where ``native_bf16(device)``, else fp32; an unknown value is a
    DetectorError naming ``source``."""
    if precision not in PRECISIONS:
        raise DetectorError(f"{source}: unknown precision {precision!r} (expected one of {', '.join(PRECISIONS)})")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def calibrate(p: np.ndarray, calibration: dict | None) -> np.ndarray:
    """``p`` unchanged (no calibration), or Platt's ``sigmoid(a * logit(p) + b)`` with p clipped to
    [LOGIT_EPS, 1 - LOGIT_EPS]; NaN (an undecodable input) stays NaN."""
    p = np.asarray(p, dtype=np.float64)
    if not calibration:
        return p
    q = np.clip(p, LOGIT_EPS, 1 - LOGIT_EPS)
    z = float(calibration["a"]) * np.log(q / (1 - q)) + float(calibration["b"])
    return 1.0 / (1.0 + np.exp(-z))


def _check_calibration(cal: Any, source: str) -> dict | None:
    if cal is None:
        return None
    ok = (isinstance(cal, dict) and cal.get("method") == "platt"
          and all(isinstance(cal.get(k), (int, float)) and not isinstance(cal.get(k), bool) for k in "ab"))
    if not ok:
        raise DetectorError(f"{source}: 'calibration' must be null or {{\"method\": \"platt\", \"a\": number, "
                            f"\"b\": number}}, got {json.dumps(cal)[:80]}; fix the model card")
    return {"method": "platt", "a": float(cal["a"]), "b": float(cal["b"])}


def read_card(path: Path, required: bool = False) -> dict:
    """The model card at ``path`` (a dict with ``"format": "deepfake-detect-card"``), or {} when there is none
    (or, unless ``required``, when the JSON there is something else)."""
    if not path.is_file():
        if required:
            raise DetectorError(f"{path}: model card not found; make it with `dvc repro real/dvc.yaml:release`")
        return {}
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        if required:
            raise DetectorError(f"{path}: model card is not readable JSON ({e}); rebuild it with "
                                "`dvc repro real/dvc.yaml:release`") from e
        return {}
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        if required:
            raise DetectorError(f"{path}: not a model card (expected \"format\": \"{CARD_FORMAT}\")")
        return {}
    return card


def _locate(source: str | Path) -> tuple[Path, Path, str | None]:
    """(weights, card, shipped name or None) of a checkpoint path or a shipped name."""
    if isinstance(source, str) and source in SHIPPED:
        pt = shipped_path(source)
        card = pt.with_suffix(".json")
        for f in (pt, card):
            if not f.is_file():
                raise DetectorError(f"{f}: shipped detector '{source}' is not installed; make it with "
                                    "`dvc repro real/dvc.yaml:release`, or pass a checkpoint with --model")
        return pt, card, source
    pt = Path(source)
    return pt, pt.with_suffix(".json"), None


@dataclass(repr=False)
class Detector:
    """A checkpoint ready to score. Fields (read-only by convention; ``dataclasses.replace`` makes a variant):

    * ``model``: the torch module in eval mode on ``device`` (Grad-CAM and saliency use it directly);
      ``ckpt``: the raw checkpoint dict; ``path``: where it came from (None: built in memory).
    * ``name``: the shipped name (``faceswap``, ``generated``) or the run; ``run``, ``dataset``, ``domain``: what
      training recorded (``domain``: e.g. ``face_crops``, ``framing``; ``predict`` reads it).
    * ``image_size``, ``mean``, ``std``: the input ``data.Preprocess`` builds (resize to a square, then
      (x / 255 - mean) / std), exactly as training read its files.
    * ``tta``: the test-time augmentation scored with (``engine.TTA_MODES``; the checkpoint's unless overridden).
    * ``threshold``: fake when the output p > it; ``threshold_rule``: the rule that chose it on validation;
      ``calibration``: None or ``{"method": "platt", "a", "b"}`` (the output p is calibrated; ``calibrate``).
    * ``cam_layer``: the Grad-CAM layer; ``precision``: ``fp32`` or ``bf16`` (resolved); ``device``.
    * ``card``: the model card ({} without one); ``num_workers``: data-loader processes (-1: sized to the machine).
    """

    model: nn.Module
    ckpt: dict
    path: Path | None
    name: str
    run: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    tta: str
    threshold: float
    threshold_rule: str | None
    calibration: dict | None
    domain: dict | None
    dataset: str | None
    cam_layer: str
    precision: str
    device: torch.device
    card: dict = field(default_factory=dict)
    num_workers: int = -1
    channels_last: bool = False  # feed the model NHWC batches (training's validation: as it trained)

    # ------------------------------------------------------------------------- building
    @classmethod
    def load(cls, source: str | Path, device: str | torch.device = "auto", precision: str = "auto",
             tta: str = "checkpoint") -> "Detector":
        """A checkpoint path, or shipped name ``faceswap`` / ``generated`` (``shipped_path``; DetectorError naming
        the missing file and both remedies when absent). A checkpoint's sibling ``<stem>.json`` is its card when
        it says ``"format": "deepfake-detect-card"``. ``device``: auto | cpu | cuda; ``precision``: auto | fp32 |
        bf16 (``resolve_precision``); ``tta``: ``checkpoint`` (its own) or a mode of ``engine.TTA_MODES``."""
        pt, card_path, name = _locate(source)
        dev = device if isinstance(device, torch.device) else resolve_device(device, "--device")
        model, ckpt = load_model(pt, dev)
        card = read_card(card_path, required=name is not None)
        return cls.from_model(model, ckpt, pt, name=name, precision=precision, tta=tta, card=card)

    @classmethod
    def from_model(cls, model: nn.Module, ckpt: dict, path: str | Path | None = None, name: str | None = None,
                   precision: str = "fp32", tta: str = "checkpoint", card: dict | None = None,
                   channels_last: bool = False) -> "Detector":
        """A detector of a model already built (``checkpoint.load_model``, a model in training, or any module in
        tests) and its checkpoint dict (at least image_size, mean, std, threshold); the device is the model's.
        ``card``'s threshold, rule and calibration win."""
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        card = dict(card or {})
        source = str(path) if path is not None else f"checkpoint of run '{ckpt.get('run', '')}'"
        card_source = str(Path(path).with_suffix(".json")) if path is not None else "model card"
        threshold = float(card.get("threshold", ckpt["threshold"]))
        if not 0.0 <= threshold <= 1.0:
            raise DetectorError(f"{card_source}: 'threshold' must be in [0, 1], got {threshold}")
        rule = card.get("threshold_rule", (ckpt.get("metrics") or {}).get("threshold_rule"))
        cal = _check_calibration(card["calibration"] if "calibration" in card else ckpt.get("calibration"),
                                 card_source if "calibration" in card else source)
        return cls(model=model, ckpt=ckpt, path=None if path is None else Path(path),
                   name=name or card.get("name") or ckpt.get("run", ""), run=ckpt.get("run", ""),
                   image_size=int(ckpt["image_size"]), mean=tuple(ckpt["mean"]), std=tuple(ckpt["std"]),
                   tta=_score.resolve_tta(ckpt, tta, source), threshold=threshold, threshold_rule=rule,
                   calibration=cal, domain=ckpt.get("domain"), dataset=ckpt.get("dataset"),
                   cam_layer=ckpt.get("cam_layer", getattr(model, "cam_layer", "")),
                   precision=resolve_precision(precision, device), device=device, card=card,
                   channels_last=channels_last)

    def with_options(self, tta: str | None = None, precision: str | None = None,
                     num_workers: int | None = None) -> "Detector":
        """The same weights with another TTA, precision or loader worker count (the model is shared)."""
        return replace(self, tta=self.tta if tta is None else _score.resolve_tta(self.ckpt, tta),
                       precision=self.precision if precision is None else resolve_precision(precision, self.device),
                       num_workers=self.num_workers if num_workers is None else num_workers)

    # ------------------------------------------------------------------------- scoring
    def autocast(self):
        """The context of every forward pass: bf16 autocast, or nothing (fp32)."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def preprocess(self) -> Preprocess:
        """The transform of a decoded picture into the model's input (``data.Preprocess``)."""
        return Preprocess(self.image_size, self.mean, self.std)

    def score(self, images: Sequence[np.ndarray | Image.Image], batch_size: int = 64) -> np.ndarray:
        """p(fake) (float64, calibrated when the detector has a calibration) of in-memory pictures: uint8
        H x W x 3 arrays (RGB) or PIL images, resized and normalised as files are (``data.Preprocess``)."""
        prep = self.preprocess
        views = [prep.to_hwc(im.convert("RGB") if isinstance(im, Image.Image) else
                             Image.fromarray(np.asarray(im, dtype=np.uint8)).convert("RGB")) for im in images]
        if not views:
            return np.zeros(0)
        return self.score_views(np.stack(views), [f"image {i}" for i in range(len(views))], batch_size)

    def score_batches(self, loader, desc: str = "score", progress: bool = True,
                      normalise=None) -> tuple[np.ndarray, np.ndarray, float]:
        """The model's own softmax (N, 2), the labels and the mean cross-entropy over a loader of (x, y) batches
        (``normalise``: applied to each batch on the device), under the detector's precision and TTA, NOT
        calibrated: training's validation, on which the kept epoch and the threshold are chosen, and the loop
        under ``score_paths`` and ``score_views``."""
        with self.autocast():  # the one place the precision of scoring is decided
            return predict(self.model, loader, self.device, channels_last=self.channels_last, desc=desc,
                           progress=progress, normalise=normalise, tta=self.tta)

    def score_views(self, views: np.ndarray, names: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """p(fake) (calibrated) of views already at the model's size: uint8 (N, S, S, 3) from
        ``preprocess.to_hwc``; ``names`` say what each is, for an error."""
        return calibrate(_score.score_views(self, views, names, batch_size), self.calibration)

    def score_paths(self, paths: Sequence[str | Path], labels: Sequence[int] | None = None, batch_size: int = 64,
                    progress: bool = True, desc: str = "score", degrade=None) -> tuple[np.ndarray, dict[int, str]]:
        """p(fake) (calibrated) of image files, NaN where one does not decode, and {index: error message} of
        those. ``degrade``: applied to each decoded image before the resize (``degrade.Degradation``)."""
        p, errors = _score.score_paths(self, [str(p) for p in paths], None if labels is None else list(labels),
                                       batch_size, self.num_workers, progress, desc, degrade)
        return calibrate(p, self.calibration), errors

    def is_fake(self, p) -> np.ndarray:
        """The verdict at the threshold: fake where p > ``threshold`` (NaN: not fake)."""
        return np.asarray(p, dtype=np.float64) > self.threshold

    # ------------------------------------------------------------------------- describing
    @property
    def threshold_source(self) -> str:
        """Where ``threshold`` comes from, for summaries."""
        where = "model card" if "threshold" in self.card else "checkpoint"
        rule = f", rule '{self.threshold_rule}' on the validation split" if self.threshold_rule else ""
        return where + rule + (", on calibrated p" if self.calibration else "")

    def __repr__(self) -> str:
        cal = ", calibrated" if self.calibration else ""
        return (f"Detector({self.name!r}, arch={self.ckpt.get('arch')!r}, {self.image_size}px, tta={self.tta}, "
                f"threshold={self.threshold:.4g}{cal}, {self.precision} on {self.device})")


def load_shipped(device: str | torch.device = "auto", precision: str = "auto", tta: str = "checkpoint",
                 names: Sequence[str] = SHIPPED) -> list[Detector]:
    """Every shipped detector (``names``); DetectorError naming the first missing file and the remedies."""
    return [Detector.load(n, device, precision, tta) for n in names]

