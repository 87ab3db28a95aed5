"""The compact competition detector: size, shapes, Grad-CAM layer, checkpoints, learning."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deepfake_detect.checkpoint import load_model, save_checkpoint
from deepfake_detect.config import load_params
from deepfake_detect.models import get_model, get_submodule, num_params
from deepfake_detect.models.augment import TrainAugment

from conftest import REPO

SIMPLENET_256 = 16_901_762


def test_param_count_is_under_one_percent_of_simplenet():
    model = get_model("competition", image_size=224)
    assert num_params(model) == 141_522
    assert num_params(model) <= 169_000 <= SIMPLENET_256 // 100
    # the count does not depend on the input size (global pooling, no flatten)
    assert num_params(get_model("competition", image_size=128)) == 141_522
    # separable: every 3x3 conv after the stem is depthwise
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert convs[0].groups == 1 and all(c.groups == c.in_channels for c in convs[1:])


def test_params_yaml_section_builds_the_tested_model():
    cfg = load_params(REPO / "params.yaml")["competition-fakes"]
    assert cfg["run"] == "competition-fakes" and cfg["dataset"] == "fakes" and cfg["model"] == "competition"
    assert num_params(get_model(cfg["model"], cfg["image_size"], **cfg["model_params"])) == 141_522


@pytest.mark.parametrize("size", [128, 224])
def test_output_shape_and_cam_layer(size):
    torch.manual_seed(0)
    model = get_model("competition", image_size=size).eval()
    layer = get_submodule(model, model.cam_layer)
    seen = {}
    handle = layer.register_forward_hook(lambda m, i, o: seen.update(shape=tuple(o.shape)))
    with torch.no_grad():
        out = model(torch.randn(3, 3, size, size))
    handle.remove()
    assert out.shape == (3, 2) and torch.isfinite(out).all()
    assert model.cam_layer == "features.head_conv"
    assert seen["shape"] == (3, 256, size // 32, size // 32)  # the last conv block, before pooling


def test_augment_is_train_only_and_shifts_are_pixel_exact():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 64, 64)
    aug = TrainAugment(scale=(1.0, 1.0), shift=8, jitter=0.0, p_degrade=0.0)
    assert torch.equal(aug.eval()(x), x)
    y = aug.train()(x)
    assert not torch.equal(y, x)
    for i in range(4):  # each image is its input moved by whole pixels (centre crop compared)
        assert any(torch.allclose(y[i, :, 16:48, 16:48], x[i, :, 16 + dy:48 + dy, 16 + dx:48 + dx], atol=1e-5)
                   for dy in range(-8, 9) for dx in range(-8, 9))
    full = TrainAugment().train()(x)
    assert full.shape == x.shape and torch.isfinite(full).all()


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = get_model("competition", image_size=64, augment={"scale": [0.8, 1.0]}, dropout=0.1)
    model.train()
    model(torch.randn(8, 3, 64, 64))  # move the BatchNorm running statistics off their defaults
    model.eval()
    path = save_checkpoint(tmp_path / "c.pt", model, 64, run="competition-fakes")
    loaded, ckpt = load_model(path)
    assert ckpt.arch == "competition" and ckpt.cam_layer == "features.head_conv"
    assert ckpt.arch_params["augment"] == {"scale": [0.8, 1.0]}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)


def _swap_task(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Real: noise texture. Fake: the same with a colour-mismatched 16x16 patch pasted at a
    random place (the colour cue of a face swap)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.arange(n) % 2
    for i in torch.nonzero(y).flatten().tolist():
        r, c = torch.randint(0, size - 16, (2,), generator=g).tolist()
        x[i, 0, r:r + 16, c:c + 16] += 1.5
    return x, y


def test_tiny_training_run_learns():
    """A narrow two-stage variant (4x4 final map at 32 px: BatchNorm needs more than a 1x1 map)
    learns a pasted colour-mismatch patch from 128 images and generalises to new ones."""
    torch.manual_seed(0)
    x, y = _swap_task(128, seed=1)
    xt, yt = _swap_task(128, seed=2)
    model = get_model("competition", image_size=32, stem=8, stages=[[16, 1], [32, 1]], head=32, dropout=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    losses = []
    for epoch in range(4):
        model.train()
        for i in range(0, len(y), 32):
            loss = F.cross_entropy(model(x[i:i + 32]), y[i:i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        acc = (model(xt).argmax(1) == yt).float().mean().item()
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:4]) / 4
    assert acc >= 0.9, acc


def test_pretrained_lite0_front_keeps_the_budget_and_its_weights():
    from deepfake_detect.models.backbones import packaged_imagenet_model

    model = get_model("competition", image_size=64, backbone="efficientnet_lite0", weights="packaged",
                      stages=[[128, 2]], head=256)
    assert num_params(model) == 150_802 <= 169_000 and num_params(model.backbone) == 87_584
    assert model.mean == (0.485, 0.456, 0.406)  # the pretrained front's normalisation, not the default
    ref = packaged_imagenet_model()
    assert torch.equal(model.backbone[0][0].weight, ref.conv_stem.weight)  # ImageNet weights, not an init
    assert torch.equal(model.backbone[-1].conv_pwl.weight, ref.blocks[3][0].conv_pwl.weight)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 2)
    with pytest.raises(ValueError, match="backbone must be none or efficientnet_lite0"):
        get_model("competition", image_size=64, backbone="resnet50")
