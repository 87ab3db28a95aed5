"""The params files are the one source of values; the schema holds types, choices and ranges."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deepfake_detect.config import (
    DEFAULTS,
    RECIPE,
    RECIPE_SCHEMA,
    RECIPES,
    RUN_KEYS,
    RUNS,
    SCHEMA,
    SECTION_SCHEMA,
    TRAIN_SCHEMA,
    Key,
    ParamsError,
    load_params,
    merge_run,
    read_layers,
    rename_run,
    run_config,
    validate,
)
from deepfake_detect.train import check_model

REPO = Path(__file__).resolve().parents[1]
PARAMS_FILES = [REPO / "params.yaml", REPO / "real" / "params.yaml"]


def _leaves(schema: dict, prefix: str = ""):
    for name, key in schema.items():
        if isinstance(key, dict):
            yield from _leaves(key, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", key


def _keys(tree: dict, prefix: str = "", schema: dict = SCHEMA) -> set[str]:
    out = set()
    for name, value in tree.items():
        if isinstance(schema.get(name), dict) and isinstance(value, dict):
            out |= _keys(value, f"{prefix}{name}.", schema[name])
        else:
            out.add(f"{prefix}{name}")
    return out


def _write(tmp_path: Path, mutate, source: Path = PARAMS_FILES[0]) -> Path:
    params = yaml.safe_load(source.read_text())
    mutate(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _set(params: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        params = params[p]
    params[leaf] = value


def test_params_file_sets_exactly_the_schema_keys():
    """Section by section: a key the code reads cannot hide in the code, and no key is left over. train-defaults
    sets every training key but dataset and model; each run's section sets those two and only keys it changes."""
    given = yaml.safe_load(PARAMS_FILES[0].read_text())
    sections = set(given[RUNS])  # each run's section has the run's name
    assert set(given) == set(SCHEMA) | sections
    for section in SCHEMA:
        if section == RECIPES:  # each recipe: any training keys but dataset (checked below)
            continue
        want = _keys({section: SCHEMA[section]}) if isinstance(SCHEMA[section], dict) else {section}
        have = {k for k in _keys(given) if k == section or k.startswith(section + ".")}
        assert have == want, f"params.yaml [{section}]: missing {sorted(want - have)}, extra {sorted(have - want)}"
    for name, recipe in given[RECIPES].items():
        assert set(recipe) <= set(RECIPE_SCHEMA), name
        same = [k for k, v in recipe.items() if k in given[DEFAULTS] and v == given[DEFAULTS][k]]
        assert not same, f"params.yaml [{RECIPES}.{name}] repeats train-defaults: {same}"
    for section in sections:
        recipe = given[RECIPES].get(given[section].get(RECIPE), {})
        assert set(RUN_KEYS) <= set(given[section]) | set(recipe), section
        assert set(given[section]) <= set(SECTION_SCHEMA), section
        base = {**given[DEFAULTS], **recipe}
        same = [k for k, v in given[section].items() if k not in RUN_KEYS and k in base and v == base[k]]
        assert not same, f"params.yaml [{section}] repeats train-defaults or its recipe: {same}"


def _value_in(params: dict, dotted: str):
    """What ``dotted`` is in the params file ``params`` (a run section's key: its merged training config's)."""
    *parents, leaf = dotted.split(".")
    if parents and parents[0] in params[RUNS]:
        return merge_run(params, parents[0]).get(leaf) if leaf != RECIPE else params[parents[0]].get(RECIPE)
    for p in parents:
        params = params.get(p, {})
    return params.get(leaf)


def test_real_params_holds_only_what_differs_from_its_base():
    """real/params.yaml is laid over params.yaml and sets only values that differ there (a run's key: from that
    run's merged config in the base): no copy of the demo's keys, no `demo` block."""
    (base_file, base), (top_file, top) = read_layers(PARAMS_FILES[1])
    assert Path(base_file).resolve() == PARAMS_FILES[0].resolve() and Path(top_file) == PARAMS_FILES[1]
    assert "demo" not in top
    # its own run list replaces the base's (config: a layer's `runs` replaces): a run of both has the same stage,
    # and it leaves out at least the demo-only one (sbi-fakes); real-only runs train on real-only datasets
    if RUNS in top:
        assert set(base[RUNS]) - set(top[RUNS])
    assert all(base[RUNS][run] == stage for run, stage in top.get(RUNS, {}).items() if run in base[RUNS])
    for run in set(top.get(RUNS, {})) - set(base[RUNS]):
        assert top[run]["dataset"] not in base["data"], run
    top = {k: v for k, v in top.items() if k != RUNS}
    sections = set(base[RUNS]) | set(top.get(RUNS, {}))
    for dotted in _keys(top, schema={**SCHEMA, **{s: SECTION_SCHEMA for s in sections}}):
        value = top
        for part in dotted.split("."):
            value = value[part]
        assert value != _value_in(base, dotted), f"real/params.yaml sets {dotted} to the base's own value"


@pytest.mark.parametrize("path", PARAMS_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_run_loads_merged_and_its_model_builds(path):
    params = load_params(path)
    for run in params[RUNS]:
        cfg = run_config(params, run)
        assert cfg is params[run] and cfg["run"] == run and set(cfg) == {"run", *TRAIN_SCHEMA}
        check_model(cfg)


@pytest.mark.parametrize("dotted,key", [(k, v) for k, v in _leaves(SCHEMA) if v.numeric])
def test_every_number_has_a_range_and_it_is_enforced(tmp_path, dotted, key):
    """Table-driven over the schema: a numeric key without a range cannot be declared or pass."""
    assert key.lo is not None and key.hi is not None and key.lo < key.hi, f"{dotted}: no range"
    step = 1 if key.types == (int,) else 1e-6
    below = key.lo if key.lo_open else key.lo - step
    for bad in (below, key.hi + step):
        path = _write(tmp_path, lambda p: _set(p, dotted, bad))
        with pytest.raises(ParamsError) as e:
            load_params(path)
        assert f"'{dotted}' must be in {key.range_text()}" in str(e.value) and str(path) in str(e.value)
    good = key.hi if key.types == (int,) else (key.lo + key.hi) / 2
    path = _write(tmp_path, lambda p: _set(p, dotted, good))
    assert load_params(path)  # the range's own values pass


@pytest.mark.parametrize("dotted,value,message", [
    ("simplenet-synth.lr", "fast", "'simplenet-synth.lr' must be a number, got 'fast'"),
    ("simplenet-synth.epochs", True, "'simplenet-synth.epochs' must be an integer, got True"),
    ("competition-fakes.optimizer", "adamx", "'competition-fakes.optimizer' must be one of adam, adamw, sgd"),
    ("finetune-synth.frozen_layers", [1], "'finetune-synth.frozen_layers' must be a list of strings"),
    ("data.fakes.groups", 3, "'data.fakes.groups' must be a string or null, got 3"),
    ("simplenet-fakes.lr", float("nan"), "'simplenet-fakes.lr' must be in (0, 10], got nan"),
])
def test_wrong_values_are_named(tmp_path, dotted, value, message):
    path = _write(tmp_path, lambda p: _set(p, dotted, value))
    with pytest.raises(ParamsError) as e:
        load_params(path)
    assert message in str(e.value)


def test_unknown_and_missing_keys_are_named(tmp_path):
    path = _write(tmp_path, lambda p: p["simplenet-fakes"].update(lrr=0.1))
    with pytest.raises(ParamsError, match=r"unknown key 'simplenet-fakes.lrr' \(valid keys here: dataset, "):
        load_params(path)
    path = _write(tmp_path, lambda p: p[DEFAULTS].pop("early_stopping_patience"))
    with pytest.raises(ParamsError, match=r"missing key 'train-defaults.early_stopping_patience'"):
        load_params(path)
    path = _write(tmp_path, lambda p: p["simplenet-fakes"].pop("dataset"))
    with pytest.raises(ParamsError, match=r"missing key 'simplenet-fakes.dataset' \(each run's section sets "
                                          r"dataset and model\)"):
        load_params(path)
    path = _write(tmp_path, lambda p: p[DEFAULTS].update(model="simplenet"))
    with pytest.raises(ParamsError, match=r"'train-defaults.model' cannot be defaulted"):
        load_params(path)
    path = _write(tmp_path, lambda p: p.update(trian={}))
    with pytest.raises(ParamsError, match=r"unknown key 'trian' \(sections: .*the training section of each run "
                                          r"of 'runs': simplenet-fakes, "):
        load_params(path)


@pytest.mark.parametrize("runs, message", [
    ({"a": "train-a"}, r"run 'a' of 'runs' has no section 'a' \(add it with at least dataset and "),
    ({"x": "train-simplenet-fakes"}, r"runs 'simplenet-fakes' and 'x' both name stage 'train-simplenet-fakes'"),
    ({"a/b": "train-a"}, r"run name 'a/b' in 'runs' must be letters, digits"),
    ({"a": "data"}, r"'runs.a' must name the training stage of dvc.yaml that makes it \(not one of seed, "),
    ({"explain": "train-a"}, r"run name 'explain' in 'runs' is the name of a section of the params file"),
    ([], r"'runs' must map each run's name to the training stage that makes it"),
], ids=["missing-section", "shared-stage", "bad-name", "fixed-section-as-stage", "fixed-section-as-run",
        "not-a-mapping"])
def test_bad_runs_are_named(tmp_path, runs, message):
    """Each entry added to the demo's runs (or runs replaced, when not a mapping)."""
    path = _write(tmp_path, lambda p: p[RUNS].update(runs) if runs else p.update(runs=runs))
    with pytest.raises(ParamsError, match=message):
        load_params(path)


def test_a_section_still_named_after_its_stage_is_named_with_its_new_name(tmp_path):
    """A params file written when a run's section carried its training stage's name (`finetune-xception:` for run
    finetune-synth) stops with the file, the old section and the new name, in the top file or in its base: its
    values are never silently dropped."""
    def old(p):
        p["finetune-xception"] = p.pop("finetune-synth")
    with pytest.raises(ParamsError, match=rf"^{tmp_path}/params.yaml: section 'finetune-xception' is named after the "
                                          r"training stage of run 'finetune-synth'.*rename 'finetune-xception:' to "
                                          r"'finetune-synth:'"):
        load_params(_write(tmp_path, old))
    path = _layered(tmp_path, {"train-competition": {"epochs": 9}})
    with pytest.raises(ParamsError, match=rf"^{path}: section 'train-competition' is named after the training stage "
                                          r"of run 'competition-fakes'.*to 'competition-fakes:'"):
        load_params(path)


def test_a_renamed_run_has_its_section_under_its_new_name():
    params = rename_run(load_params(PARAMS_FILES[0], {"simplenet-fakes": {"epochs": 1}}), "simplenet-fakes", "mine")
    assert list(params[RUNS])[0] == "mine" and params[RUNS]["mine"] == "train-simplenet-fakes"
    assert "simplenet-fakes" not in params and run_config(params, "mine")["run"] == "mine"
    assert params["mine"]["epochs"] == 1
    for bad in ("simplenet-synth", "explain", "a/b"):
        with pytest.raises(ParamsError, match=rf"cannot rename run 'mine' to '{bad}'"):
            rename_run(params, "mine", bad)


def test_a_run_is_train_defaults_with_its_section_laid_over(tmp_path):
    """Hand-worked: a new run is one `runs` entry and a section of what it changes; everything else (and a key
    changed in train-defaults) comes from train-defaults; model_params is replaced whole, not merged."""
    def mutate(p):
        p[RUNS]["tiny-run"] = "train-tiny"
        p["tiny-run"] = {"dataset": "synthetic", "model": "competition", "epochs": 1,
                         "model_params": {"dropout": 0.3}}
        p[DEFAULTS].update(lr=0.002, model_params={"dropout": 0.1, "augment": {}})
    params = load_params(_write(tmp_path, mutate))
    cfg = run_config(params, "tiny-run")
    assert (cfg["run"], cfg["dataset"], cfg["model"], cfg["epochs"]) == ("tiny-run", "synthetic", "competition", 1)
    assert cfg["model_params"] == {"dropout": 0.3} and cfg["lr"] == 0.002 and cfg["batch_size"] == 32
    assert params["simplenet-fakes"]["lr"] == 0.002  # the default changed every run that does not set it
    assert params["competition-fakes"]["lr"] == 0.003  # ... but not one that sets its own
    with pytest.raises(ParamsError, match=rf"^{tmp_path}/params.yaml: no run 'nope' in 'runs' \(runs: simplenet-"):
        run_config(params, "nope")


def _layered(tmp_path: Path, top: dict, base_mutate=lambda p: None) -> Path:
    """tmp/params.yaml (the demo's, changed by ``base_mutate``) and tmp/sub/params.yaml = ``top`` laid over it."""
    _write(tmp_path, base_mutate)
    (tmp_path / "sub").mkdir(exist_ok=True)
    path = tmp_path / "sub" / "params.yaml"
    path.write_text(yaml.safe_dump({"base": "../params.yaml", **top}, sort_keys=False))
    return path


def test_a_file_laid_over_its_base(tmp_path):
    """The files merge first (key by key; model_params whole), then each run's train-defaults under its section:
    a key of the top file's train-defaults reaches every run that neither file's section sets."""
    path = _layered(tmp_path, {"data": {"fakes": {"source": "folder"}}, DEFAULTS: {"image_size": 256, "epochs": 9},
                               "competition-fakes": {"model_params": {"dropout": 0.5}, "image_size": 224}})
    params, base = load_params(path), load_params(tmp_path / "params.yaml")
    assert params.source == str(path) and params["competition-fakes"].source == str(path)
    assert params["data"]["fakes"] == {**base["data"]["fakes"], "source": "folder"}
    assert params["simplenet-fakes"] == {**base["simplenet-fakes"], "image_size": 256, "epochs": 9}
    assert params["finetune-synth"]["epochs"] == 2  # set by the base's own section, which wins over defaults
    assert params["competition-fakes"] == {**base["competition-fakes"], "image_size": 224,
                                           "model_params": {"dropout": 0.5}}
    assert params[RUNS] == base[RUNS] and params["demo"] == base["demo"]


def test_errors_in_layered_files_name_the_file_that_holds_the_value(tmp_path):
    path = _layered(tmp_path, {DEFAULTS: {"lr": -1}})
    with pytest.raises(ParamsError, match=rf"^{path}: 'train-defaults.lr' must be in \(0, 10\]"):
        load_params(path)
    path = _layered(tmp_path, {}, lambda p: p["explain"].update(n_examples=0))
    with pytest.raises(ParamsError, match=rf"^{tmp_path}/params.yaml: 'explain.n_examples' must be in"):
        load_params(path)
    path = _layered(tmp_path, {}, lambda p: p.update(base="sub/params.yaml"))
    with pytest.raises(ParamsError, match=r"'base' leads back to .*sub/params.yaml \(a loop\)"):
        load_params(path)
    path.write_text("base: ../nope.yaml\n")
    with pytest.raises(ParamsError, match=rf"^{path}: 'base' names .*nope.yaml, which is not a file"):
        load_params(path)


def test_an_int_is_accepted_as_a_number(tmp_path):
    path = _write(tmp_path, lambda p: p["simplenet-fakes"].update(lr=1))
    lr = load_params(path)["simplenet-fakes"]["lr"]
    assert lr == 1.0 and isinstance(lr, float)


def test_changes_are_validated_like_the_file():
    assert load_params(PARAMS_FILES[0], {"explain": {"n_examples": 2}})["explain"]["n_examples"] == 2
    with pytest.raises(ParamsError, match="'explain.n_examples' must be in"):
        load_params(PARAMS_FILES[0], {"explain": {"n_examples": 0}})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="nope.yaml: params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_unknown_model_and_model_params_are_named():
    cfg = load_params(PARAMS_FILES[0])["simplenet-fakes"]
    with pytest.raises(ParamsError, match=r"model 'simplenett' of run 'simplenet-fakes' is not a known model"):
        check_model({**cfg, "model": "simplenett"})
    with pytest.raises(ParamsError, match=r"unknown key 'model_params.dropout' of run 'simplenet-fakes'"):
        check_model({**cfg, "model_params": {"dropout": 0.5}})


def test_validate_reports_the_path_of_nested_keys():
    schema = {"a": {"b": Key((int,), 0, 3)}}
    with pytest.raises(ParamsError, match=r"x.yaml: 'a.b' must be in \[0, 3\], got 5"):
        validate({"a": {"b": 5}}, schema, "x.yaml")
