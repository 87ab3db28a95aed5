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

Precision: ``fp32``, ``bf16`` (autocast around the forward pass) or ``auto``: bf16 on CUDA, fp32 on a CPU, so
that the same photo gets the same answer on any CPU (bf16 moved single scores by up to 0.15 on real crops). The
evaluation stages keep their own choice (params ``evaluate-roc-det.precision``, ``stage_precision``): there ``auto``
is also bf16 on CPUs with native bf16 instructions (AVX512-BF16 or AMX), where it was measured AUC-neutral.

What ``score`` takes (``as_rgb``): uint8 H x W x 3 RGB arrays and PIL images; converted as image files are
(``data.load_rgb``): PIL modes L, LA, P, RGBA, CMYK, I;16, I ... to RGB (alpha over black, 16-bit scaled to 8);
2-D uint8 (grey), H x W x 1 and H x W x 4 (RGBA) uint8 arrays; uint16 arrays scaled to 8 bits. One array or image
is one picture; a 4-D uint8 array is a batch. Anything else (float, bool, empty, 1-D arrays, paths: use
``score_paths``) is a TypeError or ValueError of one line saying what to pass.

A model card is bound to its weights: it names the ``run`` and the ``weights_sha256`` of the ``.pt`` beside it
(the release stage writes both); a card without them, or for other weights, is refused (``check_card``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from . import score as _score
from .checkpoint import Checkpoint, load_model
from .data import Preprocess
from .engine import predict, resolve_device
from .errors import UserError

SHIPPED = ("faceswap", "generated")  # the detectors `deepfake-detect predict` runs when no --model is given
SHIPPED_DIR = Path(__file__).resolve().parent / "detectors"  # <name>.pt + <name>.json, written by the release stage
CARD_FORMAT = "deepfake-detect-card"
PRECISIONS = ("auto", "fp32", "bf16")
LOGIT_EPS = 1e-6  # logit(p) of a calibration is taken on p clipped to [eps, 1 - eps]
CAL_LIMIT = 100.0  # |a| and |b| of a Platt calibration: beyond this it pins p at 0 or 1 (fitted values are ~0.3-5)
REBUILD = "rerun the release stage (`dvc repro real/dvc.yaml:release`)"


class DetectorError(UserError, ValueError):
    """A detector that cannot be loaded or used as asked; the message names the file or option and the fix."""


class DetectorTypeError(DetectorError, TypeError):
    """An argument of the wrong kind (e.g. a path where a picture goes); the message says what to pass."""


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


def resolve_precision(precision: str, device: torch.device | str, source: str = "--precision",
                      cpu_bf16: bool = False) -> str:
    """``fp32`` or ``bf16``: ``auto`` is bf16 on CUDA, fp32 on a CPU (predict and the API: the same answer on
    every CPU); with ``cpu_bf16`` (the evaluation stages, ``stage_precision``) also bf16 on a CPU with native bf16.
    An unknown value is a DetectorError naming ``source``."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise DetectorError(f"{source}: unknown precision {precision!r} (expected one of {', '.join(PRECISIONS)})")
    if precision == "auto":
        if torch.device(device).type == "cuda":
            return "bf16"
        return "bf16" if cpu_bf16 and native_bf16(device) else "fp32"
    return precision


def stage_precision(precision: str, device: torch.device | str, source: str = "evaluate-roc-det.precision") -> str:
    """The precision of the evaluation stages (params ``evaluate-roc-det.precision``): ``auto`` is bf16 on CUDA and
    on CPUs with native bf16, where it was measured AUC-neutral; fp32 elsewhere."""
    return resolve_precision(precision, device, source, cpu_bf16=True)


def check_device(device: Any, source: str = "device") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` (or a torch.device) as a torch.device, or a DetectorError of one
    line: an unknown name, CUDA asked for on a machine without it, a GPU index it does not have."""
    if isinstance(device, torch.device):
        name = str(device)
    elif isinstance(device, str):
        name = device.strip()
    else:
        raise DetectorTypeError(f"{source}: must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {type(device).__name__}")
    if name == "auto":
        return resolve_device("auto", source)
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if name != "cpu" and m is None:
        raise DetectorError(f"{source}: unknown device {name!r} (expected auto, cpu, cuda or cuda:N)")
    if m is not None:
        if not torch.cuda.is_available():
            raise DetectorError(f"{source} is {name}, but this machine has no CUDA device (set it to auto or cpu)")
        if m[1] is not None and int(m[1]) >= torch.cuda.device_count():
            raise DetectorError(f"{source} is {name}, but this machine has {torch.cuda.device_count()} CUDA "
                                f"device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return torch.device(name)


def calibrate(p: np.ndarray, calibration: dict | None) -> np.ndarray:
    """``p`` unchanged (no calibration), or Platt's ``sigmoid(a * logit(p) + b)`` with p clipped to
    [LOGIT_EPS, 1 - LOGIT_EPS]; NaN (an undecodable input) stays NaN."""
    p = np.asarray(p, dtype=np.float64)
    if not calibration:
        return p
    q = np.clip(p, LOGIT_EPS, 1 - LOGIT_EPS)
    z = float(calibration["a"]) * np.log(q / (1 - q)) + float(calibration["b"])
    return 1.0 / (1.0 + np.exp(-z))


def _number(x: Any) -> bool:
    """A real number: int or float, not bool (True is 1 in Python, never a threshold), finite."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _shown_value(x: Any) -> str:
    try:
        return json.dumps(x)[:80]
    except (TypeError, ValueError):
        return repr(x)[:80]


def _check_calibration(cal: Any, source: str, fix: str = "fix the model card") -> dict | None:
    """None, or Platt's {"method": "platt", "a", "b"} with a finite slope 0 < a <= CAL_LIMIT (a <= 0 would invert
    or flatten every score) and a finite |b| <= CAL_LIMIT; else a DetectorError naming ``source`` and the key."""
    if cal is None:
        return None
    ok = isinstance(cal, dict) and cal.get("method") == "platt" and all(
        isinstance(cal.get(k), (int, float)) and not isinstance(cal.get(k), bool) for k in "ab")
    if not ok:
        raise DetectorError(f"{source}: 'calibration' must be null or {{\"method\": \"platt\", \"a\": number, "
                            f"\"b\": number}}, got {_shown_value(cal)}; {fix}")
    a, b = float(cal["a"]), float(cal["b"])
    if not (math.isfinite(a) and 0 < a <= CAL_LIMIT):
        raise DetectorError(f"{source}: 'calibration.a' (the Platt slope) must be a finite number in (0, "
                            f"{CAL_LIMIT:g}], got {_shown_value(cal['a'])} (a <= 0 inverts or flattens every score); "
                            f"{fix}")
    if not (math.isfinite(b) and abs(b) <= CAL_LIMIT):
        raise DetectorError(f"{source}: 'calibration.b' (the Platt offset) must be a finite number in "
                            f"[-{CAL_LIMIT:g}, {CAL_LIMIT:g}], got {_shown_value(cal['b'])}; {fix}")
    return {"method": "platt", "a": a, "b": b}


def _check_threshold(value: Any, source: str, fix: str = "fix the model card", key: str = "threshold") -> float:
    """A threshold: a real number (not a bool, a string, null or a list) strictly between 0 and 1 (at 0 every
    picture is fake, at 1 none is); else a DetectorError naming ``source`` and the key."""
    if not _number(value) or not 0.0 < float(value) < 1.0:
        raise DetectorError(f"{source}: '{key}' must be a number in (0, 1), got {_shown_value(value)}; {fix}")
    return float(value)


def sha256_of(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex): what a model card's ``weights_sha256`` records."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_card(card: dict, card_path: Path, pt: Path, ckpt: Checkpoint) -> None:
    """A model card bound to the weights beside it: its ``run`` is the checkpoint's and its ``weights_sha256`` the
    SHA-256 of ``pt``; else a DetectorError of one line naming both files (a card without the fields: rerun the
    release stage, which writes them)."""
    for key in ("run", "weights_sha256"):
        if not isinstance(card.get(key), str) or not card[key]:
            raise DetectorError(f"{card_path}: model card has no '{key}' (a card names the run and the SHA-256 of "
                                f"the weights it was made for, {pt.name}); {REBUILD}")
    if card["run"] != ckpt.run:
        raise DetectorError(f"{card_path}: model card is for run '{card['run']}', but {pt} holds run "
                            f"'{ckpt.run}': the card and the weights do not belong together; put the "
                            f"right .pt beside it, or {REBUILD}")
    digest = sha256_of(pt)
    if digest != card["weights_sha256"].lower():
        raise DetectorError(f"{card_path}: model card was made for other weights than {pt} (weights_sha256 "
                            f"{card['weights_sha256'][:12]}…, the file's {digest[:12]}…): the .pt was changed or "
                            f"swapped; restore it (git checkout), or {REBUILD}")


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
    if isinstance(source, (str, os.PathLike)) and not isinstance(source, bytes):
        text = os.fspath(source)
        pt = Path(text)
        if not text.strip() or not pt.name or pt.name in (".", ".."):  # '', '.', '/', 'models/..': no file name
            raise DetectorError(f"model {text!r}: not a checkpoint file; give the path of a .pt file (e.g. "
                                f"models/simplenet-fakes.pt) or a shipped detector: {' | '.join(SHIPPED)}")
        return pt, pt.with_suffix(".json"), None
    raise DetectorTypeError(f"model: a checkpoint path or a shipped name ({' | '.join(SHIPPED)}), got "
                            f"{type(source).__name__}")


@dataclass(repr=False)
class Detector:
    """A checkpoint ready to score. Fields (read-only by convention; ``dataclasses.replace`` makes a variant):

    * ``model``: the torch module in eval mode on ``device`` (Grad-CAM and saliency use it directly);
      ``ckpt``: the ``checkpoint.Checkpoint``; ``path``: where it came from (None: built in memory).
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
    ckpt: Checkpoint
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
    channels_last: bool = False  # feed the model NHWC batches (training's validation: as it trained; ``load``: on)

    # ------------------------------------------------------------------------- building
    @classmethod
    def load(cls, source: str | Path, device: str | torch.device = "auto", precision: str = "auto",
             tta: str = "checkpoint") -> "Detector":
        """A checkpoint path, or shipped name ``faceswap`` / ``generated`` (``shipped_path``; DetectorError naming
        the missing file and both remedies when absent). A checkpoint's sibling ``<stem>.json`` is its card when
        it says ``"format": "deepfake-detect-card"``. ``device``: auto | cpu | cuda; ``precision``: auto | fp32 |
        bf16 (``resolve_precision``); ``tta``: ``checkpoint`` (its own) or a mode of ``engine.TTA_MODES``."""
        pt, card_path, name = _locate(source)
        dev = check_device(device, "--device" if isinstance(device, str) and device in ("auto", "cpu", "cuda")
                           else "device")
        resolve_precision(precision, dev)  # a bad value is named before the weights are read
        model, ckpt = load_model(pt, dev)
        card = read_card(card_path, required=name is not None)
        if card:
            check_card(card, card_path, pt, ckpt)
        # NHWC batches (as training's validation feeds them, params channels_last): the views of ``score`` are
        # pixel-major already, and oneDNN's convolutions run ~1.8x faster on them than on the NCHW copy (fp32 scores
        # move by summation order only: < 2e-6 on real faces; bench/detector_speed.py, docs/speed.md)
        return cls.from_model(model, ckpt, pt, name=name, precision=precision, tta=tta, card=card,
                              channels_last=True)

    @classmethod
    def from_model(cls, model: nn.Module, ckpt: Checkpoint, path: str | Path | None = None, name: str | None = None,
                   precision: str = "fp32", tta: str = "checkpoint", card: dict | None = None,
                   channels_last: bool = False) -> "Detector":
        """A detector of a model already built (``checkpoint.load_model``, a model in training, or any module in
        tests) and its ``Checkpoint`` (``checkpoint.make_checkpoint`` of a model in memory); the device is the model's.
        ``card``'s threshold, rule and calibration win."""
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        card = dict(card or {})
        source = str(path) if path is not None else f"checkpoint of run '{ckpt.run}'"
        card_source = str(Path(path).with_suffix(".json")) if path is not None else "model card"
        fix = f"fix the model card, or {REBUILD}"
        if "calibration" in card:
            cal = _check_calibration(card["calibration"], card_source, fix)
        else:
            cal = _check_calibration(ckpt.calibration, f"{source}: checkpoint field",
                                     "the checkpoint is damaged or edited by hand; restore or retrain it")
        if "threshold" in card:
            threshold = _check_threshold(card["threshold"], card_source, fix)
        elif cal is not None and "calibration" not in card:
            # a shipped .pt without its card: its calibration is applied, so the threshold must be on the calibrated
            # scale too (``output_threshold``, the card's), never the run's raw one
            out = ckpt.output_threshold
            threshold = (_check_threshold(out, f"{source}: checkpoint field", "restore or retrain the .pt",
                                          "output_threshold")
                         if out is not None else float(calibrate([ckpt.threshold], cal)[0]))
        else:
            threshold = float(ckpt.threshold)
            if cal is not None:  # a card's calibration without its threshold: the run's, mapped the same way
                threshold = float(calibrate([threshold], cal)[0])
        rule = card.get("threshold_rule", ckpt.metrics.get("threshold_rule"))
        return cls(model=model, ckpt=ckpt, path=None if path is None else Path(path),
                   name=name or card.get("name") or ckpt.run, run=ckpt.run,
                   image_size=int(ckpt.image_size), mean=tuple(ckpt.mean), std=tuple(ckpt.std),
                   tta=_score.resolve_tta(ckpt, tta, source), threshold=threshold, threshold_rule=rule,
                   calibration=cal, domain=ckpt.domain, dataset=ckpt.dataset, cam_layer=ckpt.cam_layer,
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

    def score(self, images: Sequence[np.ndarray | Image.Image] | np.ndarray | Image.Image,
              batch_size: int = 64) -> np.ndarray:
        """p(fake) (float64, calibrated when the detector has a calibration) of in-memory pictures: uint8
        H x W x 3 arrays (RGB) or PIL images, resized and normalised as files are (``data.Preprocess``); other
        modes and dtypes as ``as_rgb`` converts or refuses them. One array or image is one picture (one score)."""
        batch_size = check_batch_size(batch_size)
        prep = self.preprocess
        views = [prep.to_hwc(as_rgb(im, f"image {i}")) for i, im in enumerate(pictures(images))]
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
        return self._calibrated(_score.score_views(self, views, names, check_batch_size(batch_size)))

    def score_paths(self, paths: Sequence[str | Path] | str | Path, labels: Sequence[int] | None = None,
                    batch_size: int = 64, progress: bool = True, desc: str = "score",
                    degrade=None) -> tuple[np.ndarray, dict[int, str]]:
        """p(fake) (calibrated) of image files, NaN where one does not decode, and {index: error message} of
        those. One path (a str or Path) is one file. ``degrade``: applied to each decoded image before the resize
        (``degrade.Degradation``)."""
        batch_size = check_batch_size(batch_size)
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]  # one path is one file, never its characters
        elif isinstance(paths, (bytes, np.ndarray, Image.Image)) or not isinstance(paths, Iterable):
            raise DetectorTypeError(f"score_paths: takes a list of image file paths, got {type(paths).__name__}"
                                    + ("; in-memory pictures go to score()" if not isinstance(paths, bytes) else ""))
        paths = list(paths)
        bad = next((i for i, q in enumerate(paths) if not isinstance(q, (str, os.PathLike))), None)
        if bad is not None:
            raise DetectorTypeError(f"score_paths: item {bad} is a {type(paths[bad]).__name__}, not a file path"
                                    + ("; in-memory pictures go to score()"
                                       if isinstance(paths[bad], (np.ndarray, Image.Image)) else ""))
        p, errors = _score.score_paths(self, [os.fspath(q) for q in paths], None if labels is None else list(labels),
                                       batch_size, self.num_workers, progress, desc, degrade)
        return self._calibrated(p), errors

    def _calibrated(self, raw: np.ndarray) -> np.ndarray:
        """``calibrate(raw)``; a finite score never becomes NaN (a checked calibration cannot do that: a guard)."""
        p = calibrate(raw, self.calibration)
        if np.any(np.isfinite(raw) & ~np.isfinite(p)):
            raise DetectorError(f"{self.path or self.name}: the calibration {self.calibration} gives no finite p(fake);"
                                f" fix the model card, or {REBUILD}")
        return p

    def is_fake(self, p) -> np.ndarray:
        """The verdict at the threshold: fake where p > ``threshold``. NaN (an input that did not decode) is no
        verdict: a DetectorError, never "real"; drop the NaN scores first."""
        p = np.asarray(p, dtype=np.float64)
        if np.isnan(p).any():
            raise DetectorError(f"is_fake: {int(np.isnan(p).sum())} score(s) are NaN (inputs that did not decode): "
                                "no verdict for them; drop them first (score_paths lists why)")
        return p > self.threshold

    # ------------------------------------------------------------------------- describing
    @property
    def threshold_source(self) -> str:
        """Where ``threshold`` comes from, for summaries."""
        where = ("model card" if "threshold" in self.card else
                 "checkpoint's output_threshold" if self.calibration and self.ckpt.output_threshold is not None
                 and "calibration" not in self.card else "checkpoint")
        rule = f", rule '{self.threshold_rule}' on the validation split" if self.threshold_rule else ""
        return where + rule + (", on calibrated p" if self.calibration else "")

    def __repr__(self) -> str:
        cal = ", calibrated" if self.calibration else ""
        return (f"Detector({self.name!r}, arch={self.ckpt.arch!r}, {self.image_size}px, tta={self.tta}, "
                f"threshold={self.threshold:.4g}{cal}, {self.precision} on {self.device})")


def check_batch_size(batch_size: Any) -> int:
    """``batch_size``: an integer >= 1, else a TypeError / ValueError of one line."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise DetectorTypeError(f"batch_size: must be an integer >= 1, got {type(batch_size).__name__}")
    if batch_size < 1:
        raise DetectorError(f"batch_size: must be an integer >= 1, got {batch_size}")
    return int(batch_size)


def pictures(images: Any) -> list:
    """The pictures of ``score``'s argument: one array (2-D, or 3-D H x W x C) or PIL image is one picture; a 4-D
    array is a batch of them; a list or other iterable holds them. A path is refused (``score_paths`` reads
    files), as is anything else."""
    if isinstance(images, (str, os.PathLike, bytes)):
        raise DetectorTypeError(f"score: got a file path ({_shown_value(os.fsdecode(images))}); score() takes "
                                "pictures in memory, score_paths() takes files: det.score_paths([path])")
    if isinstance(images, Image.Image):
        return [images]
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, torch.Tensor):
        raise DetectorTypeError("score: got a torch tensor; pass uint8 H x W x 3 numpy arrays (tensor.numpy()) or "
                                "PIL images")
    if not isinstance(images, Iterable) or isinstance(images, dict):
        raise DetectorTypeError(f"score: takes a list of pictures (uint8 H x W x 3 arrays or PIL images), got "
                                f"{type(images).__name__}")
    return list(images)


def _alpha_over_black(im: Image.Image) -> Image.Image:
    im = im.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), im)


def _image_rgb(im: Image.Image, what: str) -> Image.Image:
    """A PIL image as 8-bit RGB, converted as ``data.load_rgb`` converts a file (16-bit and 32-bit integer modes
    scaled to 8 bits, alpha over black, grey / palette / CMYK to RGB); float (``F``) and 1-bit modes refused."""
    if im.width == 0 or im.height == 0:
        raise DetectorError(f"{what}: an empty picture ({im.width} x {im.height} px)")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        raise DetectorTypeError(f"{what}: a PIL image of mode F (floating point); convert it to 8-bit RGB first")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        im = _alpha_over_black(im)
    return im if im.mode == "RGB" else im.convert("RGB")


def as_rgb(im: Any, what: str = "image") -> Image.Image:
    """One picture of ``score`` as an 8-bit RGB PIL image. Taken: PIL images (``_image_rgb``); uint8 arrays H x W
    x 3 (RGB), H x W or H x W x 1 (grey), H x W x 4 (RGBA: alpha over black); uint16 arrays of those shapes,
    scaled to 8 bits as 16-bit files are. Refused with one line: float, bool and other dtypes (NaN included),
    empty and 1-D arrays, other channel counts, paths and other objects."""
    if isinstance(im, Image.Image):
        return _image_rgb(im, what)
    if isinstance(im, (str, os.PathLike, bytes)):
        raise DetectorTypeError(f"{what}: a file path, not a picture; score_paths() reads files")
    if not isinstance(im, np.ndarray):
        raise DetectorTypeError(f"{what}: a {type(im).__name__}, not a picture (pass uint8 H x W x 3 RGB arrays "
                                "or PIL images)")
    if im.dtype == np.uint16:
        im = np.clip(im.astype(np.float64) / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif im.dtype != np.uint8:
        hint = (" (values 0..1? (x * 255).round().astype(np.uint8))" if im.dtype.kind == "f" else "")
        raise DetectorTypeError(f"{what}: a {im.dtype} array; score() takes uint8 RGB (0-255) or uint16{hint}")
    if im.ndim == 3 and im.shape[2] == 1:
        im = im[:, :, 0]
    if im.ndim not in (2, 3) or (im.ndim == 3 and im.shape[2] not in (3, 4)):
        raise DetectorError(f"{what}: an array of shape {tuple(im.shape)}; a picture is H x W x 3 (RGB), H x W x 4 "
                            "(RGBA) or H x W (grey)")
    if im.size == 0:
        raise DetectorError(f"{what}: an empty picture (shape {tuple(im.shape)})")
    im = np.ascontiguousarray(im)
    if im.ndim == 2:
        return Image.fromarray(im, "L").convert("RGB")
    if im.shape[2] == 4:
        return _alpha_over_black(Image.fromarray(im, "RGBA")).convert("RGB")
    return Image.fromarray(im, "RGB")


def load_shipped(device: str | torch.device = "auto", precision: str = "auto", tta: str = "checkpoint",
                 names: Sequence[str] = SHIPPED) -> list[Detector]:
    """Every shipped detector (``names``); DetectorError naming the first missing file and the remedies."""
    return [Detector.load(n, device, precision, tta) for n in names]

