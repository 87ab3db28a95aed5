"""``deepfake-detect plots``: every DVC plot on one self-contained HTML page that works offline.

``dvc plots show`` writes an ``index.html`` whose three ``<script>`` tags load vega, vega-lite and
vega-embed from a CDN: offline it shows the PNG figures but none of the curves. This command asks DVC for
the same plots as JSON (``dvc plots show --json``, or ``dvc plots diff REV ... --json`` to compare
commits): the Vega-Lite spec of each curve with its data filled in, and the image files per revision. It
renders each spec to SVG with vl-convert (Vega compiled into a Python wheel, no browser, no network) and
writes one page with the SVGs inline and the images as base64 data URIs, so the page needs nothing but
itself and can be moved or mailed.

Plots DVC cannot load are listed on the page with the stage that makes them. The common case is a fresh
clone: the PNG outs live in the DVC cache, not in git. DVC then fails the *whole* revision on a missing
directory out (``DataIndexDirError``) and silently drops a missing directory plot, so this module
retries with that directory excluded and checks what came back against the plots ``dvc.yaml`` declares.
"""
from __future__ import annotations

import ast
import base64
import copy
import html
import importlib.util
import json
import mimetypes
import posixpath
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import UserError
from ..io import write_text
from ..metrics_files import dvc_error_line

SECTIONS = ("Training curves", "Evaluation curves", "Figures")
TRAINING_X = ("step", "epoch")  # curves over training time (dvclive logs "step") are training curves
SCALE = 1.3  # DVC's default 300 x 300 px plot is small beside its legend
VEGA_CONFIG = {"axis": {"labelFontSize": 12, "titleFontSize": 13}, "title": {"fontSize": 15},
               "legend": {"labelFontSize": 12, "titleFontSize": 12, "labelLimit": 320}}


class PlotsPageError(UserError, RuntimeError):
    """DVC, the repository or the renderer is not usable; the message says which."""


@dataclass
class Item:
    """One plot on the page: its section, the stage that makes it, its HTML and its caption.

    The caption is the plot id (what ``dvc plots show ID`` takes), left out where the chart's own
    title already is the id.
    """

    section: str
    stage: str
    body: str
    caption: str


# ---------------------------------------------------------------- DVC

def repo_root(start: Path) -> Path:
    """The DVC repository holding ``start``: DVC reports plot ids relative to it when run there."""
    for path in (start, *start.parents):
        if (path / ".dvc").is_dir():
            return path
    raise PlotsPageError(f"not a DVC repository: {start} (no .dvc/ here or above)")


def _run_dvc(root: Path, revs: list[str], out_dir: str, exclude: list[str]) -> dict:
    """One ``dvc plots show|diff --json`` run; images are copied to ``out_dir``."""
    if importlib.util.find_spec("dvc") is None:
        raise PlotsPageError(f"dvc not found: it is not installed for {sys.executable} (pip install dvc)")
    targets = [_exclusion(exclude)] if exclude else []
    if revs:
        args = ["plots", "diff", "--json", "-o", out_dir, *revs] + (["--targets", *targets] if targets else [])
    else:
        args = ["plots", "show", "--json", "-o", out_dir, *targets]
    res = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)
    cmd = "dvc " + " ".join(args[:2] + revs)
    if res.returncode != 0:
        raise PlotsPageError(f"{cmd} failed: {dvc_error_line(res.stderr, res.returncode)}")  # not "Having troubles?"
    try:
        return json.loads(res.stdout or "{}")
    except json.JSONDecodeError:
        raise PlotsPageError(f"{cmd} --json did not print JSON: {res.stdout[:200]!r}") from None


def _exclusion(dirs: list[str]) -> str:
    """A plot target matching every plot id outside ``dirs``.

    DVC matches targets with ``re.match`` against the plot id and against ``dvc.yaml::id``, so one
    negative look-ahead keeps everything but those directories.
    """
    alts = "|".join(re.escape(d) for d in dirs)
    return rf"(?!(?:.*::)?(?:{alts})(?:/|$))"


def _missing_dir(error: dict) -> str | None:
    """The directory of a revision-wide ``DataIndexDirError`` ("failed to load directory ('a', 'b')")."""
    if error.get("type") != "DataIndexDirError" or "name" in error:
        return None
    match = re.search(r"\((.*)\)", error.get("msg", ""))
    try:
        parts = ast.literal_eval(f"({match.group(1)})") if match else None
    except (ValueError, SyntaxError):
        return None
    return "/".join(parts) if isinstance(parts, tuple) and parts else None


def collect(root: Path, revs: list[str], out_dir: str) -> tuple[dict, list[dict], list[str]]:
    """DVC's plot data and errors, and the directories excluded because DVC could not load them.

    Any other revision-wide error (a broken dvc.yaml in that revision ...) is a user error.
    """
    exclude: list[str] = []
    seen_errors: list[dict] = []  # keep the revisions of the runs before an exclusion
    while True:
        result = _run_dvc(root, revs, out_dir, exclude)
        errors = result.get("errors", [])
        whole = [e for e in errors if "name" not in e]
        new = [d for e in whole if (d := _missing_dir(e)) and d not in exclude]
        if not new:
            break
        exclude += dict.fromkeys(new)
        seen_errors += whole
    if whole:
        raise PlotsPageError(f"dvc could not load the plots of {whole[0]['rev']}: {whole[0].get('msg', '')}")
    return result.get("data", {}), seen_errors + errors, exclude


# ---------------------------------------------------------------- dvc.yaml

def _paths(entries) -> list[str]:
    """Paths of a dvc.yaml ``outs``/``metrics``/``plots`` list (plain strings or ``{path: options}``)."""
    return [e if isinstance(e, str) else next(iter(e)) for e in entries or []]


def pipeline_files(root: Path) -> list[Path]:
    """The repository's dvc.yaml files: the root one and those one folder down (e.g. real/dvc.yaml)."""
    return [f for f in [root / "dvc.yaml", *sorted(root.glob("*/dvc.yaml"))] if f.is_file()]


def read_pipeline(root: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """From every dvc.yaml: {output path: stage} and {plot id as DVC names it: its data files}.

    DVC's JSON omits plots it could not load without a word, so the page needs the declared list to
    say what is missing, and the stage map to say which stage makes it. DVC names a top-level plot that
    several dvc.yaml files declare ``<dvc.yaml path>::<id>`` (an id only one declares keeps its name), a stage
    ``<dvc.yaml path>:<stage>``; paths are
    from the repository root. Parametrised (foreach) stages are not expanded: their outputs simply have
    no stage on the page.
    """
    files = pipeline_files(root)
    outputs, declared = {}, {}
    docs = {path: yaml.safe_load(path.read_text()) for path in files}
    docs = {path: doc if isinstance(doc, dict) else {} for path, doc in docs.items()}
    # DVC prefixes a top-level plot id with its dvc.yaml only where another dvc.yaml declares the same id
    ids = [next(iter(e)) if isinstance(e, dict) else e for doc in docs.values() for e in doc.get("plots") or []]
    for path, doc in docs.items():
        rel = path.relative_to(root).as_posix()
        folder = posixpath.dirname(rel) or "."
        for name, stage in (doc.get("stages") or {}).items():
            stage = stage if isinstance(stage, dict) else {}
            label = name if rel == "dvc.yaml" else f"{rel}:{name}"
            for key in ("outs", "metrics", "plots"):
                for p in _paths(stage.get(key)):
                    p = posixpath.normpath(posixpath.join(folder, stage.get("wdir", "."), p))
                    outputs[p] = label
                    if key == "plots":
                        declared[p] = [p]
        for entry in doc.get("plots") or []:
            plot_id, props = (entry, None) if isinstance(entry, str) else next(iter(entry.items()))
            y = (props or {}).get("y")
            key = plot_id if ids.count(plot_id) == 1 else f"{rel}::{plot_id}"
            declared[key] = ([posixpath.normpath(posixpath.join(folder, f)) for f in y] if isinstance(y, dict)
                             else [posixpath.normpath(posixpath.join(folder, plot_id))])
    return outputs, declared


def stage_of(path: str, outputs: dict[str, str]) -> str:
    """The stage whose output is ``path`` or a folder above it ("" when no stage makes it)."""
    best = max((o for o in outputs if path == o or path.startswith(o + "/")), key=len, default=None)
    return outputs[best] if best else ""


def find_missing(data: dict, errors: list[dict], declared: dict[str, list[str]], excluded: list[str],
                 revs: list[str]) -> dict[str, dict[str, str]]:
    """{path or plot id: {revision: why}} for every declared plot or data file DVC did not load."""
    missing: dict[str, dict[str, str]] = {}
    for e in errors:
        if "source" in e:
            missing.setdefault(e["source"], {})[e["rev"]] = e.get("msg", "")
    for plot_id in declared:
        loaded = {r for key, entries in data.items() if key == plot_id or key.startswith(plot_id + "/")
                  for entry in entries for r in entry.get("revisions", [])}
        for rev in revs:
            if rev not in loaded and rev not in missing.get(plot_id, {}):
                missing.setdefault(plot_id, {})[rev] = _why(plot_id, excluded)
    return dict(sorted(missing.items()))


def _why(plot_id: str, excluded: list[str]) -> str:
    folder = next((d for d in excluded if plot_id == d or plot_id.startswith(d + "/")), None)
    if folder:
        return f"{folder}/ is in neither the workspace nor the DVC cache"
    return "DVC loaded nothing for it: not in this revision, or not in the DVC cache"


def revisions(data: dict, errors: list[dict], requested: list[str]) -> list[str]:
    """Revisions in DVC's order; DVC names them (``workspace``, or as given to ``dvc plots diff``)."""
    seen = [r for entries in data.values() for entry in entries for r in entry.get("revisions", [])]
    seen += [e["rev"] for e in errors if "rev" in e]
    return list(dict.fromkeys(seen)) or requested or ["workspace"]


# ---------------------------------------------------------------- rendering

def _x_field(spec) -> str:
    """The field on the x axis of a (possibly layered) Vega-Lite spec, "" if none."""
    if isinstance(spec, dict):
        x = spec.get("encoding", {}).get("x", {})
        if isinstance(x, dict) and x.get("field"):
            return x["field"]
        return next((f for s in spec.get("layer", []) if (f := _x_field(s))), "")
    return ""


def _colour_by_file(node, files: list[str]) -> None:
    """Colour lines by file instead of by revision (DVC's scheme), in place.

    DVC colours by revision and tells the files apart only by dash pattern; with one revision the
    ROC of four runs is four purple lines. With several revisions DVC's scheme is the comparison.
    The fixed domain keeps layers without a filename (DVC's hover rule) out of the legend.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "color" and isinstance(value, dict) and value.get("field") == "rev":
                node[key] = {"field": "filename", "type": "nominal", "scale": {"domain": files}}
            else:
                _colour_by_file(value, files)
    elif isinstance(node, list):
        for value in node:
            _colour_by_file(value, files)


def _drop_rev_dash(node) -> None:
    """Remove a dash-per-revision encoding (our templates' ``strokeDash`` on ``rev``), in place: with one
    revision it draws nothing but a legend naming it."""
    if isinstance(node, dict):
        dash = (node.get("encoding") or {}).get("strokeDash") if isinstance(node.get("encoding"), dict) else None
        if isinstance(dash, dict) and dash.get("field") == "rev":
            del node["encoding"]["strokeDash"]
        for value in node.values():
            _drop_rev_dash(value)
    elif isinstance(node, list):
        for value in node:
            _drop_rev_dash(value)


def readable(spec: dict, n_revs: int) -> dict:
    """A copy of DVC's spec drawn larger and, for one revision, with a colour per file (where the template
    colours by revision) and no revision legend."""
    spec = copy.deepcopy(spec)
    for key in ("width", "height"):
        if isinstance(spec.get(key), (int, float)):
            spec[key] = round(spec[key] * SCALE)
    files = sorted({v["filename"] for v in spec.get("data", {}).get("values", [])
                    if isinstance(v, dict) and "filename" in v})
    if n_revs == 1:
        _drop_rev_dash(spec)
        if len(files) > 1:
            _colour_by_file(spec, files)
    return spec


def render_svg(spec: dict, uid: str, plot_id: str) -> str:
    """The chart as inline SVG; its element ids get a ``uid`` prefix so charts on one page cannot clash."""
    try:
        import vl_convert as vlc
    except ImportError:
        raise PlotsPageError("vl-convert-python is not installed (pip install vl-convert-python)") from None
    try:  # larger fonts where the spec sets none; no data from URLs: the page promises offline
        svg = vlc.vegalite_to_svg(spec, vl_version=_vl_version(spec, vlc.get_vegalite_versions()),
                                  config=VEGA_CONFIG, allowed_base_urls=[])
    except Exception as e:  # vl-convert raises ValueError for bad specs; name the plot instead
        raise PlotsPageError(f"vl-convert could not render plot {plot_id}: {str(e).splitlines()[0]}") from None
    return re.sub(r'(id="|url\(#|href="#)', rf"\g<1>{uid}-", svg)


def _vl_version(spec: dict, available: list[str]) -> str | None:
    """The newest Vega-Lite of the major version the spec's ``$schema`` names (DVC's HTML loads
    vega-lite@5); None (vl-convert's newest) where the schema names none or none is bundled."""
    major = re.search(r"/v(\d+)(?:\.[\d.]+)?\.json$", spec.get("$schema", ""))
    same = [v for v in available if major and v.split(".")[0] == major.group(1)]
    return max(same, key=lambda v: tuple(map(int, v.split("."))), default=None)


def image_uri(path: Path) -> str:
    """The image as a data URI, so the page does not depend on DVC's copy in a temporary folder."""
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _title(spec: dict) -> str:
    title = spec.get("title", "")
    return title.get("text", "") if isinstance(title, dict) else title


def items(data: dict, declared: dict[str, list[str]], outputs: dict[str, str], revs: list[str],
          root: Path) -> list[Item]:
    """Every loaded plot as a page item, in DVC's order."""
    out = []
    for plot_id, entries in data.items():
        stage = next((s for f in declared.get(plot_id, [plot_id]) if (s := stage_of(f, outputs))), "")
        vega = [e for e in entries if e.get("type") == "vega"]
        images = [e for e in entries if e.get("type") == "image"]
        for spec in (e["content"] for e in vega):
            section = SECTIONS[0] if _x_field(spec) in TRAINING_X else SECTIONS[1]
            body = render_svg(readable(spec, len(revs)), f"p{len(out)}", plot_id)
            out.append(Item(section, stage, body, "" if _title(spec) == plot_id else plot_id))
        if images:
            out.append(Item(SECTIONS[2], stage, _images_html(images, root, len(revs)), plot_id))
    return out


def _images_html(entries: list[dict], root: Path, n_revs: int) -> str:
    parts = []
    for entry in entries:
        rev = ", ".join(entry.get("revisions", []))
        label = f'<div class="rev">{html.escape(rev)}</div>' if n_revs > 1 else ""
        parts.append(f'<div class="img">{label}<img alt="{html.escape(rev)}" '
                     f'src="{image_uri(root / entry["url"])}"></div>')
    return f'<div class="imgs">{"".join(parts)}</div>'


# ---------------------------------------------------------------- the page

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
nav a { margin-right: 1.2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
h3 { margin: 1.2em 0 .4em; font-size: 1.05em; color: #444; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; padding: .5em; border: 1px solid #e3e3e3; border-radius: 4px; max-width: 100%; }
figcaption { margin-bottom: .3em; color: #555; }
li code { color: #444; }
svg, img { max-width: 100%; height: auto; }
.imgs { display: flex; flex-wrap: wrap; gap: .8em; }
.rev { font-family: monospace; color: #555; }
.missing li { margin: .3em 0; }
"""


def _section_html(name: str, section: list[Item], stage_order: list[str]) -> str:
    """One section, its plots grouped by the stage that makes them (dvc.yaml order)."""
    rank = {s: n for n, s in enumerate(stage_order)}
    stages = sorted({i.stage for i in section}, key=lambda s: rank.get(s, len(rank)))
    parts = [f'<section id="{name.split()[0].lower()}"><h2>{html.escape(name)}</h2>']
    for stage in stages:
        parts.append(f"<h3>{html.escape(stage or 'not made by a stage')}</h3><div class=\"grid\">")
        for item in (i for i in section if i.stage == stage):
            cap = f"<figcaption><code>{html.escape(item.caption)}</code></figcaption>" if item.caption else ""
            parts.append(f"<figure>{cap}{item.body}</figure>")
        parts.append("</div>")
    return "".join(parts) + "</section>"


def _missing_html(missing: dict[str, dict[str, str]], outputs: dict[str, str]) -> str:
    """The plots DVC did not load, each with the stage that makes it and how to get it."""
    rows = []
    for path, per_rev in missing.items():
        stage = stage_of(path, outputs)
        by_reason: dict[str, list[str]] = {}
        for rev, msg in per_rev.items():
            by_reason.setdefault(msg, []).append(rev)
        why = "; ".join(f"{html.escape(', '.join(revs))}: {html.escape(msg)}" for msg, revs in by_reason.items())
        how = (f"Made by stage <code>{html.escape(stage)}</code>: <code>dvc pull</code> or "
               f"<code>dvc repro {html.escape(stage)}</code>.") if stage else "Made by no stage of dvc.yaml."
        rows.append(f"<li><code>{html.escape(path)}</code> ({why}). {how}</li>")
    return (f'<section id="missing" class="missing"><h2>Not loaded ({len(missing)})</h2>'
            f"<ul>{''.join(rows)}</ul></section>")


def build_page(page_items: list[Item], missing: dict[str, dict[str, str]], outputs: dict[str, str],
               revs: list[str]) -> str:
    """The HTML page: a section per kind of plot, then the plots that could not be loaded."""
    stage_order = list(dict.fromkeys(outputs.values()))
    sections = [(name, [i for i in page_items if i.section == name]) for name in SECTIONS]
    sections = [(name, s) for name, s in sections if s]
    links = [f'<a href="#{n.split()[0].lower()}">{html.escape(n)} ({len(s)})</a>' for n, s in sections]
    if missing:
        links.append(f'<a href="#missing">Not loaded ({len(missing)})</a>')
    title = "DVC plots: " + " vs ".join(revs)
    body = "".join(_section_html(n, s, stage_order) for n, s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1><nav>{''.join(links)}</nav>"
            f"{body}{_missing_html(missing, outputs) if missing else ''}</body></html>\n")


def write_page(out: str | Path, revs: list[str] | None = None, repo: Path | None = None) -> Path:
    """Render the DVC plots of ``revs`` (none: the workspace) to ``out``.

    ``repo`` is the repository or a folder in it (default: the current directory).
    """
    revs = list(revs or [])
    root = repo_root(Path(repo or Path.cwd()).resolve())
    outputs, declared = read_pipeline(root)
    with tempfile.TemporaryDirectory(prefix="dvc-plots-") as tmp:
        data, errors, excluded = collect(root, revs, tmp)
        seen = revisions(data, errors, revs)
        page_items = items(data, declared, outputs, seen, root)
    missing = find_missing(data, errors, declared, excluded, seen)
    if not page_items and not missing:
        raise PlotsPageError(f"no plots: dvc plots found none in {root}")
    return write_text(out, build_page(page_items, missing, outputs, seen))
