"""Scoring what users have with a checkpoint: ``deepfake-detect predict`` (p(fake) per face in photos, folders
and videos, as one line per face, CSV or JSON, optionally with Grad-CAM overlays) and ``deepfake-detect
evaluate`` (metrics of a checkpoint on any labelled folder: cross-dataset evaluation). Both score with the
checkpoint's test-time augmentation unless ``tta`` (``--tta``) says otherwise, as the evaluate-roc-det stage does.

What is scored (``crop``, ``--crop``): ``faces`` finds every face once (``faces.FaceFinder``) and hands each
detector a square crop of it framed like that detector's own training images (``faces.regions_per_detector``:
the face-swap detector's tight crop, the generated-face detector's looser one); a picture that already is a face
crop for a detector (the training and test images of every dataset here) is scored as it is. A face whose crop a
detector would enlarge more than ``faces.MAX_UPSCALE`` times (under 56 px for a 224 px detector) is "too small
to judge": listed with that status, never scored, counted neither real nor fake. ``whole`` scores each picture
unchanged, squashed to the model's size, exactly as the evaluate-roc-det stage does. ``auto`` (default):
``faces`` when the checkpoint records that it was trained on face crops, else ``whole``. A video
(``video.VIDEO_EXTENSIONS``) is scored on ``frames`` evenly spaced frames; its p(fake) is the mean of its face
scores, as the DFDC winners aggregated.

Nothing is dropped without a word: files that are neither images nor videos, files that do not decode,
pictures without a face and entries that cannot be read (symlink loops, unreadable folders) get a row whose
``status`` says why. Every output is checked (writable, room for it) before the scoring starts.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import metrics
from .data import BadImageError, DatasetError, Preprocess, is_image_file, list_files, load_rgb, scan_source
from .detector import Detector, load_shipped
from .engine import default_num_workers
from .errors import UserError
from .faces import MAX_UPSCALE, FaceFinder, Framing, Region, clipped_box, regions_per_detector, too_small
from .io import OutputError, atomic_path, check_writable, output_errors, spreadsheet_safe
from .preflight import MIN_PER_CLASS, too_few
from .score import threshold_metrics
from .video import FRAMES, BadVideoError, is_video_file, sample_frames

FIELDS = ["path", "frame", "face", "box", "region", "p_fake", "verdict", "threshold", "model", "precision", "status"]
PLACE = ["path", "frame", "face", "box", "region"]  # the columns every row starts with
CROPS = ("auto", "faces", "whole")
FORMATS = ("csv", "json")
OK = "ok"
TOO_SMALL = f"too small to judge (a detector would enlarge the face more than {MAX_UPSCALE:g}x)"
NOTHING_SCORED = 3  # exit code of `predict` when no input could be scored (rows and reasons are still written)
ROW_BYTES, CAM_BYTES = 512, 600_000  # generous sizes of a CSV/JSON row and a Grad-CAM PNG: the free-space check
RANKING_METRICS = ("auc", "auc_ci_low", "auc_ci_high", "eer", "ap")  # null on a set too small (preflight.too_few)
PACKAGE_DIR = Path(__file__).resolve().parent  # the installed package: --out never writes into it
# characters that move the cursor, recolour the terminal or reorder text: shown escaped (\n, \x1b, \u202e)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class PredictError(UserError, ValueError):
    """An option or output of predict that cannot work; the message names it."""


# ----------------------------------------------------------------------------- scoring
@dataclass
class PredictOptions:
    """How ``predict`` and ``evaluate`` run their detectors (the CLI options of the same names): ``device``,
    ``precision`` (auto | fp32 | bf16) and ``tta`` (``checkpoint`` or an ``engine.TTA_MODES`` mode) when a
    checkpoint is loaded; ``crop`` (``CROPS``), ``face_margin`` and ``frames`` (what is scored); ``batch_size``,
    ``num_workers`` and ``progress``; ``per_frame``: videos also get a row per face in each sampled frame;
    ``min_per_class``: evaluate reports no AUC, EER or AP of fewer real or fake images (``preflight.too_few``)."""

    device: str = "auto"
    precision: str = "auto"
    tta: str = "checkpoint"
    crop: str = "auto"
    face_margin: float | None = None
    frames: int = FRAMES
    batch_size: int = 64
    num_workers: int = -1
    progress: bool = True
    per_frame: bool = False
    min_per_class: int = MIN_PER_CLASS


@dataclass
class Scored:
    """One input file and what came of it: ``views`` (frame or None, one Region per detector or None for a whole
    picture, p_fake: one float per detector in the order of the detectors, or None for a face too small to judge),
    or the ``status`` saying why it was not scored."""

    path: str
    kind: str  # image | video | other
    status: str = OK
    views: list[tuple[int | None, list[Region] | None, tuple[float, ...] | None]] = field(default_factory=list)
    n_frames: int = 0
    size: tuple[int, int] | None = None

    def p_of(self, k: int = 0) -> float:
        """The input's one score by detector ``k``: a video's mean face score, a picture's highest (any fake face
        makes it fake)."""
        p = [v[2][k] for v in self.views if v[2] is not None]
        return float(np.mean(p) if self.kind == "video" else np.max(p))

    @property
    def p_fake(self) -> float:
        """``p_of(0)``: the score of the (first) detector."""
        return self.p_of(0)


def resolve_crop(domains: list[dict | None], crop: str) -> tuple[str, str]:
    """(``faces`` or ``whole``, why ``auto`` chose whole, or ""): ``auto`` is ``faces`` when any detector's
    ``domain`` records face-crop training (``domain.face_crops``)."""
    if crop not in CROPS:
        raise PredictError(f"--crop: unknown mode {crop!r} (expected one of {', '.join(CROPS)})")
    if crop != "auto":
        return crop, ""
    crops = [(d or {}).get("face_crops") for d in domains]
    if any(crops):
        return "faces", ""
    why = "not trained on face crops" if all(c is False for c in crops) else "no record of face-crop training"
    return "whole", f"the checkpoint has {why}; --crop faces detects faces"


def _identity(item):
    return item


class _Inputs(Dataset):
    """Per input: the pictures (an image, or a video's sampled frames), what to score in each (whole, or each
    face found once, cropped for each detector by its own framing) as model-size uint8 views for each of
    ``preps`` (one per detector, with ``framings``), or the reason it cannot be scored. Loader workers each build
    their own face finder."""

    def __init__(self, paths: list[str], kinds: list[str], preps: list[Preprocess], crop: str,
                 framings: list[Framing], frames: int):
        self.paths, self.kinds, self.preps, self.crop, self.framings, self.frames = paths, kinds, preps, crop, \
            framings, frames
        self.detector = FaceFinder()

    def __len__(self) -> int:
        return len(self.paths)

    def pictures(self, i: int) -> list[tuple[int | None, Image.Image]]:
        if self.kinds[i] == "video":
            frames = sample_frames(self.paths[i], self.frames)
            if frames.truncated:  # a verdict from the frames before the cut would pass for the whole video's
                raise BadVideoError(f"{self.paths[i]}: {frames.status} (the file is cut short; re-export it)")
            return [(f.index, f.image) for f in frames]
        return [(None, load_rgb(self.paths[i]))]

    def regions(self, im: Image.Image) -> list[tuple[list[Region], bool]]:
        """Per face: one Region per detector, and whether the face is large enough to judge."""
        if self.crop == "whole":
            return [([Region(0, None, (0, 0, *im.size), True)] * len(self.preps), True)]
        found = self.detector(im)
        return [(rs, not any(too_small(r, prep.image_size) for r, prep in zip(rs, self.preps)))
                for rs in regions_per_detector(im.size, found, self.framings)]

    def __getitem__(self, i: int) -> dict:
        try:
            pictures = self.pictures(i)
        except (BadImageError, BadVideoError) as e:
            return {"i": i, "status": str(e).removeprefix(f"{self.paths[i]}: "), "views": None, "meta": []}
        views, meta = [[] for _ in self.preps], []
        for frame, im in pictures:
            for rs, judged in self.regions(im):
                if judged:
                    for k, (prep, r) in enumerate(zip(self.preps, rs)):
                        views[k].append(prep.to_hwc(im if r.whole else im.crop(r.crop)))
                meta.append((frame, rs, judged))
        n_judged = sum(j for _, _, j in meta)
        status = (OK if n_judged else
                  f"{len(meta)} face(s) found, all {TOO_SMALL}" if meta else
                  "no face found" if self.kinds[i] == "image" else f"no face found in {len(pictures)} frame(s)")
        return {"i": i, "status": status, "views": [np.stack(v) for v in views] if n_judged else None, "meta": meta,
                "n_frames": len(pictures), "size": pictures[0][1].size}


def _score_whole_images(detectors: list[Detector], paths: Sequence[str], out: list[Scored], images: list[int],
                        options: PredictOptions, desc: str) -> None:
    """Whole images through ``Detector.score_paths``, the evaluate stage's own loop (the same numbers)."""
    files = [str(paths[i]) for i in images]
    ps = []
    for det in detectors:
        p, errors = det.score_paths(files, None, options.batch_size, options.progress, desc=desc)
        ps.append(p)
    for j, i in enumerate(images):
        if j in errors:  # decoding does not depend on the detector: the last one's errors are everyone's
            out[i].status = errors[j].removeprefix(f"{paths[i]}: ")
        else:
            out[i].views = [(None, None, tuple(float(p[j]) for p in ps))]


def score_inputs(detectors: Detector | list[Detector], paths: Sequence[str], crop: str,
                 framing: Framing | list[Framing] | None = None, options: PredictOptions | None = None,
                 desc: str = "score") -> list[Scored]:
    """Every input scored by every detector as ``crop`` (``faces`` or ``whole``) says; videos on
    ``options.frames`` frames. Whole images go through ``Detector.score_paths``; the rest through ``_Inputs``
    (decoding and face detection once, in loader workers) and ``Detector.score_views`` in batches of
    ``options.batch_size``. ``framing``: one per detector (None: each detector's own, ``framings``; one Framing:
    all alike). Each view's p_fake is a tuple, one per detector (None: a face too small to judge)."""
    dets = [detectors] if isinstance(detectors, Detector) else list(detectors)
    o = options or PredictOptions()
    framings = (framings_of(dets, o.face_margin) if framing is None else
                [framing] * len(dets) if isinstance(framing, Framing) else list(framing))
    kinds = ["image" if is_image_file(p) else "video" if is_video_file(p) else "other" for p in paths]
    out = [Scored(str(p), k, status=OK if k != "other" else "not an image or video file")
           for p, k in zip(paths, kinds)]
    todo = [i for i, k in enumerate(kinds) if k != "other"]
    if crop == "whole":
        _score_whole_images(dets, paths, out, [i for i in todo if kinds[i] == "image"], o, desc)
        todo = [i for i in todo if kinds[i] == "video"]
    if not todo:
        return out
    ds = _Inputs([str(paths[i]) for i in todo], [kinds[i] for i in todo], [d.preprocess for d in dets], crop,
                 framings, o.frames)
    if crop == "faces":
        ds.detector.load()  # here: a detector that cannot load is one line, not a loader worker's traceback
    loader = DataLoader(ds, batch_size=None, shuffle=False, collate_fn=_identity,
                        num_workers=min(default_num_workers(o.num_workers), len(todo) - 1))
    pending: list[list[np.ndarray]] = [[] for _ in dets]
    owners: list[tuple[int, int]] = []  # (input, view) of each pending view

    def flush(n: int) -> None:
        names = [str(paths[i]) for i, _ in owners[:n]]
        p_fake = [det.score_views(np.stack(pending[k][:n]), names, o.batch_size) for k, det in enumerate(dets)]
        for m, (i, j) in enumerate(owners[:n]):
            frame, region, _ = out[i].views[j]
            out[i].views[j] = (frame, region, tuple(float(p[m]) for p in p_fake))
        for views in pending:
            del views[:n]
        del owners[:n]

    for item in tqdm(loader, total=len(todo), desc=desc, leave=False, disable=not o.progress):
        i = todo[item["i"]]
        out[i].status, out[i].n_frames, out[i].size = item["status"], item.get("n_frames", 0), item.get("size")
        if item["views"] is None:
            continue
        for frame, rs, judged in item["meta"]:
            out[i].views.append((frame, None if rs[0].whole and rs[0].box is None else rs,
                                 (float("nan"),) * len(dets) if judged else None))
            if judged:
                owners.append((i, len(out[i].views) - 1))
        for k, views in enumerate(item["views"]):
            pending[k] += list(views)
        while len(owners) >= o.batch_size:
            flush(o.batch_size)
    if owners:
        flush(len(owners))
    return out


# ----------------------------------------------------------------------------- the checkpoint's domain
def _looks_like_demo(s: Scored, domain: dict) -> bool:
    """A PNG of the demo images' own size (the demo writes nothing else)."""
    if s.kind != "image":
        return False
    try:
        with Image.open(s.path) as im:
            native = domain.get("native_size")
            return im.format == "PNG" and (native is None or list(im.size) == list(native))
    except OSError:
        return False


def domain_warning(det: Detector, scored: list[Scored]) -> str:
    """One line for stderr when a checkpoint trained on the procedural demo faces scores anything else (its
    p(fake) says nothing about photographs), with what to use instead; "" otherwise, and for a released
    detector (one with a model card: it says what it is for)."""
    domain = det.domain or {}
    if domain.get("data") != "demo" or det.card:
        return ""
    other = next((s for s in scored if s.status == OK and not _looks_like_demo(s, domain)), None)
    if other is None:
        return ""
    return (f"warning: {det.path} was trained on the procedural demo faces ({domain.get('image_size')} px), "
            f"and {_shown(other.path)} is not one of them: its p(fake) says nothing about photographs or videos. "
            "Score real pictures with the shipped detectors (`deepfake-detect predict` without --model) or a "
            "checkpoint of the real-data pipeline: real/models/finetune-synth.pt (GAN faces) or "
            "real/models/finetune-fakes.pt (face swaps), from `dvc pull` where a DVC remote holds them or "
            "`dvc repro real/dvc.yaml` (README: real data)")


# ----------------------------------------------------------------------------- evaluate
def labelled_images(data: str | Path, split: str = "test") -> tuple[list[dict], list[str]]:
    """Rows {path, label} of a folder with real/ and fake/, a course-layout split folder, or a course-layout
    root (then its ``split``); videos in the class folders count as inputs too. Plus every other entry found
    there, as ``path: reason`` (not an image or video file, symlink loop, permission denied ...)."""
    root = Path(data)
    if not (root / "real").is_dir() and not (root / "fake").is_dir() and (root / split).is_dir():
        root = root / split
    layout, rows, ignored, unreadable = scan_source(root)
    for f in ignored:
        if is_video_file(f):
            parts = Path(f).relative_to(root).parts
            rows.append({"path": f, "label": 0 if parts[layout == "course"] == "real" else 1,
                         "split": parts[0] if layout == "course" else None})
    skipped = [f"{f}: not an image or video file" for f in ignored if not is_video_file(f)] + unreadable
    if layout == "course":
        rows = [r for r in rows if r["split"] == split]
    return rows, skipped


def framings_of(dets: list[Detector], margin: float | None = None) -> list[Framing]:
    """Each detector's framing of a face: its training images' (``Framing.of_checkpoint``; ``margin``:
    ``--face-margin``, for all)."""
    return [Framing.of_checkpoint(d.ckpt, margin) for d in dets]


def _detector(model: str | Path | Detector, o: PredictOptions) -> Detector:
    return model if isinstance(model, Detector) else Detector.load(model, o.device, o.precision, o.tta)


def evaluate_folder(model: str | Path | Detector, data: str | Path, split: str = "test", n_bootstrap: int = 1000,
                    options: PredictOptions | None = None) -> dict:
    """Score a detector (a checkpoint path, shipped name or ``Detector``) on a labelled folder: its metrics
    (``acc``, ``balanced_acc`` at 0.5, and at the detector's ``threshold``: ``acc_at_threshold``,
    ``balanced_acc_at_threshold``), ``threshold_source``, the ``tta``, ``precision`` and ``crop`` used,
    ``n_skipped`` and ``skipped`` (every file in the folder not scored, as ``path: reason``: not decodable, no
    face found ...). A picture's score is its highest face score, a video's the mean of its face scores."""
    o = options or PredictOptions()
    det = _detector(model, o)
    crop, _ = resolve_crop([det.domain], o.crop)
    rows, skipped = labelled_images(data, split)
    scored = score_inputs(det, [r["path"] for r in rows], crop, None, o, desc=f"evaluate {det.name}")
    warning = domain_warning(det, scored)
    if warning:
        print(warning, file=sys.stderr)
    skipped += [f"{s.path}: {s.status}" for s in scored if s.status != OK]
    ok = [j for j, s in enumerate(scored) if s.status == OK]
    y, p = np.array([rows[j]["label"] for j in ok]), np.array([scored[j].p_fake for j in ok])
    try:
        m = metrics.binary_metrics(y, p, threshold=0.5, n_bootstrap=n_bootstrap)
        m.update(threshold_metrics(y, p, det.threshold))
    except ValueError as e:  # e.g. every fake failed to decode: say which files were left out
        raise DatasetError(f"{data}: cannot evaluate ({e})"
                           + (f"; skipped {len(skipped)} file(s): " + "; ".join(skipped[:10]) if skipped else "")
                           + (" ..." if len(skipped) > 10 else "")) from e
    few = too_few(y, o.min_per_class)
    if few is not None:  # the evaluate stage's rule: no AUC of a handful of images (it would read 1.000 [1.000, 1.000])
        m.update({k: None for k in RANKING_METRICS}, too_few=few)
        print(f"warning: {_shown(str(data))}: {few}: no {', '.join(RANKING_METRICS)} reported; add images of both "
              "classes", file=sys.stderr)
    info = {"model": str(det.path if det.path is not None else det.name), "run": det.run,
            "trained_on": det.dataset or "", "data": str(data), "image_size": det.image_size, "tta": det.tta,
            "precision": det.precision, "crop": crop, "threshold_source": det.threshold_source,
            "n_skipped": len(skipped)}
    return {**info, **m, "skipped": skipped}


# ----------------------------------------------------------------------------- predict
def expand_paths(paths: list[str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files as given and every file under the given folders (sorted), in order; plus the entries under
    those folders that are not readable files, with the reason (``data.list_files``)."""
    files, problems = [], []
    for p in map(Path, paths):
        if p.is_dir():
            found, unreadable = list_files(p)
            files += found
            problems += unreadable
        elif p.is_file():
            files.append(p)
        elif p.exists():  # a device (/dev/zero), a FIFO, a socket: never opened (reading one may never end)
            problems.append((p, "not a regular file"))
        else:
            raise FileNotFoundError(f"{_shown(str(p))}: no such file or folder")
    return files, problems


def output_format(out: str | Path | None, fmt: str | None) -> str | None:
    """The format of the rows: ``fmt`` (``--format``) and the suffix of ``out`` (``--out``) must agree; a suffix
    that is neither .csv nor .json is refused. None: no --out and no --format (one line per face on stdout)."""
    if fmt is not None and fmt not in FORMATS:
        raise PredictError(f"--format: unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if out is None:
        return fmt
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise PredictError(f"--out {out}: unknown suffix {Path(out).suffix or '(none)'!r}; name the file .csv or "
                           ".json (--format must agree)")
    if fmt is not None and fmt != suffix:
        raise PredictError(f"--out {out} is .{suffix} but --format is {fmt}: make them agree")
    return suffix


def _check_room(path: Path, need: int, what: str) -> None:
    """OutputError when the file system of ``path`` (a folder) has less than ``need`` bytes free."""
    with output_errors(path):
        free = shutil.disk_usage(path).free
    if free < need:
        raise OutputError(f"{what}: not enough free space ({free / 1e6:.1f} MB free, about {need / 1e6:.1f} MB "
                          "needed); free some or write elsewhere")


def check_not_package(path: str | Path, option: str = "--out") -> None:
    """A PredictError when ``path`` lies inside the installed package (its shipped detectors, its code): an output
    must never overwrite them."""
    target = Path(path).resolve()
    if target == PACKAGE_DIR or PACKAGE_DIR in target.parents:
        raise PredictError(f"{option} {_shown(str(path))}: inside the deepfake-detect package ({PACKAGE_DIR}), whose "
                           "files (the shipped detectors, the code) are never overwritten; write elsewhere")


# the first bytes of what predict (CSV, JSON) and evaluate (JSON) write: such a file is theirs to replace
_OUR_OUTPUT = re.compile(r'(path,frame,face,box,region,|\[\s*(\]|\{\s*"path":)|\{\s*"model":)')


def _earlier_output(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(64).decode("utf-8", "replace").lstrip("\ufeff")
    except OSError:
        return False
    return _OUR_OUTPUT.match(head) is not None


def check_new_file(path: str | Path, force: bool, option: str = "--out") -> None:
    """A PredictError when ``path`` exists, is not an earlier output of predict or evaluate (rerunning a command
    replaces its own output) and ``force`` is off: the CLI never replaces someone's file silently."""
    path = Path(path)
    if force or not (path.exists() or path.is_symlink()):
        return
    if path.is_symlink() or not path.is_file() or not _earlier_output(path):
        raise PredictError(f"{option} {_shown(str(path))}: already exists and is not an earlier predict or evaluate "
                           "output; pass --force to replace it, or pick a new name")


def check_outputs(out: str | Path | None, cam_dir: str | Path | None, n_inputs: int) -> None:
    """Before any scoring: ``out`` and ``cam_dir`` can be written and have room for ``n_inputs`` inputs' output."""
    if out is not None:
        check_writable(out)
        _check_room(Path(out).parent, ROW_BYTES * max(n_inputs, 1), f"--out {out}")
    if cam_dir is not None:
        cam = Path(cam_dir)
        check_not_package(cam, "--cam")
        try:
            check_writable(cam / "overlay_cam.png")
        except OutputError as e:
            raise OutputError(f"--cam {cam}: cannot write overlays there ({str(e).partition('(')[2].rstrip(')')})") \
                from e
        _check_room(cam, CAM_BYTES * max(n_inputs, 1), f"--cam {cam}")


def terminal_text(text: str) -> str:
    """Text for the terminal with its control characters escaped: a newline in a file name cannot forge a line of
    output, nor an ANSI escape recolour or clear the terminal, nor a bidi override reorder the text."""
    return _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), text)


def _shown(path: str) -> str:
    """A path for the terminal: bytes that are not UTF-8 (a surrogate-escaped name) as \\xNN, control characters
    escaped (``terminal_text``: ``a\\nb.png``, ``\\x1b[31m``)."""
    return terminal_text(os.fsencode(path).decode("utf-8", "backslashreplace"))


def csv_cell(value) -> str:
    """A CSV cell a spreadsheet shows as text: one that starts with = + - @, a tab or a carriage return (a
    formula or a DDE payload) gets a leading single quote, as OWASP's CSV-injection guidance says."""
    return spreadsheet_safe("" if value is None else str(value))


def fields(detectors: list[Detector]) -> list[str]:
    """The columns of the rows: ``FIELDS`` for one detector; for several, p_fake and threshold of each
    (``p_fake_<name>``, ``threshold_<name>``), ``fired`` (the detectors whose p_fake > their threshold,
    ";"-joined), ``verdict`` (fake when any fired) and ``detectors`` (their names)."""
    if len(detectors) == 1:
        return FIELDS
    names = [d.name for d in detectors]
    return (PLACE + [f"p_fake_{n}" for n in names] + ["fired", "verdict"] + [f"threshold_{n}" for n in names]
            + [f"region_{n}" for n in names] + ["detectors", "precision", "status"])


def precision_of(detectors: list[Detector]) -> str:
    """The precision that scored (``fp32`` or ``bf16``; ``name=...`` per detector when they differ)."""
    kinds = {d.precision for d in detectors}
    return kinds.pop() if len(kinds) == 1 else ";".join(f"{d.name}={d.precision}" for d in detectors)


def _rows(scored: list[Scored], unreadable: list[tuple[Path, str]], detectors: list[Detector], model: str,
          per_frame: bool) -> list[dict]:
    """The output rows (``fields``): one per scored face, or per whole picture, a video's mean (and with
    ``per_frame`` its faces frame by frame), one per input not scored; the unreadable entries last."""
    names = [d.name for d in detectors]
    precision = precision_of(detectors)
    if len(detectors) == 1:
        threshold = detectors[0].threshold
        base = {"threshold": threshold, "model": model, "precision": precision}

        def scores(ps):
            p = None if ps is None else ps[0]
            return {"p_fake": p, "verdict": None if p is None else ("fake" if p > threshold else "real")}
    else:
        base = {**{f"threshold_{d.name}": d.threshold for d in detectors}, "detectors": names, "precision": precision}

        def scores(ps):
            if ps is None:
                return {**{f"p_fake_{n}": None for n in names}, "fired": None, "verdict": None}
            fired = [d.name for d, p in zip(detectors, ps) if p > d.threshold]
            return {**{f"p_fake_{n}": p for n, p in zip(names, ps)}, "fired": ";".join(fired),
                    "verdict": "fake" if fired else "real"}

    def row(s: Scored, frame=None, face=None, box=None, rs=None, ps=None, status=OK) -> dict:
        """``rs``: the region each detector scored (the first one's is ``region``)."""
        regions = {} if len(detectors) == 1 else {f"region_{n}": r for n, r in zip(names, rs or [None] * len(names))}
        return {"path": s.path, "frame": frame, "face": face, "box": box, "region": rs[0] if rs else None,
                **scores(ps), **base, **regions, "status": status}

    rows = []
    for s in scored:
        if s.status != OK:
            rows.append(row(s, status=s.status))
            continue
        faces = []
        for frame, rs, ps in s.views:
            if rs is None:
                faces.append(row(s, frame, "whole", None, [[0, 0, *s.size] if s.size else None] * len(detectors), ps))
            else:
                faces.append(row(s, frame, rs[0].face, clipped_box(rs[0].box, s.size), [list(r.crop) for r in rs],
                                 ps, OK if ps is not None else TOO_SMALL))
        if s.kind == "video":
            rows += faces if per_frame else []
            rows.append(row(s, None, "mean", None, None, tuple(s.p_of(k) for k in range(len(detectors)))))
        else:
            rows += faces
    return rows + [{**row(Scored(str(f), "other"), status=why)} for f, why in unreadable]


def _cell(key: str, value):
    """A row's value as CSV text: boxes as "x0 y0 x1 y1", scores with 6 decimals, thresholds short."""
    if value is None:
        return None
    if key in ("box", "region", "detectors") or key.startswith("region_"):
        return (";" if key == "detectors" else " ").join(map(str, value)) or None
    if key.startswith("p_fake"):
        return f"{value:.6f}"
    if key.startswith("threshold"):
        return f"{value:g}"
    return value


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: csv_cell(_cell(k, v)) for k, v in r.items()})
    return buf.getvalue()


def _json_text(rows: list[dict]) -> str:
    return json.dumps(rows, indent=1) + "\n"  # ensure_ascii: a non-UTF-8 name stays \udcXX, lossless


def _line(r: dict) -> str:
    """One line per face for the terminal."""
    where = _shown(r["path"]) + (f" frame {r['frame']}" if r["frame"] is not None else "")
    if r["status"] != OK:
        return f"{where}: skipped ({terminal_text(r['status'])})"
    if r["face"] == "whole":
        what = "whole picture"
    elif r["face"] == "mean":
        what = "mean of its faces"
    else:
        what = f"face {r['face']} at {r['box'][0]},{r['box'][1]}-{r['box'][2]},{r['box'][3]}"
    if "p_fake" in r:
        return f"{where}: {what}: {r['verdict']} (p_fake {r['p_fake']:.3f}, threshold {r['threshold']:.3g})"
    scores = ", ".join(f"{n} {r[f'p_fake_{n}']:.3f} (threshold {r[f'threshold_{n}']:.3g})" for n in r["detectors"])
    return f"{where}: {what}: {r['verdict']} (p_fake {scores}; fired: {r['fired'] or 'none'})"


def write_rows(rows: list[dict], out: str | Path | None, fmt: str | None, columns: list[str] = FIELDS) -> None:
    """The rows as CSV or JSON to ``out`` (atomically) or stdout, or (no format) one line per face on stdout.
    A file name that is not UTF-8 is written losslessly: its bytes as they are in CSV, \\udcXX in JSON."""
    if fmt is None:
        for r in rows:
            print(_line(r))
        return
    text = _csv_text(rows, columns) if fmt == "csv" else _json_text(rows)
    data = text.encode("utf-8", "surrogateescape")
    if out is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)


def _detectors(model: str | Path | Detector | list[Detector] | None, o: PredictOptions) -> list[Detector]:
    """The detectors to run: every shipped one when ``model`` is None, else the one checkpoint (or the given)."""
    if model is None:
        return load_shipped(o.device, o.precision, tta=o.tta)
    if isinstance(model, (list, tuple)):
        return list(model)
    return [_detector(model, o)]


def _short_source(det: Detector) -> str:
    """Where a threshold comes from, for the one-line summary: a model card states its rule in full (its .md)."""
    if "threshold" in det.card:
        return "model card" + (", on calibrated p" if det.calibration else "")
    return det.threshold_source


def predict_files(model: str | Path | Detector | list[Detector] | None, paths: list[str],
                  out: str | Path | None = None, cam_dir: str | Path | None = None, fmt: str | None = None,
                  options: PredictOptions | None = None) -> list[dict]:
    """Rows (``fields``) for every input: p_fake per face (``options.crop``, see the module doc) and the
    verdict at the threshold (fake when p_fake > it), or a ``status`` saying why an input was not scored.
    ``model``: a checkpoint path or shipped name (one detector), Detectors, or None: every shipped detector
    (``detector.SHIPPED``), each face found once and scored by all, fake when any fires. Written as ``fmt``
    (csv | json; from the suffix of ``out`` when given) to ``out`` or stdout; with neither, one line per face on
    stdout. With ``cam_dir``, a Grad-CAM overlay of every scored face there (per detector when several). Outputs
    are checked before the scoring; the skipped inputs and a summary go to stderr."""
    o = options or PredictOptions()
    if out is not None:
        check_not_package(out)
        check_writable(out)  # first: a folder or an unwritable place is named as such
    fmt = output_format(out, fmt)
    dets = _detectors(model, o)
    crop, why = resolve_crop([d.domain for d in dets], o.crop)
    files, unreadable = expand_paths(paths)
    check_outputs(out, cam_dir, len(files))
    label = str(dets[0].path) if len(dets) == 1 and dets[0].path is not None else "+".join(d.name for d in dets)
    scored = score_inputs(dets, [str(f) for f in files], crop, None, o,
                          desc=f"predict {Path(label).name if len(dets) == 1 else label}")
    for det in dets:
        warning = domain_warning(det, scored)
        if warning:
            print(warning, file=sys.stderr)
    rows = _rows(scored, unreadable, dets, label, o.per_frame)
    write_rows(rows, out, fmt, fields(dets))
    how = "; ".join(f"{'' if len(dets) == 1 else d.name + ' '}{d.threshold:g} from the {_short_source(d)}; "
                    f"tta {d.tta}" for d in dets) + f"; precision {precision_of(dets)}"
    _summary(rows, scored, how, "faces" if crop == "faces" else "whole pictures" + (f": {why}" if why else ""),
             out, listed=fmt is None)
    if cam_dir is not None:
        for k, det in enumerate(dets):
            write_cam_overlays(det, scored, cam_dir, None if len(dets) == 1 else k, o.frames, progress=o.progress)
    return rows


def _summary(rows: list[dict], scored: list[Scored], how: str, crop: str, out: str | Path | None,
             listed: bool) -> None:
    """The skipped inputs (unless the terminal lines ``listed`` them) and one summary line, on stderr (``crop``:
    what was scored, and why; ``how``: the threshold(s) and where they come from)."""
    skipped = [r for r in rows if r["status"] != OK]
    if skipped and not listed:
        print(f"skipped {len(skipped)} file(s):\n" + "\n".join(f"  {_shown(r['path'])}: {terminal_text(r['status'])}"
                                                              for r in skipped), file=sys.stderr)
    # one verdict per face of an image (or per whole image) and one per video (its mean)
    verdicts = [r["verdict"] for r in rows if r["status"] == OK and (r["face"] == "mean" or r["frame"] is None)]
    n_images = sum(s.status == OK and s.kind == "image" for s in scored)
    n_videos = sum(s.status == OK and s.kind == "video" for s in scored)
    print(f"scored {n_images} image(s)" + (f" and {n_videos} video(s)" if n_videos else "")
          + f" ({crop}): {verdicts.count('fake')} fake, "
          f"{verdicts.count('real')} real (threshold {how}), {len(skipped)} skipped"
          + (f" -> {out}" if out else ""), file=sys.stderr)


# ----------------------------------------------------------------------------- Grad-CAM
def write_cam_overlays(det: Detector, scored: list[Scored], out_dir: str | Path, index: int | None = None,
                       frames: int = FRAMES, batch_size: int = 16, progress: bool = True,
                       max_side: int = 512) -> list[Path]:
    """One Grad-CAM figure (fake class, ``saliency.gradcam`` on ``det.model``) per scored face or whole picture,
    over the pixels that were scored (at most ``max_side`` px), titled with its p(fake) and verdict, with a
    colour bar: ``out_dir/<stem>[_f<frame>][_face<k>]_cam.png`` (stems that repeat get ``_<index>``). ``index``:
    which of several detectors' scores ``scored`` holds this is (its name then ends the file name); None: the
    only one. Returns the paths."""
    from .io import save_figure
    from .plots.images import cam_overlay, scored_cam
    from .saliency import gradcam  # lazy: only --cam needs Grad-CAM

    k = index or 0
    tag = "" if index is None else f"_{det.name}"
    model = det.model
    prep = det.preprocess
    threshold = det.threshold
    ok = [s for s in scored if s.status == OK]
    stems = [Path(s.path).stem for s in ok]
    out_dir = Path(out_dir)
    written = []
    for n, s in enumerate(tqdm(ok, desc="grad-cam", leave=False, disable=not progress)):
        stem = f"{stems[n]}_{n}" if stems.count(stems[n]) > 1 else stems[n]
        pictures = dict([(f.index, f.image) for f in sample_frames(s.path, frames)] if s.kind == "video"
                        else [(None, load_rgb(s.path))])
        parts = []
        for frame, rs, ps in s.views:
            if ps is None:  # too small to judge: not scored, no map
                continue
            p = ps[k]
            im = pictures[frame]
            region = None if rs is None else rs[k]
            if region is not None and not region.whole:
                im = im.crop(region.crop)
            name = stem + (f"_f{frame}" if frame is not None else "") + (
                f"_face{region.face}" if region is not None else "") + f"{tag}_cam.png"
            parts.append((name, im, p))
        for i in range(0, len(parts), batch_size):
            chunk = parts[i:i + batch_size]
            x = prep.normalise(torch.stack([prep.to_uint8(im) for _, im, _ in chunk]))
            for (name, im, p), cam in zip(chunk, gradcam(model, x)):
                f = min(1.0, max_side / max(im.size))
                shown = im if f == 1.0 else im.resize((round(im.width * f), round(im.height * f)), Image.BILINEAR)
                cam = np.asarray(Image.fromarray(cam).resize(shown.size, Image.BILINEAR))
                verdict = "fake" if p > threshold else "real"
                fig = scored_cam(cam_overlay(np.asarray(shown), cam),
                                 f"p(fake) {p:.3f}: {verdict} (threshold {threshold:.3g})")
                written.append(save_figure(out_dir / name, fig))
    return written
