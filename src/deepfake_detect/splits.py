"""prepare-splits: from a dataset source to a checked split manifest.

A source is ``demo`` (the procedural generator writes the images), a folder in the
course layout ``train|val|test/real|fake``, or flat ``real/`` + ``fake/`` folders that
are split here (group-disjoint when a groups CSV is given). Each dataset goes through
the same steps: scan (find the images), hash (decode every image once, to check it and
to hash its pixels), split (flat folders only), leak check (the same pixels in two
splits are listed with their pairs under ``data.on_leak: warn``, the default; ``drop``
keeps only the earliest split's copy, ``error`` stops; a group in two splits is always
an error) and the per-split counts. ``run_stage`` checks every dataset before it
writes any manifest, then draws real and fake test samples of each
(``plots/data/<dataset>.png``). Files that are not images are never dropped silently: they are
listed in the metrics.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .config import datasets_of, source_of
from .data import (
    MANIFEST_FIELDS,
    SPLITS,
    BadImageError,
    DatasetError,
    Preprocess,
    load_masks,
    load_rgb,
    read_manifest,
    sample_rows,
    scan_source,
)
from .io import path_text, save_figure, write_csv, write_json


def read_groups(path: str | Path, root: Path) -> dict[str, str]:
    """Map image path (as scanned, ``root/rel``, normalised) -> group from a UTF-8 CSV with columns path,group.

    A path listed twice with two groups is an error; a row with an empty group gives its image no group."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: groups CSV not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DatasetError(f"{path}, line {line}: not UTF-8 text; save the file as UTF-8") from e
    groups: dict[str, str] = {}
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames or not {"path", "group"} <= set(reader.fieldnames):
            raise DatasetError(f"{path}: groups CSV needs columns 'path' and 'group' (has {reader.fieldnames})")
        for r in reader:
            key, group = _norm(root / (r["path"] or "")), (r["group"] or "").strip()
            if groups.get(key, group) != group:
                raise DatasetError(f"{path}, line {reader.line_num}: '{r['path']}' is listed twice, in groups "
                                   f"'{groups[key]}' and '{group}' (one group per image)")
            groups[key] = group
    except csv.Error as e:
        raise DatasetError(f"{path}: not a readable CSV ({e})") from e
    return groups


def _norm(path: str | Path) -> str:
    """The key a groups row and a scanned image meet on: absolute and normalised (``./a``, ``a//b``, ``x/../a``),
    so a CSV of absolute paths matches a relative ``source``."""
    return os.path.normpath(os.path.abspath(path))


def _assign_groups(rows: list[dict], groups_csv: str | Path, root: Path, name: str) -> list[str]:
    """Give every row its group from ``groups_csv``; returns the CSV's paths that name no image (listed in the
    metrics). Every image must have a group: one without would make the splits identity-disjoint only in part
    (its identity can land in two splits), so that is an error naming the first few, as is a CSV that matches
    no image at all (paths relative to another folder)."""
    groups = read_groups(groups_csv, root)
    for r in rows:
        r["group"] = groups.get(_norm(r["path"]), "")
    unmatched = sorted(set(groups) - {_norm(r["path"]) for r in rows})
    if groups and len(unmatched) == len(groups):
        first = next(iter(groups))
        raise DatasetError(f"{groups_csv}: none of its {len(groups)} path(s) names an image of {root} (paths are "
                           f"relative to {root}: its first row means {first}); fix the paths or the dataset folder")
    missing = [r["path"] for r in rows if not r["group"]]
    if missing:
        raise DatasetError(f"{len(missing)} of {len(rows)} image(s) of {root} have no group in {groups_csv}, so "
                           "their identities could span splits; add a row path,group for each (paths relative to "
                           f"{root}): " + ", ".join(path_text(m) for m in missing[:5])
                           + (" ..." if len(missing) > 5 else ""))
    if unmatched:
        print(f"prepare-splits {name}: warning: {len(unmatched)} row(s) of {groups_csv} name no image of {root} "
              "(listed in the metrics as groups_unmatched): " + ", ".join(unmatched[:5])
              + (" ..." if len(unmatched) > 5 else ""), file=sys.stderr)
    return unmatched


def _check_image(path: str) -> tuple[str, int, int, str | None]:
    """(sha1 of decoded RGB pixels, width, height, error message or None)."""
    try:
        im = load_rgb(path)
    except BadImageError as e:
        return "", 0, 0, str(e)
    h = hashlib.sha1(np.asarray(im).tobytes())
    h.update(f"{im.width}x{im.height}".encode())
    return h.hexdigest(), im.width, im.height, None


def _split_flat(rows: list[dict], val_fraction: float, test_fraction: float, seed: int) -> None:
    """Assign splits in place: whole groups (or single images) go to one split."""
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DatasetError("data.<dataset>.val_fraction and test_fraction must be in [0, 1) and sum below 1")
    by_group: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_group[r["group"] or r["path"]].append(r)
    rng = np.random.default_rng(seed)
    # stratify by the group's majority label so both classes reach every split
    for label in (0, 1):
        groups = sorted(g for g, rs in by_group.items() if round(np.mean([r["label"] for r in rs])) == label)
        groups = [groups[i] for i in rng.permutation(len(groups))]
        total = sum(len(by_group[g]) for g in groups)
        done = 0
        for g in groups:
            frac = done / max(total, 1)
            split = "test" if frac < test_fraction else "val" if frac < test_fraction + val_fraction else "train"
            for r in by_group[g]:
                r["split"] = split
            done += len(by_group[g])


def _missing_part(path: Path) -> Path:
    """The first folder of ``path`` (made absolute) that does not exist."""
    path = Path(os.path.abspath(path))
    return next(p for p in [*reversed(path.parents), path] if not p.exists())


def _check_source(name: str, cfg: dict, params_file: str | Path) -> tuple[Path, str | Path | None]:
    """(dataset folder, groups CSV or None) of a source that is not ``demo``; a folder or CSV that does not
    exist is an error naming its key in ``params_file``."""
    root = Path(os.path.expanduser(str(cfg["source"])))
    if not root.is_dir():
        what = "is not a folder" if root.exists() else f"does not exist (no {_missing_part(root)})"
        raise DatasetError(f"{params_file}: 'data.{name}.source' is {str(cfg['source'])!r}, which {what}; put "
                           "the dataset there, or set the key to its folder (or to demo for generated data)")
    groups_csv = cfg.get("groups")
    if groups_csv is not None and not Path(groups_csv).is_file():
        raise DatasetError(f"{params_file}: 'data.{name}.groups' is {groups_csv!r}, which is not a file (a CSV "
                           f"with columns path,group; or null to use {root / 'groups.csv'} when present)")
    if groups_csv is None and (root / "groups.csv").exists():
        groups_csv = root / "groups.csv"
    return root, groups_csv


def _source(name: str, cfg: dict, out_dir: Path, options: SplitOptions,
            progress: bool) -> tuple[Path, str | Path | None]:
    """(dataset folder, groups CSV or None); the demo source is generated into ``out_dir/images`` first."""
    if cfg["source"] != "demo":
        return _check_source(name, cfg, options.params_file)
    from .demo import DemoOptions, generate_dataset

    d = options.demo_cfg or {}
    shutil.rmtree(out_dir / "images", ignore_errors=True)  # no stale images from larger earlier sizes
    sizes = d.get(name, {})
    generate_dataset(out_dir / "images", kind=name, n_train=sizes["train"], n_val=sizes["val"],
                     n_test=sizes["test"], options=DemoOptions(image_size=d.get("image_size", 128), seed=options.seed,
                                                               strength=sizes.get("strength", 1.0)),
                     progress=progress)
    return out_dir / "images", out_dir / "images" / "groups.csv"


def _decode_all(rows: list[dict], name: str, progress: bool) -> list[str]:
    """Decode every image once: sha1 of its pixels, width and height into its row; the errors, one per bad file."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(tqdm(pool.map(_check_image, [r["path"] for r in rows], chunksize=16), total=len(rows),
                            desc=f"prepare-splits {name}: decode+hash", disable=not progress))
    bad = []
    for r, (sha1, w, h, err) in zip(rows, results):
        r.update(sha1=sha1, width=w, height=h)
        if err:
            bad.append(err)
    return bad


def _leaks(rows: list[dict], root: Path, name: str, on_leak: str) -> tuple[list[dict], list[str], list[str]]:
    """Images with the same pixels in two splits: (rows kept, the leaked pairs, the paths dropped)."""
    by_hash: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_hash[r["sha1"]].append(r)
    leaks = [rs for rs in by_hash.values() if len({r["split"] for r in rs}) > 1]
    pairs = [" == ".join(f"{r['path']} ({r['split']})" for r in rs) for rs in leaks]
    dropped: list[str] = []
    if not leaks:
        return rows, pairs, dropped
    msg = f"{len(leaks)} image(s) appear in more than one split of {root} (leakage):\n  " + "\n  ".join(pairs[:50])
    if on_leak == "error":
        raise DatasetError(msg + "\n(set data.on_leak: drop to keep only the earliest split's copy)")
    if on_leak == "drop":  # keep the copy in the earliest split (train < val < test)
        for rs in leaks:
            first = min(SPLITS.index(r["split"]) for r in rs)
            dropped += [r["path"] for r in rs if SPLITS.index(r["split"]) > first]
        rows = [r for r in rows if r["path"] not in set(dropped)]
        msg += f"\n-> left out {len(dropped)} later cop(ies) (data.on_leak: drop)"
    else:
        msg += "\n-> kept (data.on_leak: warn); set data.on_leak: drop or error to change that"
    print(f"prepare-splits {name}: warning: {msg}", file=sys.stderr)
    return rows, pairs, dropped


@dataclass
class _Scanned:
    """Step 1: what the source folder holds."""

    root: Path
    layout: str  # "course" or "flat"
    rows: list[dict]  # path, label, split (None for flat), group, mask
    ignored: list[str]  # files that are not images
    unreadable: list[str]  # "path: reason"
    groups_csv: str | Path | None
    groups_unmatched: list[str]  # paths of the groups CSV that name no image


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # a name whose bytes are not UTF-8 (kept by Python as lone surrogates)
        return False
    return True


def _scan(name: str, cfg: dict, out_dir: Path, options: SplitOptions, progress: bool) -> _Scanned:
    """Step 1, scan: the images of the source (generated first for ``demo``), each with its group and, for
    demo fakes, the path of its ground-truth mask. An image whose name is not UTF-8 is listed with the files
    that cannot be read (the manifest, a UTF-8 CSV that training reads back, cannot name it)."""
    root, groups_csv = _source(name, cfg, out_dir, options, progress)
    layout, rows, ignored, unreadable = scan_source(root)
    ignored, unreadable = [path_text(p) for p in ignored], [path_text(u) for u in unreadable]  # for the metrics
    unreadable += [f"{path_text(r['path'])}: file name is not UTF-8 (rename the file)" for r in rows
                   if not _utf8(r["path"])]
    rows = [r for r in rows if _utf8(r["path"])]
    unmatched = _assign_groups(rows, groups_csv, root, name) if groups_csv else []
    for r in rows:
        r.setdefault("group", "")
        mask = root / "masks" / (r["split"] or "") / "fake" / Path(r["path"]).name if r["label"] == 1 else None
        r["mask"] = str(mask) if mask is not None and r["split"] and mask.exists() else ""
    return _Scanned(root, layout, rows, ignored, unreadable, groups_csv, unmatched)


def _hash(scanned: _Scanned, name: str, on_bad_image: str, progress: bool) -> tuple[list[dict], list[str]]:
    """Step 2, hash: (the rows that decode, with sha1/width/height; every file that cannot be read or does
    not decode, as ``path: reason`` -- an error unless ``on_bad_image`` is ``skip``)."""
    bad = scanned.unreadable + _decode_all(scanned.rows, name, progress)
    if bad and on_bad_image == "error":
        raise DatasetError(f"{len(bad)} file(s) in {scanned.root} cannot be read or do not decode (set "
                           "data.on_bad_image: skip to leave them out; they are then listed in the metrics): "
                           + "; ".join(bad[:20]) + (f"; ... and {len(bad) - 20} more" if len(bad) > 20 else ""))
    return [r for r in scanned.rows if r["sha1"]], bad


def _group_splits(rows: list[dict], groups_csv: str | Path | None) -> dict[str, set]:
    """{group: its splits}; a group in several splits (identity leakage) is an error."""
    group_splits: dict[str, set] = defaultdict(set)
    for r in rows:
        if r["group"]:
            group_splits[r["group"]].add(r["split"])
    crossing = sorted(g for g, s in group_splits.items() if len(s) > 1)
    if crossing:
        raise DatasetError(f"{len(crossing)} group(s) of {groups_csv} span several splits (identity leakage): "
                           + ", ".join(crossing[:20]))
    return group_splits


def _split_counts(rows: list[dict], root: Path) -> dict:
    """Real and fake images per split and their ratio; a split without both classes is an error."""
    counts: dict = {}
    for split in SPLITS:
        n_real = sum(1 for r in rows if r["split"] == split and r["label"] == 0)
        n_fake = sum(1 for r in rows if r["split"] == split and r["label"] == 1)
        if n_real == 0 or n_fake == 0:
            raise DatasetError(f"{root}: split '{split}' has {n_real} real and {n_fake} fake images; both are needed")
        counts.update({f"{split}_real": n_real, f"{split}_fake": n_fake,
                       f"{split}_fake_real_ratio": round(n_fake / n_real, 4)})
    return counts


@dataclass
class SplitOptions:
    """How a dataset is checked and split (``data`` of params.yaml): ``seed`` of the flat folders' split and of
    the demo images, ``demo_cfg`` (the ``demo`` section, for a ``demo`` source), ``on_bad_image`` (``error`` or
    ``skip``), ``on_leak`` (``warn``, ``drop`` or ``error``) and ``params_file``, the file named in errors."""

    seed: int = 0
    demo_cfg: dict | None = None
    on_bad_image: str = "error"
    on_leak: str = "warn"
    params_file: str | Path = "params.yaml"


def check_dataset(name: str, cfg: dict, out_dir: str | Path, options: SplitOptions | None = None,
                  progress: bool = True) -> tuple[dict, list[dict]]:
    """Every check of one dataset, writing nothing but the demo images: (summary metrics, manifest rows).

    Scan, hash, split (flat folders), leak check, per-split counts. Files that cannot be read (symlink
    loops, unreadable folders, names that are not UTF-8) count as images that do not decode: an error under
    ``on_bad_image: error``, listed in ``bad_skipped`` under ``skip``. ``options.params_file`` names the file of
    ``cfg`` (``data.<name>``) in errors."""
    o = options or SplitOptions()
    scanned = _scan(name, cfg, Path(out_dir), o, progress)
    rows, bad = _hash(scanned, name, o.on_bad_image, progress)
    if scanned.layout == "flat":
        _split_flat(rows, cfg["val_fraction"], cfg["test_fraction"], o.seed)
    rows, pairs, dropped = _leaks(rows, scanned.root, name, o.on_leak)
    group_splits = _group_splits(rows, scanned.groups_csv)
    hashes = [r["sha1"] for r in rows]
    summary: dict = {"dataset": name, "source": str(cfg["source"]), "layout": scanned.layout, "n_images": len(rows),
                     **_split_counts(rows, scanned.root)}
    summary.update(n_groups=len(group_splits), n_groups_unmatched=len(scanned.groups_unmatched),
                   groups_unmatched=scanned.groups_unmatched, n_duplicates_within_split=len(hashes) - len(set(hashes)),
                   n_leaked_across_splits=len(pairs), leaked_across_splits=pairs, n_leak_dropped=len(dropped),
                   leak_dropped=sorted(dropped), n_bad_skipped=len(bad), n_ignored_files=len(scanned.ignored),
                   bad_skipped=bad, ignored_files=scanned.ignored)
    rows.sort(key=lambda r: (SPLITS.index(r["split"]), r["label"], r["path"]))
    return summary, rows


def write_manifest(out_dir: str | Path, rows: list[dict]) -> Path:
    return write_csv(Path(out_dir) / "manifest.csv", rows, MANIFEST_FIELDS, extrasaction="ignore")


def prepare_dataset(name: str, cfg: dict, out_dir: str | Path, options: SplitOptions | None = None,
                    progress: bool = True) -> dict:
    """Check one dataset, then write ``out_dir/manifest.csv``; returns its summary metrics."""
    summary, rows = check_dataset(name, cfg, out_dir, options, progress)
    write_manifest(out_dir, rows)
    return summary


def dataset_figure(name: str, params: dict, data_dir: str | Path = "data", plots_dir: str | Path = "plots/data",
                   n: int = 6) -> Path:
    """The course's first figure: real and fake test images of one dataset (and demo masks)."""
    from .plots import images as plots

    rows = read_manifest(Path(data_dir) / name / "manifest.csv", "test")
    rng = np.random.default_rng(params["seed"])
    reals = sample_rows([r for r in rows if r["label"] == 0], n, rng)
    fakes = sample_rows([r for r in rows if r["label"] == 1], n, rng)
    size = min(max([int(r["width"] or 0) for r in reals + fakes] + [32]), 256)
    show = Preprocess(size, (0, 0, 0), (1, 1, 1))
    real_u8 = [show.to_uint8(load_rgb(r["path"])).permute(1, 2, 0).numpy() for r in reals]
    fake_u8 = [show.to_uint8(load_rgb(r["path"])).permute(1, 2, 0).numpy() for r in fakes]
    masks = load_masks([r["mask"] for r in fakes], size) if fakes and all(r.get("mask") for r in fakes) else None
    fig = plots.dataset_grid(real_u8, fake_u8, masks=masks,
                             title=f"Dataset '{name}' (source: {params['data'][name]['source']}) — test images")
    return save_figure(Path(plots_dir) / f"{name}.png", fig, dpi=110)


def run_stage(params: dict, data_dir: str | Path = "data", metrics_dir: str | Path = "metrics/data",
              plots_dir: str | Path = "plots/data", progress: bool = True) -> dict[str, dict]:
    """The prepare-splits stage: every dataset in ``params['data']`` is checked before any manifest or
    metrics file is written, so a failing check leaves the previous files as they were; errors name the params
    file ``params`` were read from."""
    params_file = source_of(params)
    for name in datasets_of(params):  # every folder there before the demo data takes its minute
        if params["data"][name]["source"] != "demo":
            _check_source(name, params["data"][name], params_file)
    options = SplitOptions(seed=params["seed"], demo_cfg=params["demo"], on_bad_image=params["data"]["on_bad_image"],
                           on_leak=params["data"]["on_leak"], params_file=params_file)
    checked = {name: check_dataset(name, params["data"][name], Path(data_dir) / name, options, progress)
               for name in datasets_of(params)}
    for name, (summary, rows) in checked.items():
        write_manifest(Path(data_dir) / name, rows)
        write_json(Path(metrics_dir) / f"{name}.json", summary)
        dataset_figure(name, params, data_dir, plots_dir)
        print(f"{name}: " + ", ".join(f"{s} {summary[f'{s}_real']} real / {summary[f'{s}_fake']} fake"
                                      for s in SPLITS)
              + (f"; skipped {len(summary['bad_skipped'])} bad file(s)" if summary["bad_skipped"] else "")
              + (f"; ignored {len(summary['ignored_files'])} non-image file(s)" if summary["ignored_files"] else ""))
    return {name: summary for name, (summary, _) in checked.items()}
