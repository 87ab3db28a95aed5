"""Headline metrics, the all-runs figures, and the README's results tables generated from them.

The ``summarize`` stage (``run_stage``) reads what each run's evaluate-roc-det and explain stages wrote and
writes ``metrics/runs/<run>.json``: one row per run with the same headline columns (at most 12), so ``dvc
metrics show`` is one readable table and ``dvc metrics diff`` after rerunning one run shows only that run's
row. It also gathers every run's AUC on every dataset (``metrics/summary/cross_dataset.json`` and its heatmap)
and draws every run's ROC and DET in one figure (``plots/summary/``). Everything else stays in
``metrics/evaluate``, ``metrics/explain`` and ``metrics/train`` (outputs, not declared metrics).

``deepfake-detect report`` renders the generated tables of README.md and docs/*.md: the results of each
pipeline from those rows and the params that ``dvc.lock`` recorded for each stage, each row with the
command that makes it, and the benchmarks from their JSON; ``--check`` fails when a table differs,
``--write`` updates them.
"""
from __future__ import annotations

import csv
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import yaml

from .config import PARAMS_FILE, RUNS, merge_run, override
from .degrade import LABELS, PANEL, worst
from .errors import UserError
from .io import write_json, write_text
from .metrics_files import dvc_error_line, read_metrics_json

# acc: at p(fake) > 0.5; acc_at_threshold: at the threshold training chose on validation (in the checkpoint);
# val_auc: the validation AUC of the kept epoch (training's), so the val-test gap reads off the row
HEADLINE = ("auc", "auc_ci_low", "auc_ci_high", "val_auc", "eer", "acc", "acc_at_threshold", "tpr_at_fpr_1pct",
            "num_params", "train_time_s", "saliency_lift", "gradcam_lift")

CROSS_DATASET_JSON = "cross_dataset.json"  # in metrics/summary: every run's test AUC on every dataset

# name -> (pipeline folder, the command that reproduces it)
PIPELINES = {"demo": (".", "dvc repro"), "real": ("real", "dvc repro real/dvc.yaml")}


def _read_json(path: Path) -> dict:
    """A metrics (or benchmark) JSON object; anything else is one line naming the file (``read_metrics_json``)."""
    return read_metrics_json(path)


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


def _read_scores(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels, p(fake)) from a scores CSV of the evaluate-roc-det stage."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return np.array([int(r["label"]) for r in rows]), np.array([float(r["p_fake"]) for r in rows])
    except FileNotFoundError:
        raise UserError(f"{path}: not found; it is written by the run's evaluate-roc-det stage (dvc repro)") from None
    except (KeyError, ValueError) as e:
        raise UserError(f"{path}: not a scores CSV with columns label,p_fake ({e})") from e


def run_stage(params: dict, metrics_dir: str | Path = "metrics", plots_dir: str | Path = "plots/summary") -> dict:
    """The summarize stage, for every run of ``runs``: metrics/runs/<run>.json (its headline row),
    metrics/summary/cross_dataset.json with its heatmap, and the all-runs ROC/DET figure."""
    from .plots.curves import save_cross_dataset_figure, save_runs_figure
    from .plots.robustness import save_panel_figure

    metrics_dir, plots_dir = Path(metrics_dir), Path(plots_dir)
    rows, cross, names, scores, panels = {}, {}, {}, {}, {}
    for run in params[RUNS]:
        evaluated = _read_json(metrics_dir / "evaluate" / f"{run}.json")
        if "cross_dataset" not in evaluated:
            raise UserError(f"{metrics_dir / 'evaluate' / f'{run}.json'}: no 'cross_dataset'; rerun its "
                            f"evaluate-roc-det stage (dvc repro evaluate-roc-det@{run})")
        explained = metrics_dir / "explain" / f"{run}.json"
        rows[run] = headline(evaluated, _read_json(explained) if explained.exists() else None)
        write_json(metrics_dir / "runs" / f"{run}.json", rows[run])
        names.update(evaluated["cross_dataset"]["datasets"])
        cross[run] = {"trained_on": evaluated["cross_dataset"]["trained_on"],
                      "auc": {**evaluated["cross_dataset"]["auc"],  # + the evaluation-only sets, as columns
                              **{g: m["auc"] for g, m in evaluated.get("cross_generator", {}).items()}}}
        names.update({g: f"{g} (eval only)" for g in evaluated.get("cross_generator", {})})
        scores[run] = _read_scores(metrics_dir / "evaluate" / "scores" / f"{run}.csv")
        if ROBUSTNESS_KEY in evaluated:
            panels[run] = evaluated[ROBUSTNESS_KEY]
    write_json(metrics_dir / "summary" / CROSS_DATASET_JSON, {"datasets": names, "runs": cross})
    save_cross_dataset_figure(plots_dir / "cross_dataset_auc.png", cross, names)
    save_runs_figure(plots_dir / "all_runs_roc_det.png", scores)
    if panels:
        write_json(metrics_dir / "summary" / ROBUSTNESS_JSON, panels)
        save_panel_figure(plots_dir / "robustness_auc.png", panels)
    return rows


# ----------------------------------------------------------------------------- README tables
def _lock(folder: Path) -> dict:
    path = folder / "dvc.lock"
    if not path.is_file():
        raise UserError(f"{path}: not found; run the pipeline first ({PIPELINES})")
    return yaml.safe_load(path.read_text())["stages"]


def _expand(flat: dict) -> dict:
    """dvc.lock's params (``data.fakes.source: demo``) as nested sections."""
    out: dict = {}
    for dotted, value in flat.items():
        for part in reversed(dotted.split(".")):
            value = {part: value}
        out = override(out, value)
    return out


def _stage_params(stage: dict) -> dict:
    """The params a stage ran with, as dvc.lock recorded them: each params file's, the pipeline's own
    params.yaml laid over the files it is based on."""
    files = stage.get("params", {})
    tree: dict = {}
    for name in sorted(files, key=lambda f: f == PARAMS_FILE):
        tree = override(tree, _expand(files[name]))
    return tree


def _fmt(value, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def _lock_runs(lock: dict) -> dict[str, str]:
    """{run: its training stage} of a dvc.lock: the ``runs`` summarize ran with."""
    return _stage_params(lock["summarize"])[RUNS]


def _row(pipeline: str, run: str, stage: str, lock: dict, folder: Path) -> str:
    tree = _stage_params(lock[stage])
    cfg = merge_run(tree, stage)
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
    runs = _lock_runs(lock)
    header = ("| run | model | data | image px | epochs | params | test AUC [95 % CI] | val AUC | EER | acc @ 0.5 "
              "| acc @ val threshold | TPR @ 1 % FPR | saliency / Grad-CAM lift | train time | command |")
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    lines += [_row(pipeline, run, stage, lock, folder) for run, stage in runs.items()]
    return "\n".join(lines)


def render_cross_table(pipeline: str, root: str | Path = ".") -> str:
    """Every run's test AUC on every dataset of the pipeline (bold: the dataset it was trained on)."""
    folder = Path(root) / PIPELINES[pipeline][0]
    cross = _read_json(folder / "metrics" / "summary" / CROSS_DATASET_JSON)
    names = cross["datasets"]
    lines = ["| run (trained on) | " + " | ".join(f"{names[d]} test AUC" for d in names) + " |",
             "|---|" + "---|" * len(names)]
    for run, row in cross["runs"].items():
        cells = [f"**{row['auc'][d]:.3f}**" if d == row["trained_on"] else f"{row['auc'][d]:.3f}" for d in names]
        lines.append(f"| `{run}` ({names[row['trained_on']]}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


ROBUSTNESS_KEY = "robustness"  # the panel in a run's metrics/evaluate JSON (robustness.PANEL_KEY)
ROBUSTNESS_JSON = "robustness.json"  # metrics/summary/: every run's panel, for the README table


def panel_table(metrics_by_run: dict[str, dict], value: str = "auc") -> str:
    """A markdown table, one row per run, one column per degradation, from the runs' metrics JSONs (each with
    the panel under ``ROBUSTNESS_KEY``; runs without it are left out). ``value``: ``auc`` (each cell the AUC and, off
    the clean column, its change from clean in brackets; a last column gives the worst drop and where) or
    another field of the panel (e.g. ``tpr_at_threshold``)."""
    panels = {run: m[ROBUSTNESS_KEY] for run, m in metrics_by_run.items() if ROBUSTNESS_KEY in m}
    if not panels:
        return ""
    names = [d for d in PANEL if any(d in p["degradations"] for p in panels.values())]
    head = ["run", *(LABELS[d] for d in names)] + (["worst drop"] if value == "auc" else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(head) - 1)) + "|"]
    for run, p in panels.items():
        cells = [run]
        for d in names:
            m = p["degradations"].get(d)
            if m is None:
                cells.append("–")
            elif value == "auc" and d != "clean":
                cells.append(f"{_fmt(m['auc'])} ({0.0 - m['auc_drop']:+.3f})")  # the change from clean (no "-0.000")
            else:
                cells.append(_fmt(m[value]))
        if value == "auc":
            name, drop = worst(p)
            cells.append(f"{drop:.3f} ({LABELS[name]})" if name != "clean" else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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


# ----------------------------------------------------------------------------- experiments
def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _exp_params(data: dict, files: tuple[str, ...]) -> dict:
    """One experiment's params of ``files`` (from `dvc exp show --json`), flat; keys of other than the first
    file carry its name."""
    params = data.get("params") or {}
    return {(key if file == files[0] else f"{file}:{key}"): value for file in files
            for key, value in _flatten((params.get(file) or {}).get("data") or {}).items()}


UNREADABLE = "unreadable"  # the cell of a run whose metrics file exists but cannot be read (said on stderr)


def _exp_metric(data: dict, runs_dir: str, metric: str, label: str = "", problems: list | None = None) -> dict:
    """{run: its headline ``metric``} from the metrics/runs/<run>.json files of one experiment; a file DVC could
    not read is ``UNREADABLE`` and a line in ``problems`` naming it (in the workspace: our own reader's line)."""
    out: dict = {}
    for file, entry in (data.get("metrics") or {}).items():
        path = Path(file)
        if path.parent.as_posix() != runs_dir:
            continue
        if (entry or {}).get("error"):
            out[path.stem] = UNREADABLE
            if problems is not None:
                problems.append(_unreadable(path, entry["error"], label))
        elif metric in ((entry or {}).get("data") or {}):
            out[path.stem] = entry["data"][metric]
    return out


def _unreadable(path: Path, error, label: str) -> str:
    """One line for a metrics file DVC could not read: the workspace's file is read again here, so the line
    says what is wrong with it; a commit's or experiment's carries DVC's own message."""
    if label == "workspace" and path.exists():
        try:
            read_metrics_json(path)
        except UserError as e:
            return str(e)
    msg = " ".join(str(error.get("msg") or error.get("type") or error if isinstance(error, dict) else error).split())
    return f"{path} ({label}): cannot be read ({msg}); rerun the stage that writes it"


def _cell(value) -> str:
    return value if value == UNREADABLE else _fmt(value)


def _changed(params: dict, base: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items() if base.get(k) != v)


def experiments_table(shown: list[dict], pipeline: str = "demo", metric: str = "auc") -> str:
    """`dvc exp show --json` as one readable table: a row per commit and experiment (and the workspace), the
    params each changed from its commit (the workspace: from the first commit), and each run's headline
    ``metric`` (metrics/runs/<run>.json) as a column, runs in the order of ``runs``."""
    folder = PIPELINES[pipeline][0]
    files = (PARAMS_FILE,) if folder == "." else (PARAMS_FILE, f"{folder}/{PARAMS_FILE}")
    runs_dir = "metrics/runs" if folder == "." else f"{folder}/metrics/runs"
    baselines = [b for b in shown if b["rev"] != "workspace"]
    first = _exp_params((baselines[0] if baselines else shown[0]).get("data") or {}, files)
    rows: list[tuple[str, str, dict]] = []
    problems: list[str] = []
    for base in shown:
        data = base.get("data") or {}
        params = _exp_params(data, files)
        if base["rev"] == "workspace":
            rows.append(("workspace", _changed(params, first), _exp_metric(data, runs_dir, metric, "workspace",
                                                                           problems)))
            continue
        label = f"{base.get('name') or ''} {base['rev'][:7]}".strip()
        rows.append((label, "", _exp_metric(data, runs_dir, metric, label, problems)))
        for exp in base.get("experiments") or []:
            rev = exp["revs"][0]
            text = _changed(_exp_params(rev.get("data") or {}, files), params) or "(no param changed)"
            label = rev.get("name") or rev["rev"][:7]
            rows.append((f"  {label}", f"failed: {text}" if rev.get("error") else text,
                         _exp_metric(rev.get("data") or {}, runs_dir, metric, label, problems)))
    for line in dict.fromkeys(problems):
        print(f"exps: warning: {line}", file=sys.stderr)
    order = [k.removeprefix(f"{RUNS}.") for k in first if k.startswith(f"{RUNS}.")]
    found = {run for *_, values in rows for run in values}
    runs = [r for r in order if r in found] + sorted(found - set(order))
    table = [("experiment", "changed params", *runs)]
    table += [(label, changed, *(_cell(values.get(run)) for run in runs)) for label, changed, values in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    return "\n".join([f"{pipeline} pipeline, test {metric} per run:", *lines])


def experiments(pipeline: str = "demo", metric: str = "auc", all_commits: bool = False) -> str:
    """``experiments_table`` of this repository's `dvc exp show --json` (every commit with ``all_commits``)."""
    import subprocess

    if metric not in HEADLINE:
        raise UserError(f"--metric {metric!r}: not a headline column (one of {', '.join(HEADLINE)})")
    res = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json", *(["-A"] if all_commits else [])],
                         capture_output=True, text=True)
    if res.returncode != 0:
        line = dvc_error_line(res.stderr, res.returncode)
        broken = _first_unreadable_metrics()
        if broken:  # DVC's own line names no file (e.g. "unexpected error - EncodingError ..."): ours does
            raise UserError(f"dvc exp show failed: {line}; unreadable metrics file: {broken}")
        raise UserError(f"dvc exp show failed: {line}")
    return experiments_table(json.loads(res.stdout), pipeline, metric)


def _first_unreadable_metrics(root: str | Path = ".") -> str | None:
    """The one-line error of the first metrics JSON of either pipeline's workspace that cannot be read, if any."""
    for folder in PIPELINES.values():
        metrics = Path(root) / folder[0] / "metrics"
        for path in sorted(metrics.rglob("*.json")) if metrics.is_dir() else []:
            try:
                read_metrics_json(path)
            except UserError as e:
                return str(e)
    return None



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


def _recipe(cfg: dict) -> str:
    """The generalization levers a run's merged config turns on, in words (the README's recipe column)."""
    parts = [f"`{cfg['model']}`"]
    if cfg.get("pseudo_fakes", "none") != "none":
        parts.append(f"{cfg['pseudo_fakes'].upper()} pseudo-fakes, reals only"
                     + (" (val too)" if cfg.get("pseudo_fakes_val") else ""))
    aug = [f"{name} p={cfg[key]:g}" for name, key in (("blur", "degrade_p_blur"), ("JPEG", "degrade_p_jpeg"))
           if cfg.get(key)]
    if aug:
        parts.append(" + ".join(aug))
    return ", ".join(parts)


def _auc_ci(m: dict | None) -> str:
    if not m or m.get("auc") is None:
        return "–"
    ci = f" [{_fmt(m.get('auc_ci_low'))}, {_fmt(m.get('auc_ci_high'))}]" if m.get("auc_ci_low") is not None else ""
    return f"{_fmt(m['auc'])}{ci}"


GENERALIZATION_DROPS = ("jpeg_q70", "resize_half")  # the panel columns of the generalization table


def render_generalization_table(pipeline: str, root: str | Path = ".") -> str:
    """Per run: its recipe, validation and test AUC, the AUC on the other dataset and on each evaluation-only set
    of other generators (bootstrap 95 % intervals), the AUC change under JPEG q70 and the 0.5x resize (robustness
    panel), params and training time; from metrics/evaluate/<run>.json, metrics/runs/<run>.json and dvc.lock."""
    folder = Path(root) / PIPELINES[pipeline][0]
    lock = _lock(folder)
    runs = _lock_runs(lock)
    evaluated = {run: _read_json(folder / "metrics" / "evaluate" / f"{run}.json") for run in runs}
    sets = list(dict.fromkeys(g for m in evaluated.values() for g in m.get("cross_generator", {})))
    head = (["run", "recipe", "val AUC", "test AUC [95 % CI]", "other dataset test AUC"]
            + [f"{g} AUC [95 % CI]" for g in sets] + [f"Δ {LABELS[d]}" for d in GENERALIZATION_DROPS]
            + ["params", "train time"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run, stage in runs.items():
        m, row = evaluated[run], _read_json(folder / "metrics" / "runs" / f"{run}.json")
        cross = m["cross_dataset"]
        others = ", ".join(f"{cross['datasets'][d]} {_fmt(a)}" for d, a in cross["auc"].items()
                           if d != cross["trained_on"])
        panel = m.get(ROBUSTNESS_KEY, {}).get("degradations", {})
        drops = [f"{0.0 - panel[d]['auc_drop']:+.3f}" if d in panel else "–" for d in GENERALIZATION_DROPS]
        cells = [f"`{run}`", _recipe(merge_run(_stage_params(lock[stage]), stage)), _fmt(row.get("val_auc")),
                 f"**{_auc_ci(m)}** ({cross['datasets'][cross['trained_on']]})", others or "–",
                 *(_auc_ci(m.get("cross_generator", {}).get(g)) for g in sets), *drops,
                 f"{row.get('num_params', 0):,}", f"{row.get('train_time_s', 0):,} s"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_panel_block(pipeline: str, root: str | Path = ".") -> str:
    """Every run's robustness panel (metrics/summary/robustness.json) as a table."""
    panels = _read_json(Path(root) / PIPELINES[pipeline][0] / "metrics" / "summary" / ROBUSTNESS_JSON)
    return panel_table({run: {ROBUSTNESS_KEY: p} for run, p in panels.items()}).rstrip("\n")


# block suffix -> what renders it (``<pipeline><suffix>``)
BLOCKS = {"": render_table, "-cross": render_cross_table, "-robustness": render_panel_block,
          "-generalization": render_generalization_table}


DETECTORS_DIR = Path("src") / "deepfake_detect" / "detectors"  # the shipped detectors' cards (release stage)


def render_detectors(root: str | Path = ".") -> str:
    """The shipped detectors, one row per model card (``src/deepfake_detect/detectors/<task>.json``)."""
    cards = [_read_json(p) for p in sorted((Path(root) / DETECTORS_DIR).glob("*.json"))]
    if not cards:
        return "No shipped detectors yet: `dvc repro real/dvc.yaml:release` makes them."
    rows = ["| detector | task | run | test AUC [95 % CI] | threshold | calibration | FPR on real images | ECE |",
            "|---|---|---|---|---|---|---|---|"]
    for c in cards:
        t = c["test"]
        fpr = "; ".join(f"{name} {_fmt(v['fpr'], '.1%')} (n={v['n']})" for name, v in c["false_positive_rate"].items())
        cal = "Platt" if c.get("calibration") else "none"
        rows.append(f"| `{c['name']}` | {c['task']} | `{c['run']}` | **{_fmt(t['auc'])}** [{_fmt(t['auc_ci_low'])}, "
                    f"{_fmt(t['auc_ci_high'])}] | {_fmt(c['threshold'], '.4f')} | {cal} | {fpr} | "
                    f"{_fmt(c['reliability']['ece'])} |")
    return "\n".join(rows)


def render_block(block: str, root: str | Path = ".") -> str:
    """The generated text of one block: ``<pipeline>`` (results), ``<pipeline>-cross`` (every run on every
    dataset), ``<pipeline>-robustness`` (the panel), ``<pipeline>-generalization`` (recipes off their training
    distribution), ``detectors`` (the shipped detectors' model cards), ``bench:<path of a bench_train.py JSON>``;
    pipelines: ``demo``, ``real``."""
    if block.startswith("bench:"):
        return render_bench(block.removeprefix("bench:"), root)
    if block == "detectors":
        return render_detectors(root)
    for suffix, render in sorted(BLOCKS.items(), key=lambda kv: -len(kv[0])):
        if block.endswith(suffix) and block[:len(block) - len(suffix)] in PIPELINES:
            return render(block[:len(block) - len(suffix)], root)
    raise UserError(f"unknown report block '{block}' (known: "
                    f"{', '.join(p + s for p in PIPELINES for s in BLOCKS)}, detectors, bench:<file>)")


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
