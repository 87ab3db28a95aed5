"""Scoring what users have with a checkpoint: ``deepfake-detect predict`` (p(fake) per face in photos, folders
and videos, as one line per face, CSV or JSON, optionally with Grad-CAM overlays) and ``deepfake-detect
evaluate`` (metrics of a checkpoint on any labelled folder: cross-dataset evaluation). Both score with the
checkpoint's test-time augmentation unless ``tta`` (``--tta``) says otherwise, as the evaluate-roc-det stage does.

What is scored (``crop``, ``--crop``): ``faces`` finds every face (``faces.Detector``) and scores a square crop
of each, framed like the checkpoint's training images; a picture that already is a face crop (the training
and test images of every dataset here) is scored as it is. ``whole`` scores each picture unchanged, squashed to
the model's size, exactly as the evaluate-roc-det stage does. ``auto`` (default): ``faces`` when the checkpoint
records that it was trained on face crops, else ``whole``. A video (``video.VIDEO_EXTENSIONS``) is scored on
``frames`` evenly spaced frames; its p(fake) is the mean of its face scores, as the DFDC winners aggregated.

Nothing is dropped without a word: files that are neither images nor videos, files that do not decode,
pictures without a face and entries that cannot be read (symlink loops, unreadable folders) get a row whose
``status`` says why. Every output is checked (writable, room for it) before the scoring starts.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import metrics
from .checkpoint import load_model
from .data import BadImageError, DatasetError, Preprocess, is_image_file, list_files, load_rgb
from .engine import default_num_workers, predict, resolve_device
from .errors import UserError
from .faces import Detector, Framing, Region, clipped_box, regions
from .io import OutputError, atomic_path, check_writable, output_errors, spreadsheet_safe
from .score import check_finite, resolve_tta, score_paths, threshold_metrics, threshold_source
from .splits import scan_source
from .video import FRAMES, BadVideoError, is_video_file, sample_frames

FIELDS = ["path", "frame", "face", "box", "region", "p_fake", "verdict", "threshold", "model", "status"]
CROPS = ("auto", "faces", "whole")
FORMATS = ("csv", "json")
OK = "ok"
NOTHING_SCORED = 3  # exit code of `predict` when no input could be scored (rows and reasons are still written)
ROW_BYTES, CAM_BYTES = 512, 600_000  # generous sizes of a CSV/JSON row and a Grad-CAM PNG: the free-space check


class PredictError(UserError, ValueError):
    """An option or output of predict that cannot work; the message names it."""


# ----------------------------------------------------------------------------- scoring
@dataclass
class Scored:
    """One input file and what came of it: ``views`` (frame or None, Region or None for a whole picture,
    p_fake), or the ``status`` saying why it was not scored."""

    path: str
    kind: str  # image | video | other
    status: str = OK
    views: list[tuple[int | None, Region | None, float]] = field(default_factory=list)
    n_frames: int = 0
    size: tuple[int, int] | None = None

    @property
    def p_fake(self) -> float:
        """The input's one score: a video's mean face score, a picture's highest (any fake face makes it fake)."""
        p = [v[2] for v in self.views]
        return float(np.mean(p) if self.kind == "video" else np.max(p))


def resolve_crop(ckpt: dict, crop: str) -> tuple[str, str]:
    """(``faces`` or ``whole``, why ``auto`` chose whole, or ""): ``auto`` follows the checkpoint's
    ``domain.face_crops``."""
    if crop not in CROPS:
        raise PredictError(f"--crop: unknown mode {crop!r} (expected one of {', '.join(CROPS)})")
    if crop != "auto":
        return crop, ""
    domain = ckpt.get("domain") or {}
    if domain.get("face_crops"):
        return "faces", ""
    why = "not trained on face crops" if domain.get("face_crops") is False else "no record of face-crop training"
    return "whole", f"the checkpoint has {why}; --crop faces detects faces"


def _identity(item):
    return item


class _Inputs(Dataset):
    """Per input: the pictures (an image, or a video's sampled frames), what to score in each (whole, or one
    crop per face) as model-size uint8 views, or the reason it cannot be scored. Loader workers each build
    their own detector."""

    def __init__(self, paths: list[str], kinds: list[str], prep: Preprocess, crop: str, framing: Framing,
                 frames: int):
        self.paths, self.kinds, self.prep, self.crop, self.framing, self.frames = paths, kinds, prep, crop, \
            framing, frames
        self.detector = Detector()

    def __len__(self) -> int:
        return len(self.paths)

    def pictures(self, i: int) -> list[tuple[int | None, Image.Image]]:
        if self.kinds[i] == "video":
            return [(f.index, f.image) for f in sample_frames(self.paths[i], self.frames)]
        return [(None, load_rgb(self.paths[i]))]

    def regions(self, im: Image.Image) -> list[Region]:
        if self.crop == "whole":
            return [Region(0, None, (0, 0, *im.size), True)]
        return regions(im.size, self.detector(im), self.framing)

    def __getitem__(self, i: int) -> dict:
        try:
            pictures = self.pictures(i)
        except (BadImageError, BadVideoError) as e:
            return {"i": i, "status": str(e).removeprefix(f"{self.paths[i]}: "), "views": None, "meta": []}
        views, meta = [], []
        for frame, im in pictures:
            for r in self.regions(im):
                views.append(self.prep.to_hwc(im if r.whole else im.crop(r.crop)))
                meta.append((frame, r))
        status = OK if views else ("no face found" if self.kinds[i] == "image"
                                   else f"no face found in {len(pictures)} frame(s)")
        return {"i": i, "status": status, "views": np.stack(views) if views else None, "meta": meta,
                "n_frames": len(pictures), "size": pictures[0][1].size}


def _score_batch(model: nn.Module, prep: Preprocess, views: np.ndarray, device: torch.device, tta: str) -> np.ndarray:
    x = torch.from_numpy(views).permute(0, 3, 1, 2)  # (B, S, S, 3) uint8 -> (B, 3, S, S)
    probs, _, _ = predict(model, [(x, torch.zeros(len(x), dtype=torch.long))], device, amp=False, progress=False,
                          normalise=prep.normalise, tta=tta)
    return probs[:, 1].astype(np.float64)


def score_inputs(model: nn.Module, ckpt: dict, paths: Sequence[str], crop: str, framing: Framing,
                 device: torch.device, batch_size: int = 64, num_workers: int = -1, progress: bool = True,
                 desc: str = "score", tta: str = "checkpoint", frames: int = FRAMES) -> list[Scored]:
    """Every input scored as ``crop`` (``faces`` or ``whole``) says; videos on ``frames`` frames. Whole images
    go through ``score.score_paths``, the evaluate stage's own loop (the same numbers); the rest through
    ``_Inputs`` (decoding and face detection in loader workers, the model in batches of ``batch_size``)."""
    tta = resolve_tta(ckpt, tta)
    kinds = ["image" if is_image_file(p) else "video" if is_video_file(p) else "other" for p in paths]
    out = [Scored(str(p), k, status=OK if k != "other" else "not an image or video file")
           for p, k in zip(paths, kinds)]
    todo = [i for i, k in enumerate(kinds) if k != "other"]
    if crop == "whole":
        images = [i for i in todo if kinds[i] == "image"]
        p, errors = score_paths(model, ckpt, [str(paths[i]) for i in images], None, device, batch_size, num_workers,
                                progress, desc=desc, tta=tta)
        for j, i in enumerate(images):
            if j in errors:
                out[i].status = errors[j].removeprefix(f"{paths[i]}: ")
            else:
                out[i].views = [(None, None, float(p[j]))]
        todo = [i for i in todo if kinds[i] == "video"]
    if not todo:
        return out
    prep = Preprocess(ckpt["image_size"], ckpt["mean"], ckpt["std"])
    ds = _Inputs([str(paths[i]) for i in todo], [kinds[i] for i in todo], prep, crop, framing, frames)
    if crop == "faces":
        ds.detector.load()  # here: a detector that cannot load is one line, not a loader worker's traceback
    loader = DataLoader(ds, batch_size=None, shuffle=False, collate_fn=_identity,
                        num_workers=min(default_num_workers(num_workers), len(todo) - 1))
    pending: list[np.ndarray] = []
    owners: list[tuple[int, int]] = []  # (input, view) of each pending view

    def flush(n: int) -> None:
        views = np.stack(pending[:n])
        p_fake = _score_batch(model, prep, views, device, tta)
        check_finite(p_fake, model, ckpt, [str(paths[i]) for i, _ in owners[:n]])
        for (i, j), p in zip(owners[:n], p_fake):
            frame, region, _ = out[i].views[j]
            out[i].views[j] = (frame, region, float(p))
        del pending[:n], owners[:n]

    for item in tqdm(loader, total=len(todo), desc=desc, leave=False, disable=not progress):
        i = todo[item["i"]]
        out[i].status, out[i].n_frames, out[i].size = item["status"], item.get("n_frames", 0), item.get("size")
        if item["views"] is None:
            continue
        for frame, region in item["meta"]:
            out[i].views.append((frame, None if region.whole and region.box is None else region, float("nan")))
            owners.append((i, len(out[i].views) - 1))
        pending += list(item["views"])
        while len(pending) >= batch_size:
            flush(batch_size)
    if pending:
        flush(len(pending))
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


def domain_warning(ckpt: dict, model_path: str, scored: list[Scored]) -> str:
    """One line for stderr when a checkpoint trained on the procedural demo faces scores anything else (its
    p(fake) says nothing about photographs), with what to use instead; "" otherwise."""
    domain = ckpt.get("domain") or {}
    if domain.get("data") != "demo":
        return ""
    other = next((s for s in scored if s.status == OK and not _looks_like_demo(s, domain)), None)
    if other is None:
        return ""
    return (f"warning: {model_path} was trained on the procedural demo faces ({domain.get('image_size')} px), "
            f"and {_shown(other.path)} is not one of them: its p(fake) says nothing about photographs or videos. "
            "Score real pictures with a checkpoint of the real-data pipeline: real/models/finetune-synth.pt "
            "(GAN faces) or real/models/finetune-fakes.pt (face swaps), from `dvc pull` where a DVC remote holds "
            "them or `dvc repro real/dvc.yaml` (README: real data)")


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


def evaluate_folder(model_path: str | Path, data: str | Path, split: str = "test", device: str = "auto",
                    batch_size: int = 64, n_bootstrap: int = 1000, num_workers: int = -1,
                    progress: bool = True, tta: str = "checkpoint", crop: str = "auto",
                    face_margin: float | None = None, frames: int = FRAMES) -> dict:
    """Score a checkpoint on a labelled folder: its metrics (``acc``, ``balanced_acc`` at 0.5, and at the
    checkpoint's ``threshold``: ``acc_at_threshold``, ``balanced_acc_at_threshold``), ``threshold_source``,
    the ``tta`` and ``crop`` used, ``n_skipped`` and ``skipped`` (every file in the folder not scored, as
    ``path: reason``: not decodable, no face found ...). A picture's score is its highest face score, a
    video's the mean of its face scores. ``tta``: ``checkpoint`` (its own) or one of ``engine.TTA_MODES``."""
    dev = resolve_device(device)
    model, ckpt = load_model(model_path, dev)
    tta = resolve_tta(ckpt, tta, str(model_path))
    crop, _ = resolve_crop(ckpt, crop)
    rows, skipped = labelled_images(data, split)
    scored = score_inputs(model, ckpt, [r["path"] for r in rows], crop, Framing.of_checkpoint(ckpt, face_margin), dev,
                          batch_size, num_workers, progress, desc=f"evaluate {Path(model_path).name}", tta=tta,
                          frames=frames)
    warning = domain_warning(ckpt, str(model_path), scored)
    if warning:
        print(warning, file=sys.stderr)
    skipped += [f"{s.path}: {s.status}" for s in scored if s.status != OK]
    ok = [j for j, s in enumerate(scored) if s.status == OK]
    y, p = np.array([rows[j]["label"] for j in ok]), np.array([scored[j].p_fake for j in ok])
    try:
        m = metrics.binary_metrics(y, p, threshold=0.5, n_bootstrap=n_bootstrap)
        m.update(threshold_metrics(y, p, ckpt))
    except ValueError as e:  # e.g. every fake failed to decode: say which files were left out
        raise DatasetError(f"{data}: cannot evaluate ({e})"
                           + (f"; skipped {len(skipped)} file(s): " + "; ".join(skipped[:10]) if skipped else "")
                           + (" ..." if len(skipped) > 10 else "")) from e
    info = {"model": str(model_path), "run": ckpt.get("run", ""), "trained_on": ckpt.get("dataset", ""),
            "data": str(data), "image_size": ckpt["image_size"], "tta": tta, "crop": crop,
            "threshold_source": threshold_source(ckpt), "n_skipped": len(skipped)}
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
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
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


def check_outputs(out: str | Path | None, cam_dir: str | Path | None, n_inputs: int) -> None:
    """Before any scoring: ``out`` and ``cam_dir`` can be written and have room for ``n_inputs`` inputs' output."""
    if out is not None:
        check_writable(out)
        _check_room(Path(out).parent, ROW_BYTES * max(n_inputs, 1), f"--out {out}")
    if cam_dir is not None:
        cam = Path(cam_dir)
        try:
            check_writable(cam / "overlay_cam.png")
        except OutputError as e:
            raise OutputError(f"--cam {cam}: cannot write overlays there ({str(e).partition('(')[2].rstrip(')')})") \
                from e
        _check_room(cam, CAM_BYTES * max(n_inputs, 1), f"--cam {cam}")


def _shown(path: str) -> str:
    """A path for the terminal: bytes that are not UTF-8 (a surrogate-escaped name) as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def csv_cell(value) -> str:
    """A CSV cell a spreadsheet shows as text: one that starts with = + - @, a tab or a carriage return (a
    formula or a DDE payload) gets a leading single quote, as OWASP's CSV-injection guidance says."""
    return spreadsheet_safe("" if value is None else str(value))


def _rows(scored: list[Scored], unreadable: list[tuple[Path, str]], threshold: float, model: str,
          per_frame: bool) -> list[dict]:
    """The output rows (``FIELDS``): one per scored face, or per whole picture, a video's mean (and with
    ``per_frame`` its faces frame by frame), one per input not scored; the unreadable entries last."""
    base = {"threshold": threshold, "model": model}

    def row(s: Scored, frame=None, face=None, box=None, region=None, p=None, status=OK) -> dict:
        verdict = None if p is None else ("fake" if p > threshold else "real")
        return {"path": s.path, "frame": frame, "face": face, "box": box, "region": region, "p_fake": p,
                "verdict": verdict, **base, "status": status}

    rows = []
    for s in scored:
        if s.status != OK:
            rows.append(row(s, status=s.status))
            continue
        faces = []
        for frame, region, p in s.views:
            if region is None:
                faces.append(row(s, frame, "whole", None, [0, 0, *s.size] if s.size else None, p))
            else:
                faces.append(row(s, frame, region.face, clipped_box(region.box, s.size), list(region.crop), p))
        if s.kind == "video":
            rows += faces if per_frame else []
            rows.append(row(s, None, "mean", None, None, s.p_fake))
        else:
            rows += faces
    return rows + [{**row(Scored(str(f), "other"), status=why)} for f, why in unreadable]


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        flat = {**r, "box": " ".join(map(str, r["box"])) if r["box"] else None,
                "region": " ".join(map(str, r["region"])) if r["region"] else None,
                "p_fake": None if r["p_fake"] is None else f"{r['p_fake']:.6f}", "threshold": f"{r['threshold']:g}"}
        w.writerow({k: csv_cell(v) for k, v in flat.items()})
    return buf.getvalue()


def _json_text(rows: list[dict]) -> str:
    return json.dumps(rows, indent=1) + "\n"  # ensure_ascii: a non-UTF-8 name stays \udcXX, lossless


def _line(r: dict) -> str:
    """One line per face for the terminal."""
    where = _shown(r["path"]) + (f" frame {r['frame']}" if r["frame"] is not None else "")
    if r["status"] != OK:
        return f"{where}: skipped ({r['status']})"
    if r["face"] == "whole":
        what = "whole picture"
    elif r["face"] == "mean":
        what = "mean of its faces"
    else:
        what = f"face {r['face']} at {r['box'][0]},{r['box'][1]}-{r['box'][2]},{r['box'][3]}"
    return f"{where}: {what}: {r['verdict']} (p_fake {r['p_fake']:.3f}, threshold {r['threshold']:.3g})"


def write_rows(rows: list[dict], out: str | Path | None, fmt: str | None) -> None:
    """The rows as CSV or JSON to ``out`` (atomically) or stdout, or (no format) one line per face on stdout.
    A file name that is not UTF-8 is written losslessly: its bytes as they are in CSV, \\udcXX in JSON."""
    if fmt is None:
        for r in rows:
            print(_line(r))
        return
    text = _csv_text(rows) if fmt == "csv" else _json_text(rows)
    data = text.encode("utf-8", "surrogateescape")
    if out is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)


def predict_files(model_path: str | Path, paths: list[str], out: str | Path | None = None,
                  cam_dir: str | Path | None = None, device: str = "auto", batch_size: int = 64,
                  num_workers: int = -1, progress: bool = True, tta: str = "checkpoint", crop: str = "auto",
                  face_margin: float | None = None, frames: int = FRAMES, per_frame: bool = False,
                  fmt: str | None = None) -> list[dict]:
    """Rows (``FIELDS``) for every input: p_fake per face (``crop``, see the module doc), verdict fake when
    p_fake > the checkpoint's threshold, or a ``status`` saying why an input was not scored. Written as
    ``fmt`` (csv | json; from the suffix of ``out`` when given) to ``out`` or stdout; with neither, one line
    per face on stdout. With ``cam_dir``, a Grad-CAM overlay of every scored face there. Outputs are checked
    before the scoring; the skipped inputs and a summary go to stderr."""
    if out is not None:
        check_writable(out)  # first: a folder or an unwritable place is named as such
    fmt = output_format(out, fmt)
    dev = resolve_device(device)
    model, ckpt = load_model(model_path, dev)
    tta = resolve_tta(ckpt, tta, str(model_path))
    crop, why = resolve_crop(ckpt, crop)
    files, unreadable = expand_paths(paths)
    check_outputs(out, cam_dir, len(files))
    framing = Framing.of_checkpoint(ckpt, face_margin)
    scored = score_inputs(model, ckpt, [str(f) for f in files], crop, framing, dev, batch_size, num_workers,
                          progress, desc=f"predict {Path(model_path).name}", tta=tta, frames=frames)
    warning = domain_warning(ckpt, str(model_path), scored)
    if warning:
        print(warning, file=sys.stderr)
    threshold = float(ckpt["threshold"])
    rows = _rows(scored, unreadable, threshold, str(model_path), per_frame)
    write_rows(rows, out, fmt)
    _summary(rows, scored, threshold, f" from the {threshold_source(ckpt)}; tta {tta}",
             "faces" if crop == "faces" else "whole pictures" + (f": {why}" if why else ""), out, listed=fmt is None)
    if cam_dir is not None:
        write_cam_overlays(model, ckpt, scored, cam_dir, frames=frames, progress=progress)
    return rows


def _summary(rows: list[dict], scored: list[Scored], threshold: float, how: str, crop: str,
             out: str | Path | None, listed: bool) -> None:
    """The skipped inputs (unless the terminal lines ``listed`` them) and one summary line, on stderr (``crop``:
    what was scored, and why)."""
    skipped = [r for r in rows if r["status"] != OK]
    if skipped and not listed:
        print(f"skipped {len(skipped)} file(s):\n" + "\n".join(f"  {_shown(r['path'])}: {r['status']}"
                                                              for r in skipped), file=sys.stderr)
    # one verdict per face of an image (or per whole image) and one per video (its mean)
    verdicts = [r["verdict"] for r in rows if r["status"] == OK and (r["face"] == "mean" or r["frame"] is None)]
    n_images = sum(s.status == OK and s.kind == "image" for s in scored)
    n_videos = sum(s.status == OK and s.kind == "video" for s in scored)
    print(f"scored {n_images} image(s)" + (f" and {n_videos} video(s)" if n_videos else "")
          + f" ({crop}): {verdicts.count('fake')} fake, "
          f"{verdicts.count('real')} real (threshold {threshold:g}{how}), {len(skipped)} skipped"
          + (f" -> {out}" if out else ""), file=sys.stderr)


# ----------------------------------------------------------------------------- Grad-CAM
def write_cam_overlays(model: nn.Module, ckpt: dict, scored: list[Scored], out_dir: str | Path,
                       frames: int = FRAMES, batch_size: int = 16, progress: bool = True,
                       max_side: int = 512) -> list[Path]:
    """One Grad-CAM figure (fake class, ``explain.gradcam``) per scored face or whole picture, over the pixels
    that were scored (at most ``max_side`` px), titled with its p(fake) and verdict, with a colour bar:
    ``out_dir/<stem>[_f<frame>][_face<k>]_cam.png`` (stems that repeat get ``_<index>``). Returns the paths."""
    from .explain import gradcam  # lazy: only --cam needs Grad-CAM
    from .io import save_figure
    from .plots.images import cam_overlay, scored_cam

    prep = Preprocess(ckpt["image_size"], ckpt["mean"], ckpt["std"])
    threshold = float(ckpt["threshold"])
    ok = [s for s in scored if s.status == OK]
    stems = [Path(s.path).stem for s in ok]
    out_dir = Path(out_dir)
    written = []
    for n, s in enumerate(tqdm(ok, desc="grad-cam", leave=False, disable=not progress)):
        stem = f"{stems[n]}_{n}" if stems.count(stems[n]) > 1 else stems[n]
        pictures = dict([(f.index, f.image) for f in sample_frames(s.path, frames)] if s.kind == "video"
                        else [(None, load_rgb(s.path))])
        parts = []
        for frame, region, p in s.views:
            im = pictures[frame]
            if region is not None and not region.whole:
                im = im.crop(region.crop)
            name = stem + (f"_f{frame}" if frame is not None else "") + (
                f"_face{region.face}" if region is not None else "") + "_cam.png"
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
