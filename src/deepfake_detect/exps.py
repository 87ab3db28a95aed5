"""``deepfake-detect exps``: `dvc exp show --json` as one readable table, a row per commit and experiment, the
params each changed and each run's headline metric as a column."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .config import PARAMS_FILE, RUNS
from .errors import UserError
from .metrics_files import dvc_error_line, fmt, read_metrics_json
from .summary import HEADLINE
from .tables import PIPELINES


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
    return value if value == UNREADABLE else fmt(value)


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
