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

from deepfake_detect.config import RUNS, datasets_of, load_params, read_layers

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
    """Every stage of both pipelines; a foreach group as its template (``do``)."""
    for dvcfile in PIPELINES:
        for name, stage in yaml.safe_load(dvcfile.read_text())["stages"].items():
            yield pytest.param(dvcfile, name, stage.get("do", stage), id=f"{dvcfile.relative_to(REPO)}:{name}")


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


# The params each stage's code reads (a training stage: see _reads); prepare-splits reads demo and data, and
# evaluate-roc-det and release read each dataset's source ("data.*.source": every dataset of the pipeline's params:
# the names in figures and tables, and where a sources.csv is); frame-faces takes its arguments on its command line.
READS = {"prepare-splits": ("seed", "demo", "data"),
         "frame-faces": (),
         "evaluate-roc-det": ("seed", "device", "evaluate-roc-det", "data.*.source"),
         "explain": ("seed", "device", "explain"),
         "summarize": (RUNS,),
         "release": ("seed", "device", "evaluate-roc-det.precision", RUNS, "data.*.source")}


def _train_run(stage: dict) -> str | None:
    """The run a stage trains (``python stages/train.py <run>``), or None."""
    args = shlex.split(stage.get("cmd", ""))
    return args[args.index(next(a for a in args if a.endswith("train.py"))) + 1] if "train.py" in str(args) else None


def _reads(name: str, stage: dict, wdir: Path) -> tuple[str, ...]:
    run = _train_run(stage)
    if run is not None:  # its run's section (named after the run), and the recipe it builds on (the topmost file
        recipe = next((tree[run]["recipe"] for _, tree in read_layers(wdir / "params.yaml")[::-1]  # naming one)
                       if "recipe" in (tree.get(run) or {})), None)
        return ("seed", "device", f"{RUNS}.{run}", "train-defaults", run) + ((f"recipes.{recipe}",) if recipe else ())
    datasets = datasets_of(load_params(wdir / "params.yaml"))
    return tuple(k for key in READS[name]
                 for k in ([f"data.{d}.source" for d in datasets] if key == "data.*.source" else [key]))


def _declared(stage: dict, wdir: Path) -> dict[Path, list[str]]:
    """{params file: the keys the stage lists from it} (a bare key: the pipeline's own params.yaml)."""
    out: dict[Path, list[str]] = {}
    for entry in stage.get("params", []):
        for file, keys in ({"params.yaml": [entry]} if isinstance(entry, str) else entry).items():
            out.setdefault((wdir / file).resolve(), []).extend(keys or [])
    return out


def _leaves(tree, path: str):
    """The dotted paths of every value under ``path`` (``tree`` is the value at ``path``)."""
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from _leaves(value, f"{path}.{key}")
    else:
        yield path


UNSET = object()


def _get(tree: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return UNSET
        tree = tree[part]
    return tree


def _under(leaf: str, key: str) -> bool:
    return leaf == key or leaf.startswith(key + ".")


@pytest.mark.parametrize("dvcfile,name,stage", list(_stages()))
def test_stage_declares_every_key_it_reads_from_the_file_that_sets_it(dvcfile, name, stage):
    """`dvc status` is honest over layered params files: each value a stage reads is listed (as itself or a
    section above it) under the file that sets it, the topmost of the params file and its ``base`` chain; and
    every listed key exists in its file (DVC fails on a missing one)."""
    wdir, where = dvcfile.parent, dvcfile.relative_to(REPO)
    layers = [(Path(f).resolve(), tree) for f, tree in read_layers(wdir / "params.yaml")][::-1]  # top first
    declared = _declared(stage, wdir)
    for file, keys in declared.items():
        tree = next((t for f, t in layers if f == file), None)
        assert tree is not None, f"{name}: lists params of {file}, which the stage does not read"
        missing = [k for k in keys if _get(tree, k) is UNSET]
        assert not missing, f"{where}: stage '{name}' lists {missing}, not set in {file.relative_to(REPO)}"
    # a layer that sets `runs` replaces the runs below it (config.load_params), other sections merge
    top_runs = next(i for i, (_, tree) in enumerate(layers) if RUNS in tree)
    for key in _reads(name, stage, wdir):
        seen = layers[top_runs:top_runs + 1] if _under(key, RUNS) else layers
        leaves = {leaf for _, tree in seen if _get(tree, key) is not UNSET for leaf in _leaves(_get(tree, key), key)}
        assert leaves, f"{name}: reads '{key}', which no params file sets"
        for leaf in leaves:
            file = next(f for f, tree in layers if _get(tree, leaf) is not UNSET)
            assert any(_under(leaf, k) for k in declared.get(file, [])), \
                f"{where}: stage '{name}' reads '{leaf}' from {file.relative_to(REPO)} but does not list it"


@pytest.mark.parametrize("dvcfile", PIPELINES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_run_has_its_training_stage_and_per_run_stages(dvcfile):
    """`runs` is the one list of runs: each names a training stage that trains that run into models/<run>.pt and
    metrics/train/<run>/ from its dataset, with the run's own params section; every training stage is a run's;
    evaluate and explain loop over runs."""
    wdir = dvcfile.parent
    params = load_params(wdir / "params.yaml")
    runs = params[RUNS]
    stages = yaml.safe_load(dvcfile.read_text())["stages"]
    trained = {_train_run(stage): name for name, stage in stages.items() if _train_run(stage)}
    assert trained == runs, (trained, runs)
    for run, name in runs.items():
        stage = stages[name]
        outs = [o if isinstance(o, str) else next(iter(o)) for o in stage["outs"]]
        assert outs == [f"models/{run}.pt", f"metrics/train/{run}"], (name, outs)
        assert f"data/{params[run]['dataset']}" in stage["deps"], name
        listed = [k for e in stage["params"] for k in ([e] if isinstance(e, str) else next(iter(e.values())))]
        assert run in listed and name not in listed or name == run, (name, listed)  # the run's section, by its name
    for group in ("evaluate-roc-det", "explain"):
        assert stages[group]["foreach"] == "${runs}" and "models/${key}.pt" in stages[group]["do"]["deps"]
