"""The params files are the one source of values; the schema holds types, choices and ranges."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deepfake_detect.config import SCHEMA, TRAIN_STAGES, Key, ParamsError, load_params, validate
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


@pytest.mark.parametrize("path", PARAMS_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_params_file_sets_exactly_the_schema_keys(path):
    """Section by section: a key the code reads cannot hide in the code, and no key is left over."""
    given = yaml.safe_load(path.read_text())
    for section in SCHEMA:
        want = _keys({section: SCHEMA[section]}) if isinstance(SCHEMA[section], dict) else {section}
        have = {k for k in _keys(given) if k == section or k.startswith(section + ".")}
        assert have == want, f"{path.name} [{section}]: missing {sorted(want - have)}, extra {sorted(have - want)}"
    params = load_params(path)
    for stage in TRAIN_STAGES:
        check_model(params[stage])


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
    ("train-simplenet-synth.lr", "fast", "'train-simplenet-synth.lr' must be a number, got 'fast'"),
    ("train-simplenet-synth.epochs", True, "'train-simplenet-synth.epochs' must be an integer, got True"),
    ("train-competition.optimizer", "adamx", "'train-competition.optimizer' must be one of adam, adamw, sgd"),
    ("finetune-xception.frozen_layers", [1], "'finetune-xception.frozen_layers' must be a list of strings"),
    ("data.fakes.groups", 3, "'data.fakes.groups' must be a string or null, got 3"),
    ("train-simplenet-fakes.lr", float("nan"), "'train-simplenet-fakes.lr' must be in (0, 10], got nan"),
])
def test_wrong_values_are_named(tmp_path, dotted, value, message):
    path = _write(tmp_path, lambda p: _set(p, dotted, value))
    with pytest.raises(ParamsError) as e:
        load_params(path)
    assert message in str(e.value)


def test_unknown_and_missing_keys_are_named(tmp_path):
    path = _write(tmp_path, lambda p: p["train-simplenet-fakes"].update(lrr=0.1))
    with pytest.raises(ParamsError, match=r"unknown key 'train-simplenet-fakes.lrr' \(valid keys here: run, "):
        load_params(path)
    path = _write(tmp_path, lambda p: p["train-simplenet-fakes"].pop("early_stopping_patience"))
    with pytest.raises(ParamsError, match=r"missing key 'train-simplenet-fakes.early_stopping_patience'"):
        load_params(path)
    path = _write(tmp_path, lambda p: p.update(trian={}))
    with pytest.raises(ParamsError, match="unknown key 'trian'"):
        load_params(path)


def test_an_int_is_accepted_as_a_number(tmp_path):
    path = _write(tmp_path, lambda p: p["train-simplenet-fakes"].update(lr=1))
    lr = load_params(path)["train-simplenet-fakes"]["lr"]
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
    cfg = load_params(PARAMS_FILES[0])["train-simplenet-fakes"]
    with pytest.raises(ParamsError, match=r"model 'simplenett' of run 'simplenet-fakes' is not a known model"):
        check_model({**cfg, "model": "simplenett"})
    with pytest.raises(ParamsError, match=r"unknown key 'model_params.dropout' of run 'simplenet-fakes'"):
        check_model({**cfg, "model_params": {"dropout": 0.5}})


def test_validate_reports_the_path_of_nested_keys():
    schema = {"a": {"b": Key((int,), 0, 3)}}
    with pytest.raises(ParamsError, match=r"x.yaml: 'a.b' must be in \[0, 3\], got 5"):
        validate({"a": {"b": 5}}, schema, "x.yaml")
