"""The frame-faces stage of the real pipeline (``sources.py`` says why): every image of a folder with sources.csv
cut to its largest face by the project's face finder and framed one way (``crop.crop_folder``), in the same layout
with its own sources.csv; with ``exclude``, a second layout without those sources in train and val."""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

from .crop import REPORT as CROP_REPORT
from .crop import crop_folder
from .io import atomic_path, write_json
from .sources import COLUMNS, SOURCES, SourcesError, read_sources

REPORT = "frame_faces.json"


def _write_sources(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows({c: r[c] for c in COLUMNS} for r in rows)


def frame_sourced(src: str | Path, dst: str | Path, size: int, margin: float, exclude: list[str] | None = None,
                  progress: bool = True) -> dict:
    """The frame-faces stage: ``dst/all`` = the largest face of every image of ``src`` (a folder with
    ``sources.csv``) cropped at side (1 + ``margin``) x the face box, ``size`` px, in ``src``'s layout, with its
    own ``sources.csv``; with ``exclude`` (source names), ``dst/without`` = the same crops (hard links) with those
    sources left out of train and val, the test split whole. Returns and writes ``dst/frame_faces.json``: crops
    and images without a face per source and split."""
    src, dst = Path(src), Path(dst)
    sources = read_sources(src)
    if not sources:
        raise SourcesError(f"{src}: no {SOURCES} (frame-faces needs each image's source: path,label,source,"
                           "generator,split)")
    unknown = sorted(set(exclude or []) - {r["source"] for r in sources.values()})
    if unknown:
        raise SourcesError(f"frame-faces: exclude names source {unknown[0]!r}, which {src / SOURCES} does not have "
                           f"(sources: {', '.join(sorted({r['source'] for r in sources.values()}))})")
    if dst.exists():  # DVC removed its output before the stage; anything here is a partial earlier try
        shutil.rmtree(dst)
    summary = crop_folder(src, dst / "all", size=size, margin=margin, progress=progress)
    (dst / "all" / CROP_REPORT).unlink()  # its content goes into frame_faces.json; not an image folder's file
    rows, counts = [], {}
    cropped = {Path(c["crop"]).relative_to(dst / "all").as_posix() for c in summary["crops"]}
    for rel, r in sources.items():
        key = f"{r['split']}/{r['source']}"
        c = counts.setdefault(key, {"images": 0, "crops": 0})
        c["images"] += 1
        crop = f"{rel}.png"
        if crop in cropped:
            c["crops"] += 1
            rows.append({**r, "path": crop})
    _write_sources(dst / "all" / SOURCES, rows)
    out = {"source": str(src), "size": size, "margin": margin, "n_images": summary["n_images"],
           "n_crops": summary["n_crops"], "per_split_source": counts, "skipped": summary["skipped"]}
    if exclude:
        kept = [r for r in rows if r["split"] == "test" or r["source"] not in exclude]
        for r in kept:
            target = dst / "without" / r["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(dst / "all" / r["path"], target)
        _write_sources(dst / "without" / SOURCES, kept)
        out.update({"exclude": list(exclude), "n_without": len(kept)})
    write_json(dst / REPORT, out)
    print(f"frame-faces: {summary['n_crops']} face crop(s) of {summary['n_images']} image(s) -> {dst / 'all'}"
          + (f"; {len(out.get('skipped', []))} without a face (listed in {dst / REPORT})" if summary["skipped"] else "")
          + (f"; {out['n_without']} without {', '.join(exclude)} in train/val -> {dst / 'without'}" if exclude else ""))
    return out
