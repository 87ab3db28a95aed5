"""The generated tables of README.md and docs/*.md (``deepfake-detect report``).

Each ``<!-- report:<block> -->`` ... ``<!-- /report:<block> -->`` block is rendered from the files the pipelines
wrote: the results of each pipeline from its ``metrics/runs`` rows (``summary``) and the params that ``dvc.lock``
recorded for each stage, each row with the command that makes it; every run on every dataset; the robustness
panel (``robustness.panel_table``); the recipes off their training distribution; the shipped detectors' model
cards; the benchmarks from their JSON. ``--check`` fails when a table differs, ``--write`` updates them.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from .config import PARAMS_FILE, RUNS, merge_run, override
from .errors import UserError
from .io import write_text
from .metrics_files import fmt, read_metrics_json
from .robustness import LABELS, PANEL_KEY, ROBUSTNESS_JSON, panel_table
from .summary import CROSS_DATASET_JSON

# name -> (pipeline folder, the command that reproduces it)
PIPELINES = {"demo": (".", "dvc repro"), "real": ("real", "dvc repro real/dvc.yaml")}


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


def _lock_runs(lock: dict) -> dict[str, str]:
    """{run: its training stage} of a dvc.lock: the ``runs`` summarize ran with."""
    return _stage_params(lock["summarize"])[RUNS]


def _run_config(lock: dict, run: str, stage: str) -> dict:
    """The training config ``run`` ran with, as its training ``stage`` recorded it in dvc.lock: from the run's own
    section, or, in a lock written before sections took their run's name, from the section named after the stage."""
    tree = _stage_params(lock[stage])
    return merge_run(tree, run if run in tree else stage)


def _row(pipeline: str, run: str, stage: str, lock: dict, folder: Path) -> str:
    cfg = _run_config(lock, run, stage)
    data = _stage_params(lock["prepare-splits"])["data"][cfg["dataset"]]["source"]
    data = f"demo {cfg['dataset']}" if data == "demo" else Path(data).name
    m = read_metrics_json(folder / "metrics" / "runs" / f"{run}.json")
    ci = f" [{fmt(m.get('auc_ci_low'))}, {fmt(m.get('auc_ci_high'))}]" if "auc_ci_low" in m else ""
    lifts = (f"{fmt(m.get('saliency_lift'), '.2f')} / {fmt(m.get('gradcam_lift'), '.2f')}"
             if "saliency_lift" in m else "–")
    target = f"{stage}" if pipeline == "demo" else f"real/dvc.yaml:{stage}"
    cells = [f"`{run}`", f"`{cfg['model']}`", data, str(cfg["image_size"]), str(cfg["epochs"]),
             f"{m.get('num_params', 0):,}", f"**{fmt(m.get('auc'))}**{ci}", fmt(m.get("val_auc")),
             fmt(m.get("eer"), ".1%"), fmt(m.get("acc")), fmt(m.get("acc_at_threshold")),
             fmt(m.get("tpr_at_fpr_1pct")), lifts,
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
    cross = read_metrics_json(folder / "metrics" / "summary" / CROSS_DATASET_JSON)
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
    b = read_metrics_json(Path(root) / path)
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
    ci = f" [{fmt(m.get('auc_ci_low'))}, {fmt(m.get('auc_ci_high'))}]" if m.get("auc_ci_low") is not None else ""
    return f"{fmt(m['auc'])}{ci}"


GENERALIZATION_DROPS = ("jpeg_q70", "resize_half")  # the panel columns of the generalization table


def render_generalization_table(pipeline: str, root: str | Path = ".") -> str:
    """Per run: its recipe, validation and test AUC, the AUC on the other dataset and on each evaluation-only set
    of other generators (bootstrap 95 % intervals), the AUC change under JPEG q70 and the 0.5x resize (robustness
    panel), params and training time; from metrics/evaluate/<run>.json, metrics/runs/<run>.json and dvc.lock."""
    folder = Path(root) / PIPELINES[pipeline][0]
    lock = _lock(folder)
    runs = _lock_runs(lock)
    evaluated = {run: read_metrics_json(folder / "metrics" / "evaluate" / f"{run}.json") for run in runs}
    sets = list(dict.fromkeys(g for m in evaluated.values() for g in m.get("cross_generator", {})))
    head = (["run", "recipe", "val AUC", "test AUC [95 % CI]", "other dataset test AUC"]
            + [f"{g} AUC [95 % CI]" for g in sets] + [f"Δ {LABELS[d]}" for d in GENERALIZATION_DROPS]
            + ["params", "train time"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run, stage in runs.items():
        m, row = evaluated[run], read_metrics_json(folder / "metrics" / "runs" / f"{run}.json")
        cross = m["cross_dataset"]
        others = ", ".join(f"{cross['datasets'][d]} {fmt(a)}" for d, a in cross["auc"].items()
                           if d != cross["trained_on"])
        panel = m.get(PANEL_KEY, {}).get("degradations", {})
        drops = [f"{0.0 - panel[d]['auc_drop']:+.3f}" if d in panel else "–" for d in GENERALIZATION_DROPS]
        cells = [f"`{run}`", _recipe(_run_config(lock, run, stage)), fmt(row.get("val_auc")),
                 f"**{_auc_ci(m)}** ({cross['datasets'][cross['trained_on']]})", others or "–",
                 *(_auc_ci(m.get("cross_generator", {}).get(g)) for g in sets), *drops,
                 f"{row.get('num_params', 0):,}", f"{row.get('train_time_s', 0):,} s"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_panel_block(pipeline: str, root: str | Path = ".") -> str:
    """Every run's robustness panel (metrics/summary/robustness.json) as a table."""
    panels = read_metrics_json(Path(root) / PIPELINES[pipeline][0] / "metrics" / "summary" / ROBUSTNESS_JSON)
    return panel_table({run: {PANEL_KEY: p} for run, p in panels.items()}).rstrip("\n")


def render_sources_table(pipeline: str, root: str | Path = ".") -> str:
    """Per source of every dataset with a sources.csv (the evaluate JSON's ``per_source``), one column per run
    scored on it: each fake source's AUC against every real of the test split, then each real source's
    false-positive rate at the run's threshold; n per source."""
    folder = Path(root) / PIPELINES[pipeline][0]
    runs = _lock_runs(_lock(folder))
    evaluated = {run: read_metrics_json(folder / "metrics" / "evaluate" / f"{run}.json") for run in runs}
    per = {(run, d): ps for run, m in evaluated.items() for d, ps in (m.get("per_source") or {}).items()
           if d == m["cross_dataset"]["trained_on"]}  # on its own test split: whole, not a subsample
    if not per:
        return "No dataset with a sources.csv in this pipeline."
    cols = list(per)
    head = ["source (test split)", "n"] + [f"`{run}` on {d}" for run, d in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fakes = list(dict.fromkeys(k for ps in per.values() for k in ps["fake"]))
    reals = list(dict.fromkeys(k for ps in per.values() for k in ps["real"]))
    for src in fakes:
        first = next(ps["fake"][src] for ps in per.values() if src in ps["fake"])
        lines.append(f"| fake: {src} ({first['generator']}), AUC | {first['n']} | "
                     + " | ".join(fmt(per[c]["fake"].get(src, {}).get("auc")) for c in cols) + " |")
    for src in reals:
        first = next(ps["real"][src] for ps in per.values() if src in ps["real"])
        lines.append(f"| real: {src}, FPR at the run's threshold | {first['n']} | "
                     + " | ".join(fmt(per[c]["real"].get(src, {}).get("fpr"), ".1%") for c in cols) + " |")
    return "\n".join(lines)


# block suffix -> what renders it (``<pipeline><suffix>``)
BLOCKS = {"": render_table, "-cross": render_cross_table, "-robustness": render_panel_block,
          "-generalization": render_generalization_table, "-sources": render_sources_table}


DETECTORS_DIR = Path("src") / "deepfake_detect" / "detectors"  # the shipped detectors' cards (release stage)


def render_detectors(root: str | Path = ".") -> str:
    """The shipped detectors, one row per model card (``src/deepfake_detect/detectors/<task>.json``)."""
    cards = [read_metrics_json(p) for p in sorted((Path(root) / DETECTORS_DIR).glob("*.json"))]
    if not cards:
        return "No shipped detectors yet: `dvc repro real/dvc.yaml:release` makes them."
    rows = ["| detector | task | run | test AUC [95 % CI] | threshold | calibration | FPR on real images (test) | "
            "both detectors: verdict FPR (test) | ECE |", "|---|---|---|---|---|---|---|---|---|"]
    for c in cards:
        t = c["test"]
        op = c.get("operating_point")  # per kind of real photo, when the threshold was set that way
        rates = op["test"] if op else c["false_positive_rate"]
        fpr = "; ".join(f"{name} {fmt(v['fpr'], '.1%')} (n={v['n']})" for name, v in rates.items())
        verdict = (c.get("verdict_false_positive_rate") or {}).get("sets") or {}
        both = "; ".join(f"{name} {fmt(v['fpr'], '.1%')} (n={v['n']})" for name, v in verdict.items()) or "–"
        cal = "Platt" if c.get("calibration") else "none"
        rows.append(f"| `{c['name']}` | {c['task']} | `{c['run']}` | **{fmt(t['auc'])}** [{fmt(t['auc_ci_low'])}, "
                    f"{fmt(t['auc_ci_high'])}] | {fmt(c['threshold'], '.4f')} | {cal} | {fpr} | {both} | "
                    f"{fmt(c['reliability']['ece'])} |")
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
