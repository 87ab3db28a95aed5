"""params.yaml validation: unknown keys and wrong types are named."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deepfake_detect.config import DEFAULTS, ParamsError, load_params

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, mutate) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    mutate(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_repo_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params["train-simplenet-fakes"]["lr"] == 0.001
    assert params["train-simplenet-fakes"]["optimizer"] == "adam"
    assert params["train-simplenet-fakes"]["batch_size"] == 32
    assert params["train-simplenet-fakes"]["epochs"] == 5
    assert set(DEFAULTS) <= set(params)


def test_unknown_key_is_named_with_valid_keys(tmp_path):
    path = _write(tmp_path, lambda p: p["train-simplenet-fakes"].update(lrr=0.1))
    with pytest.raises(ParamsError) as e:
        load_params(path)
    assert "'train-simplenet-fakes.lrr'" in str(e.value) and "lr," in str(e.value)


def test_wrong_type_is_named(tmp_path):
    path = _write(tmp_path, lambda p: p["train-simplenet-synth"].update(lr="fast"))
    with pytest.raises(ParamsError, match=r"'train-simplenet-synth.lr' must be a number, got 'fast'"):
        load_params(path)


def test_bool_is_not_an_int(tmp_path):
    path = _write(tmp_path, lambda p: p["train-simplenet-synth"].update(epochs=True))
    with pytest.raises(ParamsError, match="epochs' must be an integer"):
        load_params(path)


def test_bad_choice_is_named(tmp_path):
    path = _write(tmp_path, lambda p: p["train-competition"].update(optimizer="adamx"))
    with pytest.raises(ParamsError, match=r"'train-competition.optimizer' must be one of adam, adamw, sgd"):
        load_params(path)


def test_unknown_top_level_section(tmp_path):
    path = _write(tmp_path, lambda p: p.update(trian={}))
    with pytest.raises(ParamsError, match="unknown key 'trian'"):
        load_params(path)


def test_int_is_accepted_as_float_and_missing_keys_default(tmp_path):
    path = _write(tmp_path, lambda p: (p["train-simplenet-fakes"].update(lr=1), p["train-simplenet-fakes"].pop("epochs")))
    params = load_params(path)
    assert params["train-simplenet-fakes"]["lr"] == 1.0 and isinstance(params["train-simplenet-fakes"]["lr"], float)
    assert params["train-simplenet-fakes"]["epochs"] == DEFAULTS["train-simplenet-fakes"]["epochs"]


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_unknown_model_and_model_params_are_named(tmp_path):
    path = _write(tmp_path, lambda p: p["train-simplenet-fakes"].update(model="simplenett"))
    with pytest.raises(ParamsError, match=r"'train-simplenet-fakes.model' is 'simplenett', not a known model"):
        load_params(path)
    path = _write(tmp_path, lambda p: p["train-simplenet-fakes"].update(model_params={"dropout": 0.5}))
    with pytest.raises(ParamsError, match=r"'train-simplenet-fakes.model_params.dropout' for model 'simplenet'"):
        load_params(path)
