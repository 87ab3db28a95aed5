"""NPR (models/npr.py): the residual, the parameter count, the registry entry, checkpoints, learning the
demo's generator fingerprint through the trainer."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deepfake_detect.checkpoint import load_model, save_checkpoint
from deepfake_detect.config import load_params, rename_run
from deepfake_detect.models import get_model, get_submodule, list_models, num_params
from deepfake_detect.models.npr import npr_residual
from deepfake_detect.splits import SplitOptions, prepare_dataset
from deepfake_detect.train import fit

from conftest import PARAMS_YAML


def test_residual_hand_worked_4x4():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # nearest down by 2 keeps each 2x2 block's top-left pixel (0, 2, 8, 10); up by 2 repeats it over the block
    expected = torch.tensor([[0.0, 1, 0, 1],
                             [4, 5, 4, 5],
                             [0, 1, 0, 1],
                             [4, 5, 4, 5]])
    assert torch.equal(npr_residual(x)[0, 0], expected)
    # an image a nearest x2 up-sampler made has no residual at all
    y = F.interpolate(torch.randn(2, 3, 8, 8), scale_factor=2, mode="nearest")
    assert torch.equal(npr_residual(y), torch.zeros_like(y))


def test_param_count_and_layers():
    model = get_model("npr", image_size=256)
    # the authors' 3x3 stem 1,728 + its BN 128 + layer1 215,808 + layer2 1,219,584 + fc 513
    assert num_params(model) == 1_437_761
    assert num_params(get_model("npr", image_size=64)) == 1_437_761  # global pooling: no size dependence
    assert num_params(get_model("npr", image_size=64, stem_kernel=7)) == 1_445_441  # torchvision's 7x7 stem
    assert [len(model.layer1), len(model.layer2)] == [3, 4]  # ResNet-50's first two stages
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (2, 2)
    with pytest.raises(ValueError, match="even image_size"):
        get_model("npr", image_size=65)
    with pytest.raises(ValueError, match="stem_kernel must be 3"):
        get_model("npr", image_size=64, stem_kernel=5)


def test_registry_entry_cam_layer_and_normalisation():
    assert "npr" in list_models()
    torch.manual_seed(0)
    model = get_model("npr", image_size=64).eval()
    assert model.cam_layer == "layer2" and model.mean == (0.485, 0.456, 0.406) and model.std == (0.229, 0.224, 0.225)
    seen = {}
    handle = get_submodule(model, model.cam_layer).register_forward_hook(lambda m, i, o: seen.update(s=o.shape))
    with torch.no_grad():
        out = model(torch.randn(3, 3, 64, 64))
    handle.remove()
    assert out.shape == (3, 2) and torch.allclose(out[:, 0], -out[:, 1])  # (-z/2, z/2): softmax = sigmoid(z)
    assert tuple(seen["s"]) == (3, 512, 8, 8)  # the last block, stride 8
    # the network sees the residual only: two different nearest-upsampled images score the same
    a, b = (F.interpolate(torch.randn(1, 3, 32, 32), scale_factor=2, mode="nearest") for _ in range(2))
    with torch.no_grad():
        assert torch.allclose(model(a), model(b), atol=1e-6)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = get_model("npr", image_size=64, stem_kernel=7)
    model.train()
    model(torch.randn(4, 3, 64, 64))  # BatchNorm statistics off their defaults
    model.eval()
    loaded, ckpt = load_model(save_checkpoint(tmp_path / "n.pt", model, 64, run="npr-synth"))
    assert ckpt.arch == "npr" and ckpt.cam_layer == "layer2" and ckpt.arch_params == {"stem_kernel": 7}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)


def test_learns_the_demo_generator_fingerprint(tmp_path):
    """Through the trainer, from scratch, on 60 + 60 demo synthetic images at their own 64 px: val AUC 0.93
    (0.85-0.93 over seeds 0-2). Batch 4: the stem's BatchNorm sees a residual of variance ~5e-4 and its
    running estimate needs ~100 steps to forget its initial 1, so few large batches score at chance."""
    data = tmp_path / "data"
    src = {"source": "demo", "groups": None, "val_fraction": 0.15, "test_fraction": 0.15}
    prepare_dataset("synthetic", src, data / "synthetic", SplitOptions(
        seed=0, demo_cfg={"image_size": 64, "synthetic": {"train": 120, "val": 40, "test": 10}}), progress=False)
    params = rename_run(load_params(PARAMS_YAML, {"device": "cpu", "simplenet-synth": {
        "model": "npr", "model_params": {}, "image_size": 64, "optimizer": "adam", "lr": 0.001,
        "batch_size": 4, "epochs": 3, "hflip": False, "select_metric": "auc", "eval_test_every_epoch": False}}),
        "simplenet-synth", "npr")
    out = fit(params["npr"], params, data_dir=data, models_dir=tmp_path / "models",
              metrics_dir=tmp_path / "metrics", cache_dir=tmp_path / "cache", progress=False)
    assert out["num_params"] == 1_437_761
    assert out["best_val_auc"] > 0.75, out
