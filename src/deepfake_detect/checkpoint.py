"""Self-describing checkpoints: ``Checkpoint``, every field named once with its type and default.

On disk a checkpoint is a plain dict of tensors and primitives (``Checkpoint.to_dict``; loads with
``torch.load(..., weights_only=True)``) that carries everything needed to rebuild and use the model:
architecture and its params, image size, normalisation, class order, decision threshold, Grad-CAM
layer, and the run's metrics. ``make_checkpoint`` builds one of a model (the one writer),
``read_checkpoint`` reads and checks one (the one reader), ``load_model`` rebuilds its model.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .config import RUNS, TRAIN_SCHEMA, Num, ParamsError, check_value, source_of
from .data import CLASSES
from .errors import UserError, one_line
from .io import save_torch
from .models import get_model, model_kwargs

FORMAT = "deepfake-detect/checkpoint-v1"


class CheckpointError(UserError, ValueError):
    """A file that is not a usable checkpoint of ours; the message names the file."""


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    model = getattr(model, "module", model)  # DistributedDataParallel wrapper
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _numbers(n: int):
    return lambda v: isinstance(v, (list, tuple)) and len(v) == n and all(_number(x) for x in v)


def _of(kind: type):
    return lambda v: isinstance(v, kind)


def _field(what: str, ok=None, rule=None, per_channel=None, **default) -> Any:
    """A checkpoint field: ``what`` it must be (for the message), checked by ``ok`` or by the params rule ``rule``
    (type and range, as in params.yaml); ``per_channel``: the rule of each of its numbers. A field with a
    ``default`` (or ``default_factory``) is optional: an older checkpoint without it loads with the default."""
    return field(metadata={"what": what, "ok": ok, "rule": rule, "per_channel": per_channel}, **default)


@dataclass(kw_only=True)
class Checkpoint:
    """A checkpoint of ours: everything needed to rebuild and use the model. Declared in the order ``to_dict``
    writes the fields (training's order); a field with the default None is left out of the file."""

    format: str = FORMAT
    arch: str = _field("a model name", lambda v: isinstance(v, str) and bool(v))
    arch_params: dict[str, Any] = _field("a dict of model parameters", _of(dict))
    image_size: int = _field("an integer", rule=TRAIN_SCHEMA["image_size"])  # the range a training run accepts
    # the normalisation per channel on the 0..1 pixel scale (a pixel's mean and spread cannot leave it)
    mean: list[float] = _field("3 numbers", _numbers(3), per_channel=Num(0, 1))
    std: list[float] = _field("3 numbers", _numbers(3), per_channel=Num(0, 1, lo_open=True))
    classes: list[str] = _field(f"{list(CLASSES)} (the class order scores assume)", lambda v: v == list(CLASSES))
    threshold: float = _field("a number", rule=Num(0, 1))  # fake when p(fake) > it; chosen on validation
    cam_layer: str = _field("a layer name", _of(str))  # Grad-CAM's layer
    run: str = _field("a run name", _of(str), default="")
    metrics: dict[str, Any] = _field("a dict", _of(dict), default_factory=dict)  # what training recorded
    state_dict: dict[str, torch.Tensor] = _field("a dict of tensors", lambda v: isinstance(v, dict) and all(
        isinstance(t, torch.Tensor) for t in v.values()))
    dataset: str | None = _field("a dataset name", _of(str), default=None)  # what the run trained on
    tta: str = "none"  # the test-time augmentation it scores with (checked where scored: score.resolve_tta)
    pseudo_fakes: str = "none"  # the run's pseudo_fakes
    domain: dict[str, Any] | None = _field("a dict (what the run trained on)", _of(dict), default=None)
    # written by the release stage: the shipped name, the calibration of p(fake) (checked by the Detector) and the
    # threshold on the calibrated scale
    task: str | None = None
    calibration: dict[str, Any] | None = None
    output_threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """What ``torch.save`` writes: a plain dict (loads with ``weights_only=True``); None fields left out."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if not (f.default is None and getattr(self, f.name) is None)}

    def save(self, path: str | Path) -> Path:
        return save_torch(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: Any, path: str | Path) -> "Checkpoint":
        """The checkpoint of a loaded dict ``d``, every field checked (types; image_size, threshold, mean and std in
        their ranges; every weight finite); else CheckpointError naming ``path`` and the field. A missing optional
        field takes its default; keys that are no field are dropped."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a deepfake-detect checkpoint (expected format '{FORMAT}')")
        required = [f for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        for f in required:
            if f.name not in d:
                raise CheckpointError(f"{path}: checkpoint field '{f.name}' is missing (expected {f.metadata['what']})")
            _check_field(path, f, d[f.name])
        for f in required:
            for i, v in enumerate(d[f.name] if f.metadata["per_channel"] else ()):
                _check_range(path, f"{f.name}[{i}]", v, f.metadata["per_channel"])
        for f in fields(cls):
            if f not in required and f.name in d and f.metadata:
                _check_field(path, f, d[f.name])
        broken = next((k for k, t in d["state_dict"].items()
                       if t.is_floating_point() and not torch.isfinite(t).all()), None)
        if broken is not None:
            raise CheckpointError(f"{path}: checkpoint weight '{broken}' holds NaN or infinite values; the model is "
                                  "broken (retrain it)")
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def _check_field(path: Path, f, value: Any) -> None:
    if f.metadata["rule"] is not None:
        _check_range(path, f.name, value, f.metadata["rule"])
    elif not f.metadata["ok"](value):
        raise CheckpointError(f"{path}: checkpoint field '{f.name}' must be {f.metadata['what']}, got "
                              f"{repr(value)[:80]}")


def make_checkpoint(model: nn.Module, image_size: int, run: str = "", metrics: dict | None = None,
                    threshold: float = 0.5, **optional: Any) -> Checkpoint:
    """The checkpoint of ``model`` (its weights copied); ``optional``: other fields of ``Checkpoint``."""
    base = getattr(model, "_orig_mod", model)
    base = getattr(base, "module", base)
    arch_params = dict(getattr(base, "arch_params", {}))
    arch_params.pop("weights", None)  # the state dict holds the weights
    return Checkpoint(arch=base.arch, arch_params=arch_params, image_size=int(image_size), mean=list(base.mean),
                      std=list(base.std), classes=list(CLASSES), threshold=float(threshold), cam_layer=base.cam_layer,
                      run=run, metrics=dict(metrics or {}),
                      state_dict={k: v.clone() for k, v in model_state(model).items()}, **optional)


def save_checkpoint(path: str | Path, model: nn.Module, image_size: int, **kwargs) -> Path:
    return make_checkpoint(model, image_size, **kwargs).save(path)


def _check_range(path: Path, name: str, value: Any, key) -> None:
    """``value`` by the rules of a params key (type, range, finite), else CheckpointError naming the field."""
    try:
        check_value("", name, value, key)
    except ParamsError as e:  # ": 'name' must be in [lo, hi], got value"
        raise CheckpointError(f"{path}: checkpoint field {str(e).removeprefix(': ')}") from e


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; a file it refuses is a CheckpointError in our words, never torch's,
    which would suggest ``weights_only=False``, i.e. running whatever code an untrusted file holds."""
    import pickle
    import warnings
    import zipfile

    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise about a file we refuse anyway
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except IsADirectoryError as e:
        raise CheckpointError(f"{path}: a folder, not a checkpoint file") from e
    except OSError as e:
        raise CheckpointError(f"{path}: checkpoint cannot be read ({e.strerror or type(e).__name__})") from e
    except pickle.UnpicklingError as e:
        if zipfile.is_zipfile(path):
            raise CheckpointError(f"{path}: refused: it holds Python objects that a deepfake-detect checkpoint "
                                  "does not (only tensors, numbers, strings, lists and dicts are loaded, so that "
                                  "no code in a file runs); it was not loaded") from e
        raise CheckpointError(f"{path}: not a checkpoint (torch.save writes a zip archive; this is another kind of "
                              "file)") from e
    except Exception as e:  # a truncated or damaged archive (RuntimeError), an empty file (EOFError) ...
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or damaged: {type(e).__name__})") from e


def read_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint at ``path``, every field checked (``Checkpoint.from_dict``); else CheckpointError naming the
    file and the field."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.is_file() and path.stat().st_size == 0:
        raise CheckpointError(f"{path}: an empty file, not a checkpoint")
    return Checkpoint.from_dict(_torch_load(path), path)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Checkpoint]:
    """Rebuild the model from a checkpoint; returns (model in eval mode, checkpoint)."""
    ckpt = read_checkpoint(path)
    params = dict(ckpt.arch_params)
    if "weights" in (model_kwargs(ckpt.arch) or {"weights"}):  # the trained weights replace any pretrained ones
        params["weights"] = "none"
    try:
        model = get_model(ckpt.arch, image_size=ckpt.image_size, **params)
    except (ValueError, TypeError) as e:  # an architecture this version does not know, parameters it does not take
        raise CheckpointError(f"{path}: checkpoint fields 'arch' ({ckpt.arch!r}), 'arch_params' "
                              f"({ckpt.arch_params}) and 'image_size' ({ckpt.image_size}) do not make a model: "
                              f"{one_line(e)}") from e
    try:
        model.load_state_dict(ckpt.state_dict)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit architecture '{ckpt.arch}': {one_line(e)}") from e
    model.mean, model.std = tuple(ckpt.mean), tuple(ckpt.std)
    model.checkpoint_path = str(path)  # for messages about what the model does (score.score_paths)
    return model.to(device).eval(), ckpt



def run_checkpoint(params: dict, run: str, models_dir: str | Path = "models") -> Path:
    """models/<run>.pt, or FileNotFoundError naming it and the stage that makes it (``runs`` of the params)."""
    path = Path(models_dir) / f"{run}.pt"
    if not path.exists():
        stage = params[RUNS].get(run)
        how = (f"it is made by stage '{stage}' (dvc repro {stage})" if stage else
               f"'{RUNS}' in {source_of(params)} has no run '{run}'")
        raise FileNotFoundError(f"{path}: checkpoint not found; {how}")
    return path


def trained_on(ckpt: Checkpoint, path: str | Path) -> str:
    """The dataset the checkpoint's run was trained on (training records it)."""
    if not ckpt.dataset:
        raise CheckpointError(f"{path}: checkpoint does not say which dataset it was trained on ('dataset')")
    return ckpt.dataset
