"""``deepfake-detect crop-faces SRC DST``: a dataset of face crops made from uncropped photos, framed the way
the face-crop sets are (a square around each detected face, a margin, the model's size), in the same folder
layout, so that ``prepare-splits`` reads DST like any dataset (``data.<name>.source: DST``).

Each photo gives the crop of its largest face (``all_faces``: one crop per face). A crop keeps the photo's
whole file name and adds ``.png`` (``a.jpg`` -> ``a.jpg.png``; ``all_faces``: ``a.jpg.face<k>.png``), so
``a.jpg`` and ``a.png`` of one folder give two crops, never one overwriting the other. Crops are PNG (no second
JPEG pass on top of the source's). A photo with no face found, or that does not decode, is not skipped in
silence: it is listed with its reason in DST/crop_faces.json and on stderr; crop_faces.json lists exactly the
crops written.

DST is checked before the first photo is read: not a file, writable, and empty, so that no older crop is left
beside the new ones to be read by prepare-splits. A DST that holds files is refused unless ``replace``, which
empties it first; and then only when every file in it is one an earlier crop-faces run wrote (its crop_faces.json
lists them, ``files``): a mistyped DST, or a file a person put there (a groups.csv, notes), is never deleted, and
a symbolic link anywhere in DST is refused, never followed nor removed. ``size`` and ``margin`` have the ranges
of the params key ``image_size`` and of ``--face-margin``.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tqdm.auto import tqdm

from .config import TRAIN_SCHEMA, Num, check_value
from .data import BadImageError, is_image_file, list_files, load_rgb
from .errors import UserError
from .faces import DETECTOR, Face, FaceFinder, Framing, crop_square
from .io import OutputError, atomic_path, check_writable, output_errors, path_bytes, path_text, write_json

REPORT = "crop_faces.json"  # in DST: what was cropped, and every photo that gave no crop, with its reason
SIZE = TRAIN_SCHEMA["image_size"]  # --size: the range of a model's input size, [32, 1024]
MARGIN = Num(-0.5, 3.0)  # --margin: the range of predict's and evaluate's --face-margin


def crop_name(rel: Path, face: int | None = None) -> Path:
    """Where the crop of the photo at ``rel`` (relative to SRC) goes, relative to DST: its whole file name and
    ``.png`` (``real/a.jpg`` -> ``real/a.jpg.png``; face ``k`` of ``all_faces``: ``real/a.jpg.face<k>.png``). Two
    photos of a folder never share a crop name, whatever their extensions."""
    return rel.parent / (f"{rel.name}.face{face}.png" if face is not None else f"{rel.name}.png")


def check_destination(dst: Path, replace: bool = False) -> None:
    """Every check on DST, before the first photo is read: not a file; empty, or ``replace`` and an earlier
    crop-faces output (then emptied here); writable. Else one line naming DST (and the flag)."""
    if dst.exists() and not dst.is_dir():
        raise OutputError(f"{dst}: cannot write crops there (it is a file, not a folder); pick another DST")
    with output_errors(dst):  # a DST that cannot be listed
        held = sorted(dst.iterdir()) if dst.is_dir() else []
    if held and not replace:
        raise OutputError(f"{dst}: already holds {len(held)} entr{'y' if len(held) == 1 else 'ies'} (e.g. "
                          f"{held[0].name}); older crops would be mixed with the new ones: pick an empty DST, or "
                          "pass --replace to empty it first")
    if held:
        _empty_earlier_output(dst)
    check_writable(dst / REPORT)


def _written_before(dst: Path) -> set[str]:
    """The files (relative to DST, as ``path_text``) that the crop-faces run whose REPORT is in ``dst`` wrote;
    an OutputError when there is no such report (then DST is not an earlier output)."""
    report = dst / REPORT
    refuse = (f"{dst}: --replace empties only an earlier crop-faces output, and this folder has no readable "
              f"{REPORT} written by crop-faces")
    if report.is_symlink() or not report.is_file():
        raise OutputError(f"{refuse}; pick an empty DST, or empty it yourself")
    try:
        summary = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise OutputError(f"{refuse} (it is not valid JSON); pick an empty DST, or empty it yourself") from None
    if not isinstance(summary, dict) or "detector" not in summary or not isinstance(summary.get("crops"), list):
        raise OutputError(f"{refuse} (its {REPORT} is another file); pick an empty DST, or empty it yourself")
    files = summary.get("files")
    if isinstance(files, list):
        return {f for f in files if isinstance(f, str)}
    out = set()  # a report of an older version: the crops' paths, as they were written (relative to the cwd)
    for c in summary["crops"]:
        try:
            rel = Path(os.fsdecode(path_bytes(c["crop"]))).resolve().relative_to(dst.resolve())
        except (KeyError, TypeError, ValueError):
            continue
        out.add(path_text(rel))
    return out


def _empty_earlier_output(dst: Path) -> None:
    """Remove what an earlier crop-faces run wrote to ``dst`` (its crops, its report, the folders left empty), after
    checking that nothing else is there: a file it did not write or a symbolic link (never followed nor removed)
    is an OutputError of one line, and then nothing is removed."""
    written = _written_before(dst)
    listed, folders, problems = [], [], []
    for root, dirs, files in os.walk(dst, onerror=lambda e: problems.append(e)):
        for name in dirs + files:
            entry = Path(root) / name
            if entry.is_symlink():
                raise OutputError(f"{dst}: --replace refused: {path_text(entry)} is a symbolic link (crop-faces "
                                  "writes none, and never follows nor removes one); remove it yourself, or pick "
                                  "an empty DST")
        folders += [Path(root) / d for d in dirs]
        for name in files:
            entry = Path(root) / name
            rel = path_text(entry.relative_to(dst))
            if rel != REPORT and rel not in written:
                raise OutputError(f"{dst}: --replace empties only what an earlier crop-faces run wrote, and "
                                  f"{path_text(entry)} is not listed in its {REPORT}; move it out (or pick "
                                  "another DST), then rerun")
            listed.append(entry)
    if problems:
        raise OutputError(f"{dst}: --replace cannot list it ({problems[0].strerror or problems[0]}: "
                          f"{problems[0].filename})")
    for entry in [*(f for f in listed if f.name != REPORT or f.parent != dst), dst / REPORT]:
        try:
            entry.unlink()
        except OSError as e:
            raise OutputError(f"{dst}: --replace cannot empty it ({path_text(entry)}: {e.strerror or e})") from None
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):  # the deepest first
        try:
            folder.rmdir()
        except OSError as e:
            raise OutputError(f"{dst}: --replace cannot empty it ({path_text(folder)}: {e.strerror or e})") from None


def _save(im, path: Path) -> None:
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def crop_folder(src: str | Path, dst: str | Path, size: int = 224, margin: float = 0.35, all_faces: bool = False,
                detector: FaceFinder | None = None, progress: bool = True, replace: bool = False) -> dict:
    """Face crops of every image under ``src`` written to ``dst`` at the same relative paths (``crop_name``):
    side = (1 + ``margin``) x the detected box's longer side, resized to ``size`` px. Returns (and writes to
    dst/crop_faces.json) the counts, each crop's source box and every image that gave no crop. ``dst`` must be
    empty, or ``replace`` (an earlier output, emptied first): ``check_destination``."""
    src, dst = Path(src), Path(dst)
    size = check_value("crop-faces", "--size", size, SIZE)
    margin = check_value("crop-faces", "--margin", margin, MARGIN)
    if not src.is_dir():
        raise UserError(f"{src}: not a folder (crop-faces reads a folder of photos, e.g. train|val|test/real|fake)")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise UserError(f"{dst}: the output folder must lie outside {src} (the crops would be read as photos)")
    if dst.resolve() in src.resolve().parents:
        raise UserError(f"{dst}: the output folder must not hold {src} (--replace would empty it)")
    check_destination(dst, replace)
    detector, framing = detector or FaceFinder(), Framing(scale=1.0 + margin, ox=0.0, oy=0.0)
    files, problems = list_files(src)
    skipped = [f"{path_text(p)}: {why}" for p, why in problems]
    skipped += [f"{path_text(f)}: not an image file" for f in files if not is_image_file(f)]
    crops, written = [], []
    for f in tqdm([f for f in files if is_image_file(f)], desc=f"crop faces of {src}", disable=not progress):
        try:
            im = load_rgb(f)  # EXIF orientation applied: the face is found upright
        except BadImageError as e:
            skipped.append(str(e))
            continue
        found: list[Face] = detector(im)
        if not found:
            skipped.append(f"{path_text(f)}: no face found")
            continue
        rel = f.relative_to(src)
        for k, face in enumerate(found if all_faces else found[:1], 1):
            box = crop_square(face, im.size, framing)
            out = dst / crop_name(rel, k if all_faces else None)
            _save(im.crop(box).resize((size, size), resample=3), out)  # 3: bicubic
            written.append(path_text(out.relative_to(dst)))
            crops.append({"source": path_text(f), "crop": path_text(out), "box": [round(v, 1) for v in face.box],
                          "confidence": round(face.confidence, 4)})
    summary = {"detector": DETECTOR, "source": path_text(src), "size": size, "margin": margin,
               "n_images": sum(map(is_image_file, files)), "n_crops": len(crops), "n_skipped": len(skipped),
               "skipped": skipped, "crops": crops,
               "files": written}  # every file written here but this report: what --replace may remove
    write_json(dst / REPORT, summary)
    for line in skipped[:10]:
        print(f"crop-faces: skipped {line}", file=sys.stderr)
    if len(skipped) > 10:
        print(f"crop-faces: ... and {len(skipped) - 10} more (all in {dst / REPORT})", file=sys.stderr)
    print(f"crop-faces: {len(crops)} crop(s) of {summary['n_images']} image(s) -> {dst} "
          f"({len(skipped)} skipped, listed in {dst / REPORT})")
    return summary
