"""`deepfake-detect plots`: DVC's plots on one offline HTML page, checked on a tiny DVC repository."""
from __future__ import annotations

import base64
import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from deepfake_detect.cli import main
from deepfake_detect.errors import UserError
from deepfake_detect.plots import page
from deepfake_detect.plots.curves import write_curve_points

from conftest import write_image

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = "src/deepfake_detect/plots"
DVC = [sys.executable, "-m", "dvc"]
GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]

DVC_YAML = """\
stages:
  draw:
    cmd: python draw.py
    outs:
      - figs
plots:
  - m/fig.png
  - figs/b.png
  - loss:
      title: loss per epoch
      x: step
      y:
        m/train.tsv: loss
        m/val.tsv: loss
  - roc:
      template: simple
      x: fpr
      y:
        m/a.csv: tpr
        m/b.csv: tpr
"""


def _run(cmd, cwd: Path) -> None:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """Two line plots (several y files each), a PNG plot, and a PNG in a stage's directory output that is
    in neither the workspace nor the DVC cache (a fresh clone); committed, with the ROC data changed since."""
    root = tmp_path_factory.mktemp("dvcrepo")
    _run(["git", "init", "-q"], root)
    _run(DVC + ["init", "-q"], root)
    with open(root / ".dvc" / "config", "a") as f:
        f.write("[core]\n    analytics = false\n")
    (root / "m").mkdir()
    (root / "m" / "train.tsv").write_text("step\tloss\n0\t1.0\n1\t0.5\n2\t0.3\n")
    (root / "m" / "val.tsv").write_text("step\tloss\n0\t1.1\n1\t0.7\n2\t0.6\n")
    (root / "m" / "a.csv").write_text("fpr,tpr\n0,0\n0.1,0.8\n1,1\n")
    (root / "m" / "b.csv").write_text("fpr,tpr\n0,0\n0.3,0.6\n1,1\n")
    write_image(root / "m" / "fig.png", seed=1, size=8)
    write_image(root / "figs" / "b.png", seed=2, size=8)
    (root / "dvc.yaml").write_text(DVC_YAML)
    _run(DVC + ["commit", "-f", "-q", "draw"], root)
    shutil.rmtree(root / "figs")
    shutil.rmtree(root / ".dvc" / "cache")
    _run(["git", "add", "-A"], root)
    _run(GIT + ["commit", "-qm", "plots"], root)
    (root / "m" / "a.csv").write_text("fpr,tpr\n0,0\n0.05,0.9\n1,1\n")
    return root


@pytest.fixture(scope="module")
def html_page(repo) -> Path:
    return page.write_page(repo / "dvc_plots" / "offline.html", repo=repo)


def test_page_has_an_svg_per_curve_and_the_png_inline(html_page):
    text = html_page.read_text()
    assert text.count("<svg") == 2
    assert "loss per epoch" in text
    png = (html_page.parents[1] / "m" / "fig.png").read_bytes()
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in text
    assert "<script" not in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # nothing loaded from elsewhere


def test_missing_png_is_listed_with_the_stage_that_makes_it(html_page):
    text = html_page.read_text()
    missing = text[text.index('id="missing"'):]
    assert "<code>figs/b.png</code>" in missing and "figs/ is in neither the workspace nor the DVC cache" in missing
    assert "<code>dvc repro draw</code>" in missing


def test_diff_overlays_revisions_and_shows_each_revisions_image(repo, tmp_path):
    out = page.write_page(tmp_path / "diff.html", ["HEAD"], repo=repo)
    text = out.read_text()
    assert "DVC plots: workspace vs HEAD" in text
    assert text.count("<svg") == 2
    assert text.count('src="data:image/png;base64,') == 2  # m/fig.png of the workspace and of HEAD
    assert '"rev">HEAD<' in text


def test_page_renders_in_headless_chromium(html_page):
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no chromium, chromium-browser or google-chrome on PATH")
    res = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          html_page.as_uri()], capture_output=True, text=True, timeout=120)
    dom = res.stdout
    assert dom.count("<svg") == 2, res.stderr[-2000:]
    assert dom.count('class="mark-line') >= 2 and "<path" in dom
    assert "data:image/png;base64," in dom


def test_failures_are_one_line_user_errors(repo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    assert main(["plots", "no-such-rev", "--out", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "dvc plots diff no-such-rev failed" in err and "unknown Git revision" in err
    with pytest.raises(UserError, match="not a DVC repository"):
        page.write_page(tmp_path / "x.html", repo=tmp_path)
    monkeypatch.setattr(page.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="dvc not found"):
        page.write_page(tmp_path / "x.html", repo=repo)


def test_exclusion_target_drops_a_folder_as_dvc_matches_targets():
    target = page._exclusion(["figs", "plots/explain"])
    kept = ["roc", "dvc.yaml::roc", "figsx/a.png", "m/fig.png", "plots/explainer.png"]
    dropped = ["figs", "figs/b.png", "dvc.yaml::figs/b.png", "plots/explain/a.png"]
    assert all(re.match(target, p) for p in kept)
    assert not any(re.match(target, p) for p in dropped)


def test_two_pipelines_are_named_as_dvc_names_them(tmp_path):
    """With a second dvc.yaml (real/), DVC names plots `<dvc.yaml>::<id>` and stages `<dvc.yaml>:<stage>`;
    the declared list must match, or every chart would be reported missing."""
    from deepfake_detect.plots.page import read_pipeline

    spec = {"stages": {"ev": {"cmd": "x", "outs": [{"roc": {"cache": False}}], "plots": ["figs"]}},
            "plots": [{"roc": {"x": "fpr", "y": {"roc/a.csv": "tpr"}}}]}
    (tmp_path / "real").mkdir()
    for path in (tmp_path / "dvc.yaml", tmp_path / "real" / "dvc.yaml"):
        path.write_text(yaml.safe_dump(spec))
    outputs, declared = read_pipeline(tmp_path)
    assert declared["dvc.yaml::roc"] == ["roc/a.csv"] and declared["real/dvc.yaml::roc"] == ["real/roc/a.csv"]
    assert outputs["real/figs"] == "real/dvc.yaml:ev" and outputs["figs"] == "ev"


# ---------------------------------------------------------------- the project's templates

CURVES_YAML = f"""\
plots:
  - loss:
      title: "r: loss per epoch (train, val)"
      template: {TEMPLATES}/dvc_epochs_template.json
      x: step
      y:
        m/r/train/loss.tsv: loss
        m/r/val/loss.tsv: loss
  - auc:
      title: "r: ROC AUC per epoch (val)"
      template: {TEMPLATES}/dvc_epochs_template.json
      x: step
      y:
        m/r/val/auc.tsv: auc
  - roc:
      title: ROC
      template: {TEMPLATES}/dvc_roc_template.json
      x: fpr
      y:
        roc/a.csv: tpr
        roc/b.csv: tpr
  - det:
      title: DET
      template: {TEMPLATES}/dvc_det_template.json
      x: fpr_probit
      y:
        det/a.csv: fnr_probit
        det/b.csv: fnr_probit
"""


@pytest.fixture(scope="module")
def curves_page(tmp_path_factory) -> tuple[Path, Path]:
    """A DVC repository whose plots use the project's templates: dvclive-style TSVs over 5 epochs (one chart
    of one file) and the ROC/DET CSVs of ``write_curve_points`` for scores down to 1e-7, so that many
    thresholds are written in scientific notation (``1.2e-05``), which sort wrongly as the strings DVC hands
    to the template."""
    root = tmp_path_factory.mktemp("curves")
    _run(["git", "init", "-q"], root)
    _run(DVC + ["init", "-q"], root)
    (root / TEMPLATES).mkdir(parents=True)
    for name in ("dvc_epochs_template.json", "dvc_roc_template.json", "dvc_det_template.json"):
        shutil.copy(REPO / TEMPLATES / name, root / TEMPLATES / name)
    rng = np.random.default_rng(0)
    for split, metric in (("train", "loss"), ("val", "loss"), ("val", "auc")):
        (root / "m" / "r" / split).mkdir(parents=True, exist_ok=True)
        rows = "".join(f"{e}\t{rng.uniform(0.1, 0.9)}\n" for e in range(1, 6))
        (root / "m" / "r" / split / f"{metric}.tsv").write_text(f"step\t{metric}\n{rows}")
    for run in ("a", "b"):
        y = rng.integers(0, 2, 400)
        p_fake = 10.0 ** np.minimum(rng.uniform(-7, 0, 400) + 2 * y, 0)  # informative, many far below 1e-4
        write_curve_points(y, p_fake, root / "roc" / f"{run}.csv", root / "det" / f"{run}.csv")
    (root / "dvc.yaml").write_text(CURVES_YAML)
    return root, page.write_page(root / "offline.html", repo=root)


def _chart(html_text: str, title: str) -> str:
    """The SVG of the chart whose title is ``title``."""
    end = html_text.index(f">{title}</text>")
    return html_text[html_text.rfind("<svg", 0, end):html_text.index("</svg>", end)]


def _lines(svg: str) -> list[tuple[str, str, list[tuple[float, float]]]]:
    """(aria-label, stroke colour, points) of every line mark of a chart."""
    out = []
    for tag in re.findall(r"<path [^>]*aria-roledescription=\"line mark\"[^>]*>", svg):
        d, stroke = re.search(r' d="([^"]*)"', tag).group(1), re.search(r' stroke="([^"]*)"', tag).group(1)
        points = [(float(x), float(y)) for x, y in re.findall(r"(-?[\d.]+),(-?[\d.]+)", d)]
        out.append((re.search(r'aria-label="([^"]*)"', tag).group(1), stroke, points))
    return out


def _monotonic(values: list[float]) -> bool:
    steps = np.diff(values)
    return bool((steps >= -1e-6).all() or (steps <= 1e-6).all())


@pytest.mark.parametrize("curve", ["det", "roc"])
def test_roc_and_det_lines_follow_the_curve(curves_page, curve):
    """Each line visits its points in curve order: monotonic in x and in y, one vertex per CSV row. DVC hands
    thresholds over as strings; ordered as strings, these curves zig-zag (checked here too, so the data really
    tests the template)."""
    root, out = curves_page
    lines = _lines(_chart(out.read_text(), curve.upper()))
    assert len(lines) == 2
    for label, _, points in lines:
        run = re.search(r"(?:run|filename): (\w+)", label).group(1)  # the run: as our template or DVC's names it
        rows = list(csv.DictReader(open(root / curve / f"{run}.csv")))
        assert len(points) == len(rows)
        assert _monotonic([x for x, _ in points]) and _monotonic([y for _, y in points]), f"{curve} {run} zig-zags"
        as_strings = sorted(rows, key=lambda r: r["threshold"])
        x = "fpr_probit" if curve == "det" else "fpr"
        assert not _monotonic([float(r[x]) for r in as_strings]), "the data does not exercise the string order"


def test_training_curves_one_colour_per_split_and_integer_epochs(curves_page):
    _, out = curves_page
    text = out.read_text()
    loss, auc = _chart(text, "r: loss per epoch (train, val)"), _chart(text, "r: ROC AUC per epoch (val)")
    colours = {re.search(r"split: (\w+)", label).group(1): stroke for label, stroke, _ in _lines(loss)}
    assert set(colours) == {"train", "val"} and colours["train"] != colours["val"]
    (label, stroke, _), = _lines(auc)  # one file: DVC names no file, the title's "(val)" names the split
    assert "split: val" in label and stroke == colours["val"]
    for svg in (loss, auc):
        labels = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
        ticks = labels[:labels.index("step")]  # x-axis labels come first, then the axis title (x = step)
        assert ticks and all(t.isdigit() for t in ticks), ticks
        assert "split" in labels and "filename" not in labels and not any(".tsv" in t for t in labels)
        assert "revision" not in labels  # one revision: no legend for it


@pytest.mark.parametrize("pipeline", ["dvc.yaml", "real/dvc.yaml"])
def test_pipelines_draw_their_charts_with_the_templates(pipeline):
    """Every chart of both pipelines uses the project's template for its kind, and a training chart of one
    file names its split where the template reads it (DVC then hands over no file name)."""
    for entry in yaml.safe_load((REPO / pipeline).read_text())["plots"]:
        plot_id, props = next(iter(entry.items()))
        kind = {"step": "epochs", "fpr": "roc", "fpr_probit": "det"}[props["x"]]
        assert props["template"] == f"{TEMPLATES}/dvc_{kind}_template.json", plot_id
        if kind == "epochs" and len(props["y"]) == 1:
            assert re.search(r"\((train|val|test)\)$", props["title"]), plot_id
