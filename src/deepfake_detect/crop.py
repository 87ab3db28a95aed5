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
empties it first; and then only when it is an earlier crop-faces output (it holds crop_faces.json), so that a
mistyped DST never empties a folder of something else. ``size`` and ``margin`` have the ranges of the params
key ``image_size`` and of ``--face-margin``.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tqdm.auto import tqdm

from .config import TRAIN_SCHEMA, Num, check_value
from .data import BadImageError, is_image_file, list_files, load_rgb
from .errors import UserError
from .faces import DETECTOR, Face, FaceFinder, Framing, crop_square
from .io import OutputError, atomic_path, check_writable, output_errors, path_text, write_json

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
        if not (dst / REPORT).is_file():
            raise OutputError(f"{dst}: --replace empties only an earlier crop-faces output, and this folder has no "
                              f"{REPORT}; pick an empty DST, or empty it yourself")
        for entry in held:
            try:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            except OSError as e:
                raise OutputError(f"{dst}: --replace cannot empty it ({entry.name}: {e.strerror or e})") from None
    check_writable(dst / REPORT)


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
    crops = []
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
            crops.append({"source": path_text(f), "crop": path_text(out), "box": [round(v, 1) for v in face.box],
                          "confidence": round(face.confidence, 4)})
    summary = {"detector": DETECTOR, "source": path_text(src), "size": size, "margin": margin,
               "n_images": sum(map(is_image_file, files)), "n_crops": len(crops), "n_skipped": len(skipped),
               "skipped": skipped, "crops": crops}
    write_json(dst / REPORT, summary)
    for line in skipped[:10]:
        print(f"crop-faces: skipped {line}", file=sys.stderr)
    if len(skipped) > 10:
        print(f"crop-faces: ... and {len(skipped) - 10} more (all in {dst / REPORT})", file=sys.stderr)
    print(f"crop-faces: {len(crops)} crop(s) of {summary['n_images']} image(s) -> {dst} "
          f"({len(skipped)} skipped, listed in {dst / REPORT})")
    return summary
