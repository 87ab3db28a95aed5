"""A run's training config as one typed object (config.TrainConfig): one field per key of TRAIN_SCHEMA, built from
the merged params section of every run, checked where it is built, and the same dict again for what is written."""
from __future__ import annotations

import dataclasses

import pytest

from deepfake_detect.config import (
    RUNS,
    TRAIN_SCHEMA,
    Key,
    ParamsError,
    TrainConfig,
    load_params,
    run_config,
)

from conftest import PARAMS_YAML, REPO

PARAMS_FILES = [PARAMS_YAML, REPO / "real" / "params.yaml"]


def _annotation(key: Key) -> str:
    """The type a field of ``key`` is annotated with."""
    base = {bool: "bool", str: "str", dict: "dict", list: "list[str]"}
    name = "float" if float in key.types else "int" if int in key.types else base[key.types[0]]
    return f"{name} | None" if key.nullable else name


def test_fields_are_the_schema_keys_with_their_types():
    """TRAIN_SCHEMA is the one list of training keys: the dataclass has exactly its keys, in its order, each
    annotated with its key's type (plus the run's name first and the params file it came from last)."""
    fields = dataclasses.fields(TrainConfig)
    assert [f.name for f in fields] == ["run", *TRAIN_SCHEMA, "source"]
    assert {f.name: f.type for f in fields if f.name in TRAIN_SCHEMA} == \
        {name: _annotation(key) for name, key in TRAIN_SCHEMA.items()}
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING for f in fields), \
        "the values come from the params file: no field has a default"


@pytest.mark.parametrize("path", PARAMS_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_run_of_both_params_files_builds(path):
    params = load_params(path)
    for run in params[RUNS]:
        cfg = TrainConfig.from_params(params, run)
        assert cfg.run == run and cfg.source == str(path)
        # what is hashed for resuming (and could be written): exactly the section's keys, order and values
        assert cfg.to_dict() == run_config(params, run) and list(cfg.to_dict()) == list(run_config(params, run))
        assert TrainConfig.of(run_config(params, run)) == cfg and TrainConfig.of(cfg) is cfg
        with pytest.raises(dataclasses.FrozenInstanceError):
            cfg.lr = 1.0


def test_a_config_built_by_hand_is_checked_like_the_params_file():
    cfg = TrainConfig.from_params(load_params(PARAMS_YAML), "simplenet-fakes")
    with pytest.raises(ParamsError, match=r"params.yaml: 'lr' must be in \(0, 10\], got -1"):
        dataclasses.replace(cfg, lr=-1)
    with pytest.raises(ParamsError, match=r"params.yaml: 'hflip' must be true/false, got 1"):
        dataclasses.replace(cfg, hflip=1)
    with pytest.raises(ParamsError, match=r"'optimizer' must be one of adam, adamw, sgd; got 'lion'"):
        dataclasses.replace(cfg, optimizer="lion")
    with pytest.raises(ParamsError, match="a run's name is letters"):
        dataclasses.replace(cfg, run="a b")
    assert dataclasses.replace(cfg, lr=1).lr == 1.0 and isinstance(dataclasses.replace(cfg, lr=1).lr, float)
    section = cfg.to_dict()
    with pytest.raises(ParamsError, match="missing key 'epochs'"):
        TrainConfig.of({k: v for k, v in section.items() if k != "epochs"})
    with pytest.raises(ParamsError, match="unknown key 'epochz'"):
        TrainConfig.of({**section, "epochz": 3})


def test_a_wrong_type_in_the_params_file_still_names_its_section():
    with pytest.raises(ParamsError, match=r"params.yaml: 'simplenet-fakes.lr' must be in \(0, 10\], got -1"):
        load_params(PARAMS_YAML, {"simplenet-fakes": {"lr": -1}})
