"""params.yaml: the schema, its validation, and how a run's training config is put together.

Every value lives in the params file (``params.yaml`` for the demo pipeline,
``real/params.yaml`` for the real-data one); this module only knows which keys exist,
their types, choices and ranges. A missing key, a misspelt key, a wrong type or an
out-of-range number stops a stage with one line that names the file and the key
(``params.yaml: 'simplenet-fakes.lr' must be in (0, 10], got -1``).

Runs are data: ``runs`` maps each run's name to the training stage of dvc.yaml that makes it (the one place a run
meets its stage). The run's name is its everywhere else: its params section (only what that run changes),
``models/<run>.pt`` and ``metrics/*/<run>``; ``train-defaults`` holds every other training key. A recipe shared by
runs is written once, under ``recipes``, and a section names it (``recipe: lite0-finetune``): a run's config is
``train-defaults``, then its recipe, then its own section (``run_config``). A params file may name a ``base`` file
it is laid over: the real pipeline's ``real/params.yaml`` holds only its data sources and recipe changes over
``params.yaml``.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

PARAMS_FILE = "params.yaml"
BASE = "base"  # top-level key: the params file this one is laid over (relative to this one)
RUNS = "runs"  # run name (also its params section) -> the training stage of dvc.yaml that trains it
DEFAULTS = "train-defaults"  # every training key a run's section does not set
RUN_KEYS = ("dataset", "model")  # set by each run's own section (the model: or by its recipe), never defaulted
RECIPES = "recipes"  # name -> training keys shared by the runs whose section says `recipe: <name>`
RECIPE = "recipe"
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # a file name, a DVC stage key and a dotted params path alike
DATASETS = ("fakes", "synthetic")  # the course's two: every params file has them (the demo generates both kinds)
DATA_OPTIONS = ("on_bad_image", "on_leak")  # the keys of `data` that are not datasets
TTA_MODES = ("none", "flip", "flip_shift")  # test-time views averaged by engine.predict (recorded in checkpoints)
THRESHOLD_RULES = ("fixed", "eer", "balanced")  # how training picks the operating threshold on validation
PSEUDO_FAKES = ("none", "sbi")  # training fakes made from the split's reals (pseudofakes.py), or none


class ParamsError(UserError, ValueError):
    """A problem in the params file; the message names the file and the key."""


@dataclass(frozen=True)
class Key:
    """One leaf of the schema: accepted types, and for numbers a closed or half-open range."""

    types: tuple
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself is not allowed
    choices: tuple = ()
    nullable: bool = False

    @property
    def numeric(self) -> bool:
        return float in self.types or int in self.types

    def range_text(self) -> str:
        return f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}]"


def Int(lo: int, hi: int, nullable: bool = False) -> Key:
    return Key((int,), lo, hi, nullable=nullable)


def Num(lo: float, hi: float, lo_open: bool = False, nullable: bool = False) -> Key:
    return Key((float, int), lo, hi, lo_open=lo_open, nullable=nullable)


def Choice(*choices: str) -> Key:
    return Key((str,), choices=choices)


BOOL, STR, LIST, MAPPING = Key((bool,)), Key((str,)), Key((list,)), Key((dict,))
NULLABLE_STR = Key((str,), nullable=True)

TRAIN_SCHEMA: dict[str, Key] = {
    "dataset": STR,  # a dataset of `data` (checked against them where a run's config is built)
    "model": STR,  # a registry name or any timm architecture (checked by the training stage)
    "model_params": MAPPING,  # passed to the model builder, checked against its signature
    "image_size": Int(32, 1024),
    "hflip": BOOL,
    "optimizer": Choice("adam", "adamw", "sgd"),
    "lr": Num(0, 10, lo_open=True),
    "backbone_lr": Num(0, 10, lo_open=True, nullable=True),
    "momentum": Num(0, 0.999),
    "weight_decay": Num(0, 10),
    "batch_size": Int(1, 4096),
    "epochs": Int(1, 10_000),
    "freeze_backbone_epochs": Int(0, 10_000),
    "frozen_layers": LIST,
    "lr_scheduler": Choice("none", "plateau", "cosine"),
    "plateau_factor": Num(0, 0.999, lo_open=True),
    "plateau_patience": Int(0, 1000),
    "early_stopping_patience": Int(0, 1000),
    "select_metric": Choice("acc", "auc", "loss"),  # validation metric choosing the checkpoint (and early stopping)
    "ema_decay": Num(0, 0.99999),  # 0: off; else the EMA of the weights is evaluated and checkpointed
    "tta": Choice(*TTA_MODES),
    "threshold_rule": Choice(*THRESHOLD_RULES),
    "label_smoothing": Num(0, 0.999),
    "pseudo_fakes": Choice(*PSEUDO_FAKES),  # sbi: the train split is its reals, each paired with a self-blended fake
    "pseudo_fakes_val": BOOL,  # validation made the same way (from the val reals), so no real fake is ever used
    "pseudo_fakes_params": MAPPING,  # passed to pseudofakes.SelfBlend, checked against its fields
    # degradation augmentation of the training images (CNNDetection): blur, then JPEG re-encoding
    "degrade_p_blur": Num(0, 1),  # probability of a Gaussian blur ...
    "degrade_blur_sigma_max": Num(0, 20, lo_open=True),  # ... of sigma ~ U[0, this] px
    "degrade_p_jpeg": Num(0, 1),  # probability of a JPEG re-encoding ...
    "degrade_jpeg_quality_min": Int(1, 100),  # ... at quality ~ U{this, ..., 100}
    "eval_test_every_epoch": BOOL,
    "max_steps_per_epoch": Int(0, 10**9),
    "num_workers": Int(-1, 256),
    "decode_cache": BOOL,
    "amp": BOOL,
    "channels_last": BOOL,
    "compile": BOOL,
}
DEFAULTS_SCHEMA = {name: key for name, key in TRAIN_SCHEMA.items() if name not in RUN_KEYS}
RECIPE_SCHEMA = {name: key for name, key in TRAIN_SCHEMA.items() if name != "dataset"}  # a recipe trains any data
SECTION_SCHEMA = {**TRAIN_SCHEMA, RECIPE: STR}

DEMO_SPLITS_SCHEMA = {"train": Int(2, 1_000_000), "val": Int(2, 1_000_000), "test": Int(2, 1_000_000),
                      "strength": Num(0, 10)}
DATASET_SCHEMA = {"source": STR, "groups": NULLABLE_STR, "val_fraction": Num(0, 0.9, lo_open=True),
                  "test_fraction": Num(0, 0.9, lo_open=True)}

SCHEMA: dict[str, Any] = {
    "seed": Int(0, 2**32 - 1),
    "device": Choice("auto", "cpu", "cuda"),
    "demo": {"image_size": Int(32, 1024), **{name: DEMO_SPLITS_SCHEMA for name in DATASETS}},
    "data": {**{name: DATASET_SCHEMA for name in DATASETS},
             "on_bad_image": Choice("error", "skip"), "on_leak": Choice("warn", "drop", "error")},
    RUNS: MAPPING,  # checked by check_runs: the sections it names are validated against TRAIN_SCHEMA
    RECIPES: MAPPING,  # each recipe checked against RECIPE_SCHEMA (_check_layer)
    DEFAULTS: DEFAULTS_SCHEMA,
    "evaluate-roc-det": {"batch_size": Int(1, 4096), "bootstrap": Int(0, 100_000),
                         "robustness": LIST,  # names of degrade.PANEL: the test split re-scored under each
                         "robustness_max_images": Int(0, 10**7),  # 0: every test image; else a stratified subsample
                         "cross_generator": LIST,  # evaluation-only folders (real/ + fake/) every run is scored on
                         # 0: all; else a seeded stratified subsample of each other dataset's test split and of
                         # each evaluation-only set (the intervals widen accordingly; they are reported)
                         "cross_max_images": Int(0, 10**7),
                         "precision": Choice("auto", "fp32", "bf16")},  # scoring: auto = bf16 where measured safe
    "explain": {"n_examples": Int(1, 64), "n_mean": Int(1, 100_000),
                "n_faithfulness": Int(0, 100_000), "batch_size": Int(1, 4096)},
}


def _type_name(key: Key) -> str:
    names = {int: "an integer", float: "a number", bool: "true/false", str: "a string", dict: "a mapping",
             list: "a list"}
    types = tuple(t for t in key.types if t is not int) if float in key.types else key.types
    return " or ".join([names[t] for t in types] + (["null"] if key.nullable else []))


def _check_leaf(where: str, name: str, value: Any, key: Key) -> Any:
    if value is None and key.nullable:
        return None
    if not isinstance(value, key.types) or (isinstance(value, bool) and bool not in key.types):
        raise ParamsError(f"{where}: '{name}' must be {_type_name(key)}, got {value!r}")
    if key.choices and value not in key.choices:
        raise ParamsError(f"{where}: '{name}' must be one of {', '.join(key.choices)}; got {value!r}")
    if key.numeric:
        low_ok = value > key.lo if key.lo_open else value >= key.lo
        if not (math.isfinite(value) and low_ok and value <= key.hi):
            raise ParamsError(f"{where}: '{name}' must be in {key.range_text()}, got {value!r}")
        if float in key.types:
            value = float(value)
    if isinstance(value, list) and not all(isinstance(v, str) for v in value):
        raise ParamsError(f"{where}: '{name}' must be a list of strings, got {value!r}")
    return value


def check_value(where: str, name: str, value: Any, key: Key) -> Any:
    """``value`` by the rules of a params leaf ``key`` (type, choices, finite and in range), for values that come
    from elsewhere under the same rules (checkpoint fields); else ParamsError ``{where}: '{name}' must be ...``."""
    return _check_leaf(where, name, value, key)


def validate(given: Any, schema: dict, where: str = PARAMS_FILE, prefix: str = "", partial: bool = False) -> dict:
    """``given`` checked against ``schema``: every key present (``partial``: any subset), no other key, each value
    of its type and range."""
    if not isinstance(given, dict):
        raise ParamsError(f"{where}: '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {given!r}")
    unknown = [k for k in given if k not in schema]
    if unknown:
        raise ParamsError(f"{where}: unknown key '{prefix}{unknown[0]}' (valid keys here: {', '.join(schema)})")
    missing = [k for k in schema if k not in given]
    if missing and not partial:
        raise ParamsError(f"{where}: missing key '{prefix}{missing[0]}' (every key is set in the params file; "
                          f"missing here: {', '.join(missing)})")
    out = {}
    for name, key in schema.items():
        if name not in given:
            continue
        if isinstance(key, dict):
            out[name] = validate(given[name], key, where, f"{prefix}{name}.", partial)
        else:
            out[name] = _check_leaf(where, f"{prefix}{name}", given[name], key)
    return out


def _duplicate_key(node: yaml.Node, prefix: str = "", done: set | None = None) -> tuple[str, int, int] | None:
    """(dotted key, its line, the line of its first use) of the first key set twice in one mapping, if any:
    PyYAML keeps the last value without a word, DVC refuses the file."""
    done = set() if done is None else done
    if id(node) in done:  # an alias: checked where it was defined (and a recursive one would never end)
        return None
    done.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key in seen:
                return f"{prefix}{key}", key_node.start_mark.line + 1, seen[key]
            seen.setdefault(key, key_node.start_mark.line + 1)
            found = _duplicate_key(value_node, f"{prefix}{key}.", done)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(item, f"{prefix}{i}.", done)
            if found:
                return found
    return None


def _yaml_error(path: Path, e: yaml.YAMLError) -> str:
    """One line for a YAML syntax error: where, what, and for the usual slip (a tab) what to do."""
    mark = getattr(e, "problem_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
    problem = getattr(e, "problem", None) or " ".join(str(e).split())
    if "'\\t'" in problem:
        return f"{where}: a tab; YAML indents with spaces only (replace the tab with spaces)"
    context = getattr(e, "context", None)
    return f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")


def read_params(path: str | Path = PARAMS_FILE) -> dict:
    """The params file as YAML, not yet validated: a mapping, every key once (a key set twice is an error
    naming it and both lines); a syntax error is one line naming the file, line and column."""
    path = Path(path)
    if path.is_dir():
        raise ParamsError(f"{path}: a folder, not a params file (pass --params with the YAML file)")
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (run from the repository root, or pass --params)")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is no key
    except UnicodeDecodeError as e:
        raise ParamsError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from e
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:  # an empty file: validation names the first missing key
            return {}
        duplicate = _duplicate_key(node)
        if duplicate:
            key, line, first = duplicate
            raise ParamsError(f"{path}, line {line}: key '{key}' is set twice (first on line {first}); keep one")
        params = loader.construct_document(node)
    except yaml.YAMLError as e:
        raise ParamsError(_yaml_error(path, e)) from e
    finally:
        loader.dispose()
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: the top level must be a mapping of keys (seed: ..., data: ...), "
                          f"got a {type(params).__name__}")
    return params


class Params(dict):
    """A validated params mapping (the whole file, or one run's training config) that remembers the params file
    it was read from, so a later error can name it (``source_of``)."""

    source: str = PARAMS_FILE

    def __init__(self, data: dict, source: str | Path = PARAMS_FILE):
        super().__init__(data)
        self.source = str(source)


def source_of(params: dict) -> str:
    """The params file ``params`` (or a section of it) was read from."""
    return getattr(params, "source", PARAMS_FILE)


def override(params: dict, changes: dict) -> dict:
    """``params`` with the nested mapping ``changes`` laid over it (a new dict): how a params file is laid over
    its base, and how tests and benchmarks change a few keys. ``model_params`` is replaced whole."""
    out = dict(params)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "model_params":
            out[key] = override(out[key], value)
        else:
            out[key] = value
    return out


def read_layers(path: str | Path = PARAMS_FILE) -> list[tuple[str, dict]]:
    """``[(file, its YAML)]``: the params file after the chain of files it is laid over (``base``), base first."""
    path, layers = Path(path), []
    while True:
        given = read_params(path)
        if not isinstance(given, dict):
            raise ParamsError(f"{path}: must be a mapping of sections, got {given!r}")
        layers.insert(0, (str(path), given))
        base = given.pop(BASE, None)
        if base is None:
            return layers
        if not isinstance(base, str):
            raise ParamsError(f"{path}: '{BASE}' must be the path of the params file this one is laid over "
                              f"(relative to it), got {base!r}")
        path = Path(os.path.normpath(path.parent / base))
        if not path.is_file():
            raise ParamsError(f"{layers[0][0]}: '{BASE}' names {path}, which is not a file")
        if any(Path(f).resolve() == path.resolve() for f, _ in layers):
            raise ParamsError(f"{layers[0][0]}: '{BASE}' leads back to {path} (a loop)")


def check_runs(runs: Any, where: str) -> dict[str, str]:
    """``runs``: run names (file-name safe, and not the name of another section) to distinct training stages."""
    if not isinstance(runs, dict) or not runs:
        raise ParamsError(f"{where}: '{RUNS}' must map each run's name to the training stage that makes it, "
                          f"got {runs!r}")
    seen: dict[str, str] = {}
    for run, stage in runs.items():
        if not isinstance(run, str) or not RUN_NAME.fullmatch(run):
            raise ParamsError(f"{where}: run name {run!r} in '{RUNS}' must be letters, digits, '-' or '_' "
                              "(it names models/<run>.pt, its params section and DVC stages)")
        if run in SCHEMA or run == BASE:
            raise ParamsError(f"{where}: run name '{run}' in '{RUNS}' is the name of a section of the params file; "
                              f"a run's name is its own section's (not one of {', '.join(SCHEMA)})")
        if not isinstance(stage, str) or not RUN_NAME.fullmatch(stage) or stage in SCHEMA or stage == BASE:
            raise ParamsError(f"{where}: '{RUNS}.{run}' must name the training stage of dvc.yaml that makes it "
                              f"(not one of {', '.join(SCHEMA)}), got {stage!r}")
        if stage in seen:
            raise ParamsError(f"{where}: runs '{seen[stage]}' and '{run}' both name stage '{stage}'; "
                              "each run has its own training stage")
        seen[stage] = run
    return dict(runs)


def datasets_of(params: dict) -> tuple[str, ...]:
    """Every dataset of ``params['data']``: the course's two (``DATASETS``), then any other a params file adds (e.g.
    real/params.yaml's larger face-swap set): a mapping with the keys of a dataset, never ``demo``."""
    data = params.get("data") if isinstance(params.get("data"), dict) else {}
    return DATASETS + tuple(k for k in data if k not in DATASETS and k not in DATA_OPTIONS)


def _schema(given: dict) -> dict:
    """SCHEMA with ``data`` holding every dataset ``given`` names (``datasets_of``)."""
    data = {**{name: DATASET_SCHEMA for name in datasets_of(given)},
            **{k: v for k, v in SCHEMA["data"].items() if k in DATA_OPTIONS}}
    return {**SCHEMA, "data": data}


def _check_layer(where: str, given: dict, sections: list[str], stages: dict[str, str]) -> dict:
    """One params file on its own: known keys of the right types and ranges; any subset may be set. ``sections``:
    the run names (each run's section); ``stages``: {training stage: its run} of the runs named otherwise, whose
    section a params file written before sections took their run's name still calls by the stage."""
    if isinstance(given.get(DEFAULTS), dict):
        per_run = [k for k in RUN_KEYS if k in given[DEFAULTS]]
        if per_run:
            raise ParamsError(f"{where}: '{DEFAULTS}.{per_run[0]}' cannot be defaulted: each run's own section "
                              f"sets {' and '.join(RUN_KEYS)}")
    renamed = [k for k in given if k in stages and k not in SCHEMA and k not in sections]
    if renamed:
        stage, run = renamed[0], stages[renamed[0]]
        raise ParamsError(f"{where}: section '{stage}' is named after the training stage of run '{run}'; a run's "
                          f"params section now carries the run's name: rename '{stage}:' to '{run}:' (its keys "
                          "stay as they are)")
    unknown = [k for k in given if k not in SCHEMA and k not in sections]
    if unknown:
        raise ParamsError(f"{where}: unknown key '{unknown[0]}' (sections: {', '.join(SCHEMA)}, and the training "
                          f"section of each run of '{RUNS}': {', '.join(sections)})")
    recipes = given.get(RECIPES)
    if isinstance(recipes, dict):
        for name, recipe in recipes.items():
            validate(recipe, RECIPE_SCHEMA, where, f"{RECIPES}.{name}.", partial=True)
    return validate(given, {**_schema(given), **{s: SECTION_SCHEMA for s in sections}}, where, partial=True)


def _merge_run(where: str, merged: dict, run: str) -> Params:
    """One run's training config: ``train-defaults`` with its section (named ``run``) laid over it, every key set."""
    section = run
    own = merged.get(section)
    if own is None:
        raise ParamsError(f"{where}: run '{run}' of '{RUNS}' has no section '{run}' (add it with at least "
                          f"{' and '.join(RUN_KEYS)})")
    recipe = own.get(RECIPE)
    if recipe is not None and recipe not in (merged.get(RECIPES) or {}):
        raise ParamsError(f"{where}: '{section}.{RECIPE}' names {recipe!r}, which '{RECIPES}' does not define "
                          f"(recipes: {', '.join(merged.get(RECIPES) or {}) or 'none'})")
    missing = [k for k in RUN_KEYS if k not in own and k not in (merged.get(RECIPES) or {}).get(recipe, {})]
    if missing:
        raise ParamsError(f"{where}: missing key '{section}.{missing[0]}' (each run's section sets "
                          f"{' and '.join(RUN_KEYS)})")
    cfg = merge_run(merged, section)
    if cfg["dataset"] not in datasets_of(merged):
        raise ParamsError(f"{where}: '{section}.dataset' must be one of the datasets of 'data' "
                          f"({', '.join(datasets_of(merged))}); got {cfg['dataset']!r}")
    return Params({"run": run, **{k: cfg[k] for k in TRAIN_SCHEMA}}, where)


def merge_run(params: dict, section: str) -> dict:
    """``train-defaults``, then the section's recipe (``recipes.<name>``), then the section (a run's: named after
    the run), key by key (``model_params`` and lists whole)."""
    own = {k: v for k, v in params.get(section, {}).items() if k != RECIPE}
    recipe = (params.get(RECIPES) or {}).get(params.get(section, {}).get(RECIPE), {})
    return {**params[DEFAULTS], **recipe, **own}


def load_params(path: str | Path = PARAMS_FILE, changes: dict | None = None) -> Params:
    """Read and validate a params file and the files it is laid over (optionally with ``changes`` laid over it
    first). Each run's section (its name the run's) comes back merged with ``train-defaults``, with its run name
    as ``run``."""
    layers = read_layers(path)
    top, given = layers[-1]
    layers[-1] = (top, override(given, changes or {}))
    runs: dict = {}
    sections: list[str] = []  # the runs of every layer's runs: a base's run sections stay valid keys
    stages: dict[str, str] = {}  # training stage -> its run, for the runs named otherwise (an old section name)
    for where, given in layers:  # a file that sets runs replaces its base's (the real pipeline's own list)
        if RUNS in given:
            runs = check_runs(given[RUNS], where)
            sections += [r for r in runs if r not in sections]
            stages.update({s: r for r, s in runs.items() if s != r})
    runs = check_runs(runs or None, top)
    merged: dict = {}
    for where, given in layers:
        merged = override(merged, _check_layer(where, given, sections, stages))
    fixed = validate({k: v for k, v in merged.items() if k in SCHEMA}, _schema(merged), top)
    demo_extra = [d for d in datasets_of(fixed)[len(DATASETS):] if fixed["data"][d]["source"] == "demo"]
    if demo_extra:
        raise ParamsError(f"{top}: 'data.{demo_extra[0]}.source' cannot be demo (the demo generates "
                          f"{' and '.join(DATASETS)} only); give a folder")
    return Params({**fixed, RUNS: runs, **{r: _merge_run(top, merged, r) for r in runs}}, top)


def _check_run(params: dict, run: str) -> None:
    if run not in params[RUNS]:
        raise ParamsError(f"{source_of(params)}: no run '{run}' in '{RUNS}' (runs: {', '.join(params[RUNS])})")


def run_config(params: dict, run: str) -> dict:
    """The merged, validated training config of ``run`` (a key of ``runs``, and the name of its section) as the
    params section it is (a dict); ``TrainConfig.from_params`` is the same as the typed object the training code
    reads."""
    _check_run(params, run)
    return params[run]


@dataclass(frozen=True)
class TrainConfig:
    """One run's training config, typed: ``run``, then one field per key of ``TRAIN_SCHEMA`` (same names, same
    order; a test holds them equal), then ``source``, the params file it came from (``source_of``). The values
    come from the params file only: no field has a default. Built by ``from_params`` (or ``of`` from a run's
    merged section), each value checked against its schema key on the way in (``__post_init__``), so a config
    built by hand fails as a params file would. ``to_dict`` is the section as a dict again (what is hashed
    for resuming)."""

    run: str
    dataset: str
    model: str
    model_params: dict
    image_size: int
    hflip: bool
    optimizer: str
    lr: float
    backbone_lr: float | None
    momentum: float
    weight_decay: float
    batch_size: int
    epochs: int
    freeze_backbone_epochs: int
    frozen_layers: list[str]
    lr_scheduler: str
    plateau_factor: float
    plateau_patience: int
    early_stopping_patience: int
    select_metric: str
    ema_decay: float
    tta: str
    threshold_rule: str
    label_smoothing: float
    pseudo_fakes: str
    pseudo_fakes_val: bool
    pseudo_fakes_params: dict
    degrade_p_blur: float
    degrade_blur_sigma_max: float
    degrade_p_jpeg: float
    degrade_jpeg_quality_min: int
    eval_test_every_epoch: bool
    max_steps_per_epoch: int
    num_workers: int
    decode_cache: bool
    amp: bool
    channels_last: bool
    compile: bool
    source: str = field(compare=False, repr=False, kw_only=True)  # the params file, for messages

    def __post_init__(self):
        if not isinstance(self.run, str) or not RUN_NAME.fullmatch(self.run):
            raise ParamsError(f"{self.source}: a run's name is letters, digits, '-' or '_', got {self.run!r}")
        for name, key in TRAIN_SCHEMA.items():  # the type and range of each; a number of a float key as a float
            object.__setattr__(self, name, _check_leaf(self.source, name, getattr(self, name), key))

    @classmethod
    def from_params(cls, params: dict, run: str) -> TrainConfig:
        """The training config of ``run`` (a key of ``runs``) of a loaded params file (``load_params``)."""
        return cls.of(run_config(params, run))

    @classmethod
    def of(cls, cfg: Mapping | TrainConfig) -> TrainConfig:
        """``cfg`` itself, or a run's merged section (``run`` and every key of ``TRAIN_SCHEMA``, nothing else) as a
        TrainConfig; a missing, unknown or wrong key is a ParamsError naming it and the params file."""
        if isinstance(cfg, TrainConfig):
            return cfg
        where = source_of(cfg)
        keys = validate({k: v for k, v in cfg.items() if k != "run"}, TRAIN_SCHEMA, where)
        return cls(run=cfg.get("run"), **keys, source=where)

    def to_dict(self) -> dict:
        """``run`` and every training key, as the params section holds them (``source`` left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "source"}


def rename_run(params: Params, run: str, name: str) -> Params:
    """``params`` with run ``run`` called ``name`` (its checkpoint models/<name>.pt, its metrics folder): for tests
    and benchmarks that train a recipe of the params file under a name of their own."""
    _check_run(params, run)
    if not RUN_NAME.fullmatch(name) or name in params[RUNS] or name in SCHEMA or name == BASE:
        raise ParamsError(f"{source_of(params)}: cannot rename run '{run}' to {name!r} (a new run name is letters, "
                          "digits, '-' or '_', and no other run's or section's)")
    runs = {(name if r == run else r): s for r, s in params[RUNS].items()}
    rest = {k: v for k, v in params.items() if k != run}
    return Params({**rest, RUNS: runs, name: Params({**params[run], "run": name}, source_of(params))},
                  source_of(params))


def stage_parser(doc: str | None, per_run: bool = False):
    """The argument parser every stage script starts from: ``--params`` (default params.yaml in the working
    directory, which DVC sets to the folder of the stage's dvc.yaml) and, for a per-run stage, the run."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=PARAMS_FILE, help="params file (default: %(default)s)")
    if per_run:
        ap.add_argument("run", help=f"a run: a key of '{RUNS}' in the params file")
    return ap
