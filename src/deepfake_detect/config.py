"""params.yaml: defaults, loading and validation.

Every hyper-parameter lives in params.yaml. This module knows the valid keys and
their types, so a misspelt key or a wrong type stops a stage with a message that
names the key (``train-simplenet-fakes.lr``) and lists what is valid.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from .errors import UserError

PARAMS_FILE = "params.yaml"

RUNS = ["simplenet-fakes", "simplenet-synth", "finetune-synth", "competition-fakes"]
TRAIN_STAGES = ("train-simplenet-fakes", "train-simplenet-synth", "finetune-xception", "train-competition")

# One schema for every training stage. A value of a tuple of types means "any of these";
# ``None`` in the tuple allows null.
TRAIN_DEFAULTS: dict[str, Any] = {
    "run": "",  # run name: models/<run>.pt, metrics/train/<run>/
    "dataset": "fakes",  # fakes | synthetic
    "model": "simplenet",  # a registry name (see deepfake_detect.models) or any timm architecture
    "model_params": {},  # passed to the model builder (e.g. weights, dropout)
    "image_size": 128,
    "hflip": False,  # random horizontal flips while training
    "optimizer": "adam",  # adam | adamw | sgd
    "lr": 0.001,
    "backbone_lr": None,  # lr for a pretrained backbone (None: same as lr)
    "momentum": 0.9,  # sgd only
    "weight_decay": 0.0,
    "batch_size": 32,
    "epochs": 5,
    "freeze_backbone_epochs": 0,  # train only the head for the first N epochs
    "frozen_layers": [],  # module-name prefixes never trained (e.g. backbone.blocks.0); their BatchNorms keep ImageNet stats
    "lr_scheduler": "none",  # none | plateau | cosine
    "plateau_factor": 0.1,
    "plateau_patience": 2,
    "early_stopping_patience": 0,  # 0: off; else stop after N epochs without val-acc gain
    "label_smoothing": 0.0,
    "eval_test_every_epoch": True,  # the course plots a per-epoch test curve
    "max_steps_per_epoch": 0,  # 0: whole epoch (small values for smoke tests)
    "num_workers": -1,  # -1: sized to the machine's cores
    "decode_cache": True,  # decode each image once at image_size into an on-disk uint8 cache ($DFD_CACHE_DIR)
    "amp": True,  # mixed precision on CUDA (ignored on CPU)
    "channels_last": True,  # NHWC activations: faster convolutions on CUDA and on CPU (oneDNN)
    "compile": False,  # torch.compile
}
TYPES: dict[str, tuple] = {
    "backbone_lr": (float, int, type(None)),
    "groups": (str, type(None)),
}

DATASET_DEFAULTS = {
    "source": "demo",  # demo | path to course layout (train|val|test/real|fake) or flat real/ + fake/
    "groups": None,  # optional CSV (path,group[,...]) for group-disjoint splits of flat folders
    "val_fraction": 0.15,  # flat folders only
    "test_fraction": 0.15,
}

# evaluate-roc-det (owned by evaluate.py)
EVALUATE_DEFAULTS: dict[str, Any] = {
    "runs": list(RUNS),  # models/<run>.pt, each scored on the test split of the dataset it was trained on
    "batch_size": 64,
    "bootstrap": 1000,  # resamples for the AUC 95 % interval
}

# explain (owned by explain.py)
EXPLAIN_DEFAULTS: dict[str, Any] = {
    "runs": list(RUNS),
    "n_examples": 4,  # real and fake test images per figure
    "n_mean": 64,  # test images per class averaged into the mean saliency / Grad-CAM maps
    "n_faithfulness": 64,  # demo fakes (with masks) scored for faithfulness
    "batch_size": 16,
}


DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda
    "demo": {
        "image_size": 128,
        "fakes": {"train": 450, "val": 150, "test": 150, "strength": 1.0},
        "synthetic": {"train": 300, "val": 100, "test": 100, "strength": 1.0},
    },
    "data": {
        "fakes": dict(DATASET_DEFAULTS),
        "synthetic": dict(DATASET_DEFAULTS),
        "on_bad_image": "error",  # error | skip (skipped files are listed in metrics)
        "on_leak": "warn",  # same pixels in two splits: warn (listed) | drop (later copies) | error
    },
    **{stage: dict(TRAIN_DEFAULTS) for stage in TRAIN_STAGES},
    "evaluate-roc-det": EVALUATE_DEFAULTS,
    "explain": EXPLAIN_DEFAULTS,
}

CHOICES: dict[str, tuple] = {
    "device": ("auto", "cpu", "cuda"),
    "data.on_bad_image": ("error", "skip"),
    "data.on_leak": ("warn", "drop", "error"),
    "*.dataset": ("fakes", "synthetic"),
    "*.optimizer": ("adam", "adamw", "sgd"),
    "*.lr_scheduler": ("none", "plateau", "cosine"),
}


class ParamsError(UserError, ValueError):
    """A problem in params.yaml; the message names the key."""


def _type_name(types: tuple) -> str:
    names = {int: "an integer", float: "a number", bool: "true/false", str: "a string", dict: "a mapping",
             list: "a list", type(None): "null"}
    if float in types:  # an int is accepted where a number is
        types = tuple(t for t in types if t is not int)
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def _check(key: str, value: Any, default: Any, leaf: str) -> Any:
    types = TYPES.get(leaf)
    if types is None:
        if isinstance(default, bool):
            types = (bool,)
        elif isinstance(default, float):
            types = (float, int)
        elif isinstance(default, int):
            types = (int,)
        elif default is None:
            types = (object,)
        else:
            types = (type(default),)
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types and object not in types)
    if not ok:
        raise ParamsError(f"{PARAMS_FILE}: '{key}' must be {_type_name(types)}, got {value!r}")
    for pattern, choices in CHOICES.items():
        if pattern == key or (pattern.startswith("*.") and key.endswith(pattern[1:])):
            if value not in choices:
                raise ParamsError(f"{PARAMS_FILE}: '{key}' must be one of {', '.join(map(str, choices))}; got {value!r}")
    if isinstance(default, float) and isinstance(value, int):
        value = float(value)
    return value


def merge(defaults: dict, given: dict, prefix: str = "") -> dict:
    """Defaults overlaid with ``given``; unknown keys and wrong types raise ParamsError."""
    out = copy.deepcopy(defaults)
    if not isinstance(given, dict):
        raise ParamsError(f"{PARAMS_FILE}: '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {given!r}")
    for key, value in given.items():
        full = f"{prefix}{key}"
        if key not in defaults:
            valid = ", ".join(sorted(defaults))
            raise ParamsError(f"{PARAMS_FILE}: unknown key '{full}' (valid keys here: {valid})")
        default = defaults[key]
        if isinstance(default, dict) and default and key != "model_params":
            out[key] = merge(default, value if value is not None else {}, f"{full}.")
        elif key == "model_params":
            if not isinstance(value, dict):
                raise ParamsError(f"{PARAMS_FILE}: '{full}' must be a mapping, got {value!r}")
            out[key] = dict(value)
        else:
            out[key] = _check(full, value, default, key)
    return out


def load_params(path: str | Path = PARAMS_FILE) -> dict:
    """Read and validate params.yaml; missing keys take their defaults."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: file not found (run from the repository root)")
    try:
        given = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from e
    params = merge(DEFAULTS, given)
    for stage in TRAIN_STAGES:
        if not params[stage]["run"]:
            raise ParamsError(f"{PARAMS_FILE}: '{stage}.run' must name the run (e.g. simplenet-fakes)")
        check_model(stage, params[stage])
    return params


def check_model(stage: str, cfg: dict) -> None:
    """The model name exists and ``model_params`` fits its builder (named in the error)."""
    import inspect

    from .models import _REGISTRY, _load_all

    _load_all()
    name = cfg["model"]
    entry = _REGISTRY.get(name)
    if entry is None:
        import timm

        if not timm.is_model(name):
            raise ParamsError(f"{PARAMS_FILE}: '{stage}.model' is '{name}', not a known model "
                              f"(registered: {', '.join(sorted(_REGISTRY))}; or any timm architecture)")
        return
    sig = inspect.signature(entry.builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values()):
        return
    valid = sorted(k for k in sig if k != "image_size")
    for key in cfg["model_params"]:
        if key not in valid:
            raise ParamsError(f"{PARAMS_FILE}: unknown key '{stage}.model_params.{key}' for model '{name}' "
                              f"(valid keys here: {', '.join(valid) or 'none'})")


def stage_params(stage: str, path: str | Path = PARAMS_FILE) -> tuple[dict, dict]:
    """(the whole validated params, the section of one stage)."""
    params = load_params(path)
    if stage not in params:
        raise ParamsError(f"{PARAMS_FILE}: no section '{stage}' (sections: {', '.join(sorted(params))})")
    return params, params[stage]
