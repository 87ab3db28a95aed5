"""Headline metrics, and the README's results tables generated from them.

The ``summarize`` stage writes ``metrics/runs/<run>.json``: one row per run with the same
headline columns (at most 12), so ``dvc metrics show`` is one readable table and ``dvc
metrics diff`` after rerunning one run shows only that run's row. Everything else stays in
``metrics/evaluate``, ``metrics/explain`` and ``metrics/train`` (outputs, not declared metrics).

``deepfake-detect report`` renders the generated tables of README.md and docs/*.md: the results of each
pipeline from those rows and the params that ``dvc.lock`` recorded for each stage, each row with the
command that makes it, and the benchmarks from their JSON; ``--check`` fails when a table differs,
``--write`` updates them.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import yaml

from .errors import UserError
from .io import write_json, write_text

# acc: at p(fake) > 0.5; acc_at_threshold: at the threshold training chose on validation (in the checkpoint);
# val_auc: the validation AUC of the kept epoch (training's), so the val-test gap reads off the row
HEADLINE = ("auc", "auc_ci_low", "auc_ci_high", "val_auc", "eer", "acc", "acc_at_threshold", "tpr_at_fpr_1pct",
            "num_params", "train_time_s", "saliency_lift", "gradcam_lift")

# name -> (pipeline folder, the command that reproduces it)
PIPELINES = {"demo": (".", "dvc repro"), "real": ("real", "dvc repro real/dvc.yaml")}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found; it is written by an earlier stage (dvc repro)") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from e


def _round(value):
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 4)
    return value


def headline(evaluated: dict, explained: dict | None = None) -> dict:
    """The headline row of one run: evaluation, size and training time, faithfulness lifts (demo data)."""
    row = {**evaluated, **(explained or {})}
    if row.get("train_time_s") is not None:
        row["train_time_s"] = round(row["train_time_s"])
    return {k: _round(row[k]) for k in HEADLINE if row.get(k) is not None}


def summarize(params: dict, metrics_dir: str | Path = "metrics") -> dict[str, dict]:
    """The summarize stage: metrics/runs/<run>.json for every run of evaluate-roc-det.runs."""
    metrics_dir = Path(metrics_dir)
    rows = {}
    for run in params["evaluate-roc-det"]["runs"]:
        explained = metrics_dir / "explain" / f"{run}.json"
        rows[run] = headline(_read_json(metrics_dir / "evaluate" / f"{run}.json"),
                             _read_json(explained) if explained.exists() else None)
        write_json(metrics_dir / "runs" / f"{run}.json", rows[run])
    return rows


# ----------------------------------------------------------------------------- README tables
def _lock(folder: Path) -> dict:
    path = folder / "dvc.lock"
    if not path.is_file():
        raise UserError(f"{path}: not found; run the pipeline first ({PIPELINES})")
    return yaml.safe_load(path.read_text())["stages"]


def _stage_params(stage: dict) -> dict:
    """The params a stage ran with, as dvc.lock recorded them (one params file per pipeline)."""
    return next(iter(stage.get("params", {}).values()), {})


def _fmt(value, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def _row(pipeline: str, run: str, lock: dict, folder: Path) -> str:
    stage = next(name for name, s in lock.items() if _stage_params(s).get(name, {}).get("run") == run)
    cfg = _stage_params(lock[stage])[stage]
    data = _stage_params(lock["prepare-splits"])["data"][cfg["dataset"]]["source"]
    data = f"demo {cfg['dataset']}" if data == "demo" else Path(data).name
    m = _read_json(folder / "metrics" / "runs" / f"{run}.json")
    ci = f" [{_fmt(m.get('auc_ci_low'))}, {_fmt(m.get('auc_ci_high'))}]" if "auc_ci_low" in m else ""
    lifts = (f"{_fmt(m.get('saliency_lift'), '.2f')} / {_fmt(m.get('gradcam_lift'), '.2f')}"
             if "saliency_lift" in m else "–")
    target = f"{stage}" if pipeline == "demo" else f"real/dvc.yaml:{stage}"
    cells = [f"`{run}`", f"`{cfg['model']}`", data, str(cfg["image_size"]), str(cfg["epochs"]),
             f"{m.get('num_params', 0):,}", f"**{_fmt(m.get('auc'))}**{ci}", _fmt(m.get("val_auc")),
             _fmt(m.get("eer"), ".1%"), _fmt(m.get("acc")), _fmt(m.get("acc_at_threshold")),
             _fmt(m.get("tpr_at_fpr_1pct")), lifts,
             f"{m.get('train_time_s', 0):,} s", f"`dvc repro {target}`"]
    return "| " + " | ".join(cells) + " |"


def render_table(pipeline: str, root: str | Path = ".") -> str:
    """The results table of one pipeline (markdown), from its metrics/runs rows and dvc.lock."""
    folder = Path(root) / PIPELINES[pipeline][0]
    lock = _lock(folder)
    runs = _stage_params(lock["evaluate-roc-det"])["evaluate-roc-det"]["runs"]
    header = ("| run | model | data | image px | epochs | params | test AUC [95 % CI] | val AUC | EER | acc @ 0.5 "
              "| acc @ val threshold | TPR @ 1 % FPR | saliency / Grad-CAM lift | train time | command |")
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    lines += [_row(pipeline, run, lock, folder) for run in runs]
    return "\n".join(lines)


def render_cross_table(pipeline: str, root: str | Path = ".") -> str:
    """Every run's test AUC on every dataset of the pipeline (bold: the dataset it was trained on)."""
    folder = Path(root) / PIPELINES[pipeline][0]
    cross = _read_json(folder / "metrics" / "evaluate" / "cross_dataset.json")
    names = cross["datasets"]
    lines = ["| run (trained on) | " + " | ".join(f"{names[d]} test AUC" for d in names) + " |",
             "|---|" + "---|" * len(names)]
    for run, row in cross["runs"].items():
        cells = [f"**{row['auc'][d]:.3f}**" if d == row["trained_on"] else f"{row['auc'][d]:.3f}" for d in names]
        lines.append(f"| `{run}` ({names[row['trained_on']]}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# the loops of bench/bench_train.py, as its JSON names them
BENCH_LOOPS = {"a_compute": "(a) pure compute: decoded, normalised tensors in memory",
               "b_ours": "(b) the trainer's data path (decoded cache)",
               "c_course": "(c) the course loop: PIL decode in process, 0 workers",
               "compute_contiguous": "(a) without channels_last",
               "ours_no_channels_last": "(b) without channels_last",
               "ours_no_cache_0_workers": "(b) without the decoded cache, 0 workers",
               "ours_no_cache_auto_workers": "(b) without the decoded cache, loader workers",
               "ours_cache_1_worker": "(b) the decoded cache read by 1 loader worker",
               "ours_no_amp": "(b) without mixed precision",
               "ours_compile": "(b) with torch.compile"}


def render_bench(path: str | Path, root: str | Path = ".") -> str:
    """A bench/bench_train.py JSON as a table of every loop's images/s, then a list: the full-epoch estimate, the
    paired ratio, the data path's share of a step, peak RSS, the dvc repro timing (what the file has of these)
    and the command that wrote the file. ``path``: relative to ``root``, and named so."""
    path = Path(path)
    b = _read_json(Path(root) / path)
    lines = ["| loop | train img/s | eval img/s |", "|---|---|---|"]
    lines += [f"| {BENCH_LOOPS.get(name, name)} | {loop['train_img_s']:,.1f} | {loop['eval_img_s']:,.1f} |"
              for name, loop in b["loops"].items()]
    n, e = b["split_sizes"], b["epoch_s"]
    notes = [f"A full epoch of {n['train']:,} training + {n['val']:,} validation images (+ {n['test']:,} test): "
             f"(a) {e['a_compute_train_val']:.0f} s, (b) {e['b_ours_train_val_test_once']:.0f} s with test scored "
             f"once ({e['b_ours_train_val_test_every_epoch']:.0f} s every epoch), "
             f"(c) {e['c_course_train_val_test']:.0f} s with test every epoch."]
    r = b["ratios"]
    if "b_over_a_train_median_of_pairs" in r:
        notes.append(f"(b)/(a), median of the {len(b['repeats'])} paired rounds: train "
                     f"{r['b_over_a_train_median_of_pairs']:.2f}, eval {r['b_over_a_eval_median_of_pairs']:.2f}.")
    if "profile_b" in b:
        prof = b["profile_b"]
        notes.append(f"Reading, stacking and normalising a batch: {prof['data_ms_per_batch']:.1f} ms of a "
                     f"{prof['step_ms']:.0f} ms step ({prof['data_share_of_step']:.1%}).")
    rss = b.get("fit_peak_rss") or {}
    if rss:
        notes.append("Peak RSS of training: " + ", ".join(f"{v['peak_rss_mb']:,.0f} MB on {v['images']:,} images"
                                                          for v in rss.values()) + ".")
    if b.get("dvc"):
        dvc = b["dvc"]
        notes.append(f"Whole demo `dvc repro` {dvc['repro_s']:.0f} s, no-op rerun {dvc['noop_rerun_s']:.1f} s.")
    load = f"load average {b['load_avg_start'][0]:.1f} at the start" if b.get("load_avg_start") else ""
    notes.append(f"`{b['command']}` ({b['data']}, {b['image_size']} px, batch {b['batch_size']}, {b['device']}, "
                 f"{b['cpu_cores']} cores, torch {b['torch']}{', ' + load if load else ''}; `{path.as_posix()}`).")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {note}" for note in notes)


# block name -> what renders it: the results of each pipeline, its cross-dataset AUC, a benchmark's JSON
MARKER = re.compile(r"(<!-- report:(?P<block>[\w./:-]+) -->\n)(.*?)(<!-- /report:(?P=block) -->)", re.S)


def render_block(block: str, root: str | Path = ".") -> str:
    """The generated text of one block: ``demo``/``real`` (results), ``demo-cross``/``real-cross`` (every run
    on every dataset), ``bench:<path of a bench_train.py JSON>``."""
    if block in PIPELINES:
        return render_table(block, root)
    if block.removesuffix("-cross") in PIPELINES:
        return render_cross_table(block.removesuffix("-cross"), root)
    if block.startswith("bench:"):
        return render_bench(block.removeprefix("bench:"), root)
    raise UserError(f"unknown report block '{block}' (known: {', '.join(PIPELINES)}, "
                    f"{', '.join(p + '-cross' for p in PIPELINES)}, bench:<file>)")


def render_readme(text: str, root: str | Path = ".") -> str:
    """Markdown text with every ``<!-- report:<block> -->`` ... ``<!-- /report:<block> -->`` block replaced by
    its generated text (``render_block``); ``root``: the repository the paths are relative to."""
    return MARKER.sub(lambda m: m.group(1) + render_block(m.group("block"), root) + "\n" + m.group(4), text)


def documents(readme: str | Path = "README.md") -> list[Path]:
    """The README and the docs/*.md beside it: the files whose blocks ``report`` renders."""
    readme = Path(readme)
    return [readme, *sorted((readme.parent / "docs").glob("*.md"))]


def report(readme: str | Path = "README.md", check: bool = False, write: bool = False) -> str:
    """Print, check (UserError naming the files that differ) or rewrite the generated tables of README.md and
    docs/*.md."""
    root = Path(readme).parent
    stale = []
    for path in documents(readme):
        old = path.read_text()
        new = render_readme(old, root)
        if new != old:
            stale.append(path)
            if write:
                write_text(path, new)
    if check and stale:
        raise UserError(f"{', '.join(map(str, stale))}: the generated tables differ from the metrics files; "
                        "run `deepfake-detect report --write`")
    return "\n\n".join(f"{name}:\n{render_table(name, root)}" for name in PIPELINES
                       if (root / PIPELINES[name][0] / "dvc.lock").is_file())
