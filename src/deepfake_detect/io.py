"""Atomic file output: every file the package writes goes through here.

A stage killed at any moment leaves either the old file or the new one, never a
half-written file that DVC could cache. A file that cannot be written (permission
denied, read-only file system, a file where a folder should be, disk full) is an
``OutputError`` naming the path, not a traceback.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import UserError


class OutputError(UserError):
    """An output path that cannot be written; the message names it and says why."""


_REASONS = {errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.EROFS: "read-only file system",
            errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EISDIR: "it is a folder",
            errno.ENOENT: "no such file or folder"}


@contextlib.contextmanager
def output_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError raised while writing ``path`` into an OutputError that names it and the reason."""
    try:
        yield
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({_reason(Path(path), e)})") from e


def _reason(path: Path, e: OSError) -> str:
    if e.errno in (errno.ENOTDIR, errno.EEXIST):  # mkdir or open through a file
        blocker = next((p for p in [*reversed(path.parents), path] if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return f"{blocker} is a file, not a folder"
    return _REASONS.get(e.errno) or e.strerror or type(e).__name__


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    with output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    tmp = Path(tmp)
    try:
        with output_errors(path):
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(path: str | os.PathLike) -> Path:
    """Create the folder of ``path`` and a scratch file in it, or OutputError naming ``path``: to fail before
    the work rather than after it, and for files written by others (dvclive)."""
    path = Path(path)
    with output_errors(path):
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path.parent).close()
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 whatever the locale (``path_text`` makes any file name UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_csv(path: str | os.PathLike, rows: Iterable[dict], fieldnames: Iterable[str], **fmt) -> Path:
    """A UTF-8 CSV with a header; ``fmt`` goes to ``csv.DictWriter`` (e.g. ``lineterminator``, ``extrasaction``).
    Cells a spreadsheet could run are the caller's to neutralise (``spreadsheet_safe``)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(fieldnames), **fmt)
        w.writeheader()
        w.writerows(rows)
    return Path(path)


# Text cells a spreadsheet runs as a formula when a CSV is opened (OWASP, "CSV Injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: str) -> str:
    """``cell`` with a single quote in front when it starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
    return, as OWASP recommends against CSV injection: spreadsheet software shows it as text instead of running
    it (``=HYPERLINK(...)``). For text columns (file names), not numbers: ``-0.5`` would become ``'-0.5``."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def path_text(path: str | os.PathLike) -> str:
    """A file name as text that any UTF-8 output can hold, losslessly: the bytes of a name that are not UTF-8
    (Linux names are bytes; Python keeps them as lone surrogates, which ``str.encode`` refuses) become
    ``\\xNN`` and a backslash becomes two, so ``caf\\xe9.png`` is the Latin-1 ``café.png`` and ``path_bytes``
    gives the name back. A UTF-8 name without a backslash, the usual case, is unchanged."""
    raw = os.fsencode(path).replace(b"\\", b"\\\\")
    return raw.decode("utf-8", errors="backslashreplace")


def path_bytes(text: str) -> bytes:
    """The file name (bytes, as ``os.fsencode`` gives them) that ``path_text`` wrote as ``text``."""
    return re.sub(rb"\\(\\|x[0-9a-f]{2})", lambda m: b"\\" if m[1] == b"\\" else bytes([int(m[1][1:], 16)]),
                  text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    # numpy scalars / arrays and paths are common in metrics dicts
    if hasattr(o, "item") and getattr(o, "ndim", 1) == 0:
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def save_figure(path: str | os.PathLike, fig, **kwargs) -> Path:
    """Save a matplotlib figure atomically (format from the final suffix)."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix.lstrip(".") or "png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kwargs)
    return path
