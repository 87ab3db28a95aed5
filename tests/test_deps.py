"""dvc.yaml deps cannot rot: every package module a stage's script can import is among its deps.

The import graph is read statically (ast), from the stage script through every
``deepfake_detect`` import, module-level and inside functions, so an entry point that goes
through a module importing everything depends on everything.
"""
from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "src" / "deepfake_detect"
PIPELINES = [REPO / "dvc.yaml", REPO / "real" / "dvc.yaml"]


def _module_file(name: str) -> Path | None:
    """src/deepfake_detect/a/b.py or a/b/__init__.py for 'deepfake_detect.a.b'."""
    parts = name.split(".")
    if parts[0] != "deepfake_detect":
        return None
    base = PKG.joinpath(*parts[1:])
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[Path]:
    """Package files imported anywhere in ``path`` (relative imports resolved; parents of a module count)."""
    package = _module_name(path) if path.is_relative_to(PKG) else ""
    if path.name != "__init__.py" and package:
        package = package.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}  # `from . import simplenet`
    files = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
            f = _module_file(".".join(parts[:i]))
            if f is not None:
                files.add(f)
    return files


def reachable(script: Path) -> set[Path]:
    """Every package file the script can import, transitively."""
    seen, todo = set(), [script]
    while todo:
        for f in _imports(todo.pop()):
            if f not in seen:
                seen.add(f)
                todo.append(f)
    return seen


def _stages():
    for dvcfile in PIPELINES:
        for name, stage in yaml.safe_load(dvcfile.read_text())["stages"].items():
            yield pytest.param(dvcfile, name, stage, id=f"{dvcfile.relative_to(REPO)}:{name}")


def _covered(path: Path, deps: list[Path]) -> bool:
    return any(path == d or d in path.parents for d in deps)


@pytest.mark.parametrize("dvcfile,name,stage", list(_stages()))
def test_stage_deps_cover_the_code_it_runs(dvcfile, name, stage):
    wdir = dvcfile.parent
    script = next(wdir / a for a in shlex.split(stage["cmd"]) if a.endswith(".py"))
    deps = [(wdir / d).resolve() for d in stage["deps"] if "${" not in d]
    assert _covered(script.resolve(), deps), f"{name}: the script {script} is not a dep"
    missing = sorted(str(f.relative_to(REPO)) for f in reachable(script) if not _covered(f.resolve(), deps))
    assert not missing, f"{dvcfile.relative_to(REPO)}: stage '{name}' runs code that is not among its deps: {missing}"


def test_graph_follows_function_level_imports():
    files = {f.name for f in reachable(REPO / "stages" / "train.py")}
    assert {"train.py", "config.py", "errors.py", "simplenet.py", "backbones.py"} <= files
    assert "explain.py" not in files  # narrow: training does not import the explain stage


def test_prepare_splits_does_not_depend_on_training_code():
    files = {str(f.relative_to(PKG)) for f in reachable(REPO / "stages" / "prepare_splits.py")}
    assert "train.py" not in files and not any(f.startswith("models") for f in files)


@pytest.mark.parametrize("dvcfile", PIPELINES, ids=lambda p: str(p.relative_to(REPO)))
def test_stages_declare_the_params_they_read(dvcfile):
    """Beyond their own section: prepare-splits reads demo and data; evaluate and explain name each dataset
    by its source (figures, cross-dataset table)."""
    stages = yaml.safe_load(dvcfile.read_text())["stages"]
    assert {"seed", "demo", "data"} <= set(stages["prepare-splits"]["params"])
    for name in ("evaluate-roc-det", "explain"):
        assert {"data.fakes.source", "data.synthetic.source"} <= set(stages[name]["params"]), name
