"""The course SimpleNet and self-describing checkpoints."""
from __future__ import annotations

import pytest
import torch

from deepfake_detect.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from deepfake_detect.models import get_model, get_submodule, num_params


def test_simplenet_matches_the_course():
    model = get_model("simplenet", image_size=256)
    assert num_params(model) == 16_901_762
    assert model.classifier[0].in_features == 24 * 26 * 26
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(3, 6, (7, 7)), (6, 16, (7, 7)),
                                                                                 (16, 24, (7, 7))]
    assert model(torch.zeros(2, 3, 256, 256)).shape == (2, 2)


@pytest.mark.parametrize("size", [64, 128, 224])
def test_simplenet_other_sizes(size):
    model = get_model("simplenet", image_size=size)
    assert model(torch.zeros(1, 3, size, size)).shape == (1, 2)
    assert isinstance(get_submodule(model, model.cam_layer), torch.nn.Module)


def test_simplenet_too_small():
    with pytest.raises(ValueError, match="image_size"):
        get_model("simplenet", image_size=32)


def test_unknown_model_name():
    with pytest.raises((ValueError, RuntimeError), match="no_such_net"):
        get_model("no_such_net")


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = get_model("simplenet", image_size=64)
    path = save_checkpoint(tmp_path / "m.pt", model, 64, run="r", metrics={"best_val_acc": 0.9})
    raw = torch.load(path, weights_only=True)  # plain tensors and primitives only
    assert raw["arch"] == "simplenet" and raw["classes"] == ["real", "fake"] and raw["image_size"] == 64
    loaded, ckpt = load_model(path)
    x = torch.randn(3, 3, 64, 64)
    model.eval()
    assert torch.equal(model(x), loaded(x))
    assert ckpt.metrics["best_val_acc"] == 0.9 and tuple(loaded.mean) == tuple(model.mean)
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"


def test_checkpoint_errors_name_the_file(tmp_path):
    model = get_model("simplenet", image_size=64)
    path = save_checkpoint(tmp_path / "m.pt", model, 64)
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="trunc.pt"):
        read_checkpoint(truncated)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="other.pt: not a deepfake-detect checkpoint"):
        read_checkpoint(other)
    # weights of another architecture
    ckpt = torch.load(path, weights_only=True)
    ckpt["image_size"] = 128
    wrong = tmp_path / "wrong.pt"
    torch.save(ckpt, wrong)
    with pytest.raises(CheckpointError, match="wrong.pt: weights do not fit"):
        load_model(wrong)
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint not found"):
        read_checkpoint(tmp_path / "missing.pt")


def test_atomic_outputs_have_normal_permissions(tmp_path):
    import os
    import stat

    from deepfake_detect.io import write_json

    path = write_json(tmp_path / "m.json", {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
