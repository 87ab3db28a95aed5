"""The one reader of the metrics JSON files that ``report``, ``exps`` and ``plots`` show, and of DVC's error lines.

A metrics file that cannot be used (missing, not UTF-8, truncated or not JSON, or JSON that is not an object)
is one ``MetricsFileError`` line naming the file, what is wrong with it, and the fix: rerun the stage that
writes it. ``dvc_error_line`` picks DVC's own error line out of its stderr (not its sign-off).
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError

DVC_SIGN_OFF = "Having any troubles?"  # the last line of DVC's stderr on every failure, naming nothing


class MetricsFileError(UserError, ValueError):
    """A metrics JSON that cannot be read; the message names the file, what is wrong and the fix."""


def _repro(path: Path) -> str:
    """The command that rewrites ``path``: the pipeline of the metrics folder it lies in."""
    parts = Path(path).as_posix().split("/")
    real = "metrics" in parts and "real" in parts[:parts.index("metrics")]
    return "dvc repro real/dvc.yaml" if real else "dvc repro"


def _fix(path: Path) -> str:
    return f"rerun the stage that writes it ({_repro(path)})"


def read_metrics_json(path: str | Path) -> dict:
    """The JSON object in ``path``; anything else is a one-line ``MetricsFileError`` naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MetricsFileError(f"{path}: not found; it is written by an earlier stage ({_repro(path)})") from None
    except IsADirectoryError:
        raise MetricsFileError(f"{path}: a folder, not a metrics file; remove it and {_fix(path)}") from None
    except OSError as e:
        raise MetricsFileError(f"{path}: cannot be read ({e.strerror or e}); fix its permissions") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise MetricsFileError(f"{path}: not UTF-8 text (byte {e.start}); damaged or edited by hand: "
                               f"{_fix(path)}") from None
    if not text.strip():
        raise MetricsFileError(f"{path}: empty (a stage killed while writing it?): {_fix(path)}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        # it ends where the parser stopped (or inside a string): cut off, e.g. by a full disk or a kill
        cut = e.pos >= len(text.rstrip()) - 1 or e.msg.startswith("Unterminated string")
        what = "truncated" if cut else "not valid JSON"
        raise MetricsFileError(f"{path}: {what} (line {e.lineno}, column {e.colno}: {e.msg}): {_fix(path)}") from None
    if not isinstance(data, dict):
        raise MetricsFileError(f"{path}: a JSON {_json_type(data)}, not an object of metrics: {_fix(path)}")
    return data


def _json_type(value) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "true/false",
            type(None): "null"}.get(type(value), type(value).__name__)


def dvc_error_line(stderr: str, returncode: int | None = None) -> str:
    """DVC's own error line: the last line of ``stderr`` that is neither blank nor its sign-off ("Having any
    troubles? Hit us up at https://dvc.org/support ..."); an ``ERROR:`` line first where there is one."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.strip().startswith(DVC_SIGN_OFF)]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    if errors:
        return errors[-1]
    if lines:
        return lines[-1]
    return f"exit code {returncode}" if returncode is not None else "(no message)"


def fmt(value, spec: str = ".3f") -> str:
    """A metric as a table cell: ``format(value, spec)``, or ``–`` where the file has none."""
    return "–" if value is None else format(value, spec)
