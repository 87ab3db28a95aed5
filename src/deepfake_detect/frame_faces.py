"""The frame-faces stage of the real pipeline (``sources.py`` says why): every image of a folder with sources.csv
cut to its largest face by the project's face finder and framed one way (``crop.crop_folder``), in the same layout
with its own sources.csv; with ``exclude``, a second layout without those sources in train and val; with
``train_also``, the train split of other course-layout folders framed the same way and added to both layouts' train
(more generators and real photos to learn from; their val and test stay out, so every reported figure is the
sourced folder's)."""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

from .crop import REPORT as CROP_REPORT
from .crop import crop_folder
from .data import is_image_file
from .io import atomic_path, write_json
from .sources import COLUMNS, SOURCES, SourcesError, read_sources

REPORT = "frame_faces.json"
LEAVE_OUT = "_leaveout"  # DST/<src name><LEAVE_OUT>: the layout without the excluded sources in train and val


def _write_sources(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows({c: r[c] for c in COLUMNS} for r in rows)


def _frame_train_also(folder: Path, dst: Path, size: int, margin: float, progress: bool) -> tuple[list[dict], dict]:
    """The train split of a course-layout ``folder`` (train/real, train/fake) framed like the sourced images into
    ``dst/train/<label>/<folder name>__<file>.png``; returns its sources rows (source ``<folder name>-<label>``,
    train only) and crop_folder's summary."""
    if not (folder / "train").is_dir():
        raise SourcesError(f"{folder}: no train/ folder (--train-also takes a folder in the course layout: "
                           "train|val|test/real|fake)")
    tmp = dst / f".train-also-{folder.name}"
    summary = crop_folder(folder / "train", tmp, size=size, margin=margin, progress=progress)
    rows = []
    for c in summary["crops"]:
        rel = Path(c["crop"]).relative_to(tmp)  # <label>/<file>.png
        label = rel.parts[0]
        if label not in ("real", "fake"):
            raise SourcesError(f"{folder / 'train' / rel.parent}: not real/ or fake/ (the course layout)")
        name = f"train/{label}/{folder.name}__{rel.name}"
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, dst / name)
        rows.append({"path": name, "label": label, "source": f"{folder.name}-{label}", "generator": folder.name,
                     "split": "train"})
    shutil.rmtree(tmp)
    return rows, summary


def frame_sourced(src: str | Path, dst: str | Path, size: int, margin: float, exclude: list[str] | None = None,
                  progress: bool = True, train_also: list[str] | None = None) -> dict:
    """The frame-faces stage: ``dst/<src's name>`` = the largest face of every image of ``src`` (a folder with
    ``sources.csv``) cropped at side (1 + ``margin``) x the face box, ``size`` px, in ``src``'s layout, with its
    own ``sources.csv``; with ``exclude`` (source names), ``dst/<src's name>_leaveout`` = the same crops (hard
    links) with those sources left out of train and val, the test split whole; with ``train_also`` (course-layout
    folders), their train splits framed the same way and added to both (``_frame_train_also``). Returns and writes
    ``dst/frame_faces.json``: crops and images without a face per source and split."""
    src, dst = Path(src), Path(dst)
    sources = read_sources(src)
    if not sources:
        raise SourcesError(f"{src}: no {SOURCES} (frame-faces needs each image's source: path,label,source,"
                           "generator,split)")
    unknown = sorted(set(exclude or []) - {r["source"] for r in sources.values()})
    if unknown:
        raise SourcesError(f"frame-faces: exclude names source {unknown[0]!r}, which {src / SOURCES} does not have "
                           f"(sources: {', '.join(sorted({r['source'] for r in sources.values()}))})")
    full, left = dst / src.name, dst / f"{src.name}{LEAVE_OUT}"  # folder names: how tables and cards name the data
    if dst.exists():  # DVC removed its output before the stage; anything here is a partial earlier try
        shutil.rmtree(dst)
    summary = crop_folder(src, full, size=size, margin=margin, progress=progress)
    (full / CROP_REPORT).unlink()  # its content goes into frame_faces.json; not an image folder's file
    rows, counts = [], {}
    cropped = {Path(c["crop"]).relative_to(full).as_posix() for c in summary["crops"]}
    for rel, r in sources.items():
        key = f"{r['split']}/{r['source']}"
        c = counts.setdefault(key, {"images": 0, "crops": 0})
        c["images"] += 1
        crop = f"{rel}.png"
        if crop in cropped:
            c["crops"] += 1
            rows.append({**r, "path": crop})
    # the folder's own listing (sources.csv) is no image without a face: left out of the count and the list
    skipped = [s for s in summary["skipped"] if not s.startswith(f"{src / SOURCES}: ")]
    n_images = summary["n_images"]
    for folder in map(Path, train_also or []):
        extra, also = _frame_train_also(folder, full, size, margin, progress)
        rows += extra
        skipped += also["skipped"]
        n_images += also["n_images"]
        for r in extra:
            c = counts.setdefault(f"train/{r['source']}", {"images": 0, "crops": 0})
            c["crops"] += 1
        for label in ("real", "fake"):
            c = counts.setdefault(f"train/{folder.name}-{label}", {"images": 0, "crops": 0})
            c["images"] = sum(1 for f in (folder / "train" / label).rglob("*") if is_image_file(f))
    _write_sources(full / SOURCES, rows)
    out = {"source": str(src), "size": size, "margin": margin, "n_images": n_images,
           "n_crops": len(rows), "per_split_source": counts, "skipped": skipped,
           "train_also": [str(f) for f in train_also or []]}
    if exclude:
        kept = [r for r in rows if r["split"] == "test" or r["source"] not in exclude]
        for r in kept:
            target = left / r["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(full / r["path"], target)
        _write_sources(left / SOURCES, kept)
        out.update({"exclude": list(exclude), "n_without": len(kept)})
    write_json(dst / REPORT, out)
    print(f"frame-faces: {len(rows)} face crop(s) of {n_images} image(s)"
          + (f" and the train splits of {', '.join(map(str, train_also))}" if train_also else "") + f" -> {full}"
          + (f"; {len(skipped)} without a face (listed in {dst / REPORT})" if skipped else "")
          + (f"; {out['n_without']} without {', '.join(exclude)} in train/val -> {left}" if exclude else ""))
    return out
