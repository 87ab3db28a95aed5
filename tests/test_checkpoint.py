"""The typed checkpoint (checkpoint.Checkpoint): one writer (``make_checkpoint`` -> ``to_dict``), one reader
(``read_checkpoint``), the file format a plain dict as before (the same keys, values and order), older files
without an optional field loading with its default, and the shipped detectors loading."""
from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path

import pytest
import torch

from deepfake_detect.checkpoint import FORMAT, Checkpoint, CheckpointError, make_checkpoint, read_checkpoint
from deepfake_detect.data import CLASSES
from deepfake_detect.models import get_model
from deepfake_detect.release import export_checkpoint

SHIPPED = Path(__file__).resolve().parents[1] / "src" / "deepfake_detect" / "detectors"
DOMAIN = {"data": "demo", "image_size": 64, "native_size": [64, 64], "face_crops": None}


def _model():
    torch.manual_seed(0)
    return get_model("simplenet", image_size=64)


def _same(a: Checkpoint, b: Checkpoint) -> None:
    for f in fields(Checkpoint):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "state_dict":
            assert list(x) == list(y) and all(torch.equal(x[k], y[k]) for k in x)
        else:
            assert x == y, f.name


def _training(model) -> Checkpoint:
    """As train.Progress.record builds it."""
    return make_checkpoint(model, 64, run="tiny", threshold=0.375, dataset="fakes", tta="flip", pseudo_fakes="none",
                           domain=DOMAIN, metrics={"best_epoch": 2, "threshold_rule": "balanced"})


def test_the_file_is_the_dict_training_wrote_before(tmp_path):
    """The same keys, in the same order, with the same values as the untyped dict of before the dataclass."""
    model = _model()
    ckpt = _training(model)
    before = {"format": FORMAT, "arch": "simplenet", "arch_params": dict(model.arch_params), "image_size": 64,
              "mean": list(model.mean), "std": list(model.std), "classes": list(CLASSES), "threshold": 0.375,
              "cam_layer": model.cam_layer, "run": "tiny", "metrics": {"best_epoch": 2, "threshold_rule": "balanced"},
              "state_dict": model.state_dict(), "dataset": "fakes", "tta": "flip", "pseudo_fakes": "none",
              "domain": DOMAIN}
    raw = torch.load(ckpt.save(tmp_path / "c.pt"), weights_only=True)
    assert list(raw) == list(before) == list(ckpt.to_dict())
    for k, v in before.items():
        assert (all(torch.equal(v[n], raw[k][n]) for n in v) if k == "state_dict" else raw[k] == v), k


def test_round_trip_gives_equal_fields(tmp_path):
    ckpt = export_checkpoint(_training(_model()), task="faceswap", calibration={"method": "platt", "a": 0.8, "b": -0.6},
                             output_threshold=0.61)
    back = read_checkpoint(ckpt.save(tmp_path / "c.pt"))
    _same(back, ckpt)
    assert back.task == "faceswap" and back.output_threshold == 0.61


def test_an_older_checkpoint_without_optional_fields_loads_with_the_defaults(tmp_path):
    full = _training(_model()).to_dict()
    optional = [f for f in fields(Checkpoint) if f.default is not MISSING or f.default_factory is not MISSING]
    old = {k: v for k, v in full.items() if k not in {f.name for f in optional} - {"format"}}
    torch.save(old, tmp_path / "old.pt")
    ckpt = read_checkpoint(tmp_path / "old.pt")
    assert (ckpt.run, ckpt.metrics, ckpt.dataset, ckpt.tta, ckpt.pseudo_fakes, ckpt.domain) == (
        "", {}, None, "none", "none", None)
    assert (ckpt.task, ckpt.calibration, ckpt.output_threshold) == (None, None, None)
    # written back: the None fields stay out of the file, the others are written with their defaults
    assert set(ckpt.to_dict()) == set(old) | {"run", "metrics", "tta", "pseudo_fakes"}


@pytest.mark.parametrize("field", ["arch", "threshold", "cam_layer", "state_dict"])
def test_a_missing_required_field_is_named_with_the_file(tmp_path, field):
    d = _training(_model()).to_dict()
    del d[field]
    torch.save(d, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=rf"c\.pt: checkpoint field '{field}' is missing \(expected "):
        read_checkpoint(tmp_path / "c.pt")


def test_an_optional_field_of_the_wrong_type_is_named(tmp_path):
    d = {**_training(_model()).to_dict(), "dataset": 3}
    torch.save(d, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"c\.pt: checkpoint field 'dataset' must be a dataset name, got 3"):
        read_checkpoint(tmp_path / "c.pt")


@pytest.mark.parametrize("name", ["faceswap", "generated"])
def test_the_shipped_detectors_load_with_every_field(name):
    pt = SHIPPED / f"{name}.pt"
    raw = torch.load(pt, weights_only=True)
    ckpt = read_checkpoint(pt)
    assert ckpt.task == name and ckpt.calibration == raw["calibration"] and ckpt.domain == raw["domain"]
    out = ckpt.to_dict()
    assert set(out) == set(raw)  # nothing of the file is dropped or added
    assert all(torch.equal(raw["state_dict"][k], t) for k, t in out["state_dict"].items())
    assert {k: v for k, v in out.items() if k != "state_dict"} == {k: v for k, v in raw.items() if k != "state_dict"}
