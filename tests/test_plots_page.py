"""`deepfake-detect plots`: DVC's plots on one offline HTML page, checked on a tiny DVC repository."""
from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deepfake_detect.cli import main
from deepfake_detect.errors import UserError
from deepfake_detect.plots import page

from conftest import write_image

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
