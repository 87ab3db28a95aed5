"""``deepfake-detect crop-faces SRC DST``: a dataset of face crops made from uncropped photos, framed the way
the face-crop sets are (a square around each detected face, a margin, the model's size), in the same folder
layout, so that ``prepare-splits`` reads DST like any dataset (``data.<name>.source: DST``).

Each photo gives the crop of its largest face (``all_faces``: one crop per face, ``<name>_face<k>.png``). Crops
are PNG (no second JPEG pass on top of the source's). A photo with no face found, or that does not decode, is
not skipped in silence: it is listed with its reason in DST/crop_faces.json and on stderr.
"""
from __future__ import annotations

import sys
from pathlib import Path

from tqdm.auto import tqdm

from .data import BadImageError, is_image_file, list_files, load_rgb
from .errors import UserError
from .faces import DETECTOR, Detector, Face, Framing, crop_square
from .io import atomic_path, path_text, write_json

REPORT = "crop_faces.json"  # in DST: what was cropped, and every photo that gave no crop, with its reason


def _save(im, path: Path) -> None:
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def crop_folder(src: str | Path, dst: str | Path, size: int = 224, margin: float = 0.35, all_faces: bool = False,
                detector: Detector | None = None, progress: bool = True) -> dict:
    """Face crops of every image under ``src`` written to ``dst`` at the same relative paths (suffix .png):
    side = (1 + ``margin``) x the detected box's longer side, resized to ``size`` px. Returns (and writes to
    dst/crop_faces.json) the counts, each crop's source box and every image that gave no crop."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise UserError(f"{src}: not a folder (crop-faces reads a folder of photos, e.g. train|val|test/real|fake)")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise UserError(f"{dst}: the output folder must lie outside {src} (the crops would be read as photos)")
    detector, framing = detector or Detector(), Framing(scale=1.0 + margin, ox=0.0, oy=0.0)
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
        rel = f.relative_to(src).with_suffix("")
        for k, face in enumerate(found if all_faces else found[:1], 1):
            box = crop_square(face, im.size, framing)
            out = dst / (f"{rel}_face{k}.png" if all_faces else f"{rel}.png")
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
