"""The frozen-feature probe: shapes, counts, checkpoints, Grad-CAM, and that it learns."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from deepfake_detect.checkpoint import load_model, save_checkpoint
from deepfake_detect.models import get_model, get_submodule, model_kwargs, num_params


def test_probe_shape_counts_and_attributes():
    assert model_kwargs("probe") == {"backbone", "weights", "indices", "pool", "train_backbone", "dropout"}
    model = get_model("probe", image_size=64, weights="none").eval()
    assert model(torch.randn(3, 3, 64, 64)).shape == (3, 2)
    # default: the last three of EfficientNet-Lite0's five stages, blocks.2/4/6 (40 + 112 + 320 channels)
    assert model.indices == [2, 3, 4] and model.cam_layer == "backbone.blocks.6"
    assert model.mean == pytest.approx((0.485, 0.456, 0.406)) and model.std == pytest.approx((0.229, 0.224, 0.225))
    assert model.frozen_prefixes == ("backbone",)
    assert all(p.requires_grad for p in model.backbone.parameters())  # the trainer freezes; Grad-CAM needs grads
    f = 2 * (40 + 112 + 320)  # meanstd
    head = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    assert sum(p.numel() for p in head) == num_params(model.head) == 2 * f + (2 * f + 2)  # BatchNorm1d + Linear
    assert num_params(model.head) < 0.01 * num_params(model.backbone)
    assert len(model.backbone.blocks) == 7 and isinstance(model.backbone.conv_head, torch.nn.Identity)

    mean = get_model("probe", image_size=64, weights="none", indices=[1, -1], pool="mean", train_backbone=True)
    assert mean.indices == [1, 4] and mean.cam_layer == "backbone.blocks.6"
    assert mean.head[0].num_features == 24 + 320 and not hasattr(mean, "frozen_prefixes")
    early = get_model("probe", image_size=64, weights="none", indices=[2])
    assert early.cam_layer == "backbone.blocks.2" and len(early.backbone.blocks) == 3  # pruned after blocks.2


def test_probe_backbone_sets_cam_layer_and_normalisation():
    model = get_model("probe", image_size=64, backbone="resnet18", weights="none", indices=[-2, -1])
    assert model.cam_layer == "backbone.layer4" and model.head[0].num_features == 2 * (256 + 512)
    get_submodule(model, model.cam_layer)
    assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 2)


@pytest.mark.parametrize("params,key", [({"pool": "max"}, "pool"), ({"indices": [5]}, "indices"),
                                        ({"indices": [-6]}, "indices"), ({"indices": [4, -1]}, "indices"),
                                        ({"indices": []}, "indices"), ({"backbone": "no_such_net"}, "backbone")])
def test_probe_bad_params_name_the_key(params, key):
    with pytest.raises(ValueError, match=f"model_params.{key}"):
        get_model("probe", image_size=64, **{"weights": "none", **params})


def test_probe_checkpoint_rebuilds_with_weights_none(tmp_path):
    model = get_model("probe", image_size=64, weights="packaged", dropout=0.2).eval()
    other = get_model("probe", image_size=64, weights="none", dropout=0.2).eval()
    assert list(other.state_dict()) == list(model.state_dict())  # pruned after loading: same keys
    other.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = model(x)
        torch.testing.assert_close(other(x), y)
    loaded, ckpt = load_model(save_checkpoint(tmp_path / "m.pt", model, 64, run="t"))
    assert ckpt.arch == "probe" and ckpt.cam_layer == "backbone.blocks.6" and "weights" not in ckpt.arch_params
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), y)


def test_probe_gradcam_finite_map_of_input_size():
    torch.manual_seed(0)
    model = get_model("probe", image_size=64, weights="packaged").eval()
    layer = get_submodule(model, model.cam_layer)
    assert not any(isinstance(m, torch.nn.Linear) for m in layer.modules())  # a spatial block, not the head
    x = torch.rand(2, 3, 64, 64)
    with GradCAM(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(1)] * 2)
    assert maps.shape == (2, 64, 64) and np.isfinite(maps).all()
    # the gradient reaches the layer (the map itself may be all zero: a random head, a ReLU'd weighted sum)
    acts = []
    handle = layer.register_forward_hook(lambda m, i, o: acts.append(o))
    grad = torch.autograd.grad(model(x)[:, 1].sum(), acts[0])[0]
    handle.remove()
    assert grad.shape[-2:] == (2, 2) and grad.abs().sum() > 0  # stride 32: a 2x2 map at 64 px


def _patches(n: int = 64, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images; class 1 has a bright 12x12 square somewhere."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 0.5
    y = torch.arange(n) % 2
    for i in torch.nonzero(y).flatten().tolist():
        r, c = torch.randint(0, size - 12, (2,), generator=g).tolist()
        x[i, :, r:r + 12, c:c + 12] = 1.0
    return x, y


def test_probe_learns_with_the_backbone_frozen():
    torch.manual_seed(0)
    model = get_model("probe", image_size=64, weights="packaged")
    mean, std = torch.tensor(model.mean).view(1, 3, 1, 1), torch.tensor(model.std).view(1, 3, 1, 1)
    x, y = _patches()
    x = (x - mean) / std
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.train()
    assert not model.backbone.training and model.head.training  # frozen BatchNorms keep their statistics
    with torch.no_grad():  # the frozen backbone is deterministic: its features once, then head-only steps
        feats = model.features(x)
    opt = torch.optim.Adam(model.head.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model.head(feats), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.9, f"training accuracy {acc:.2f} after 40 head-only Adam steps"
    for k, v in model.backbone.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)


def test_probe_on_packaged_lite2_prunes():
    model = get_model("probe", image_size=64, backbone="efficientnet_lite2", weights="packaged", indices=[-3, -2])
    full = get_model("efficientnet_lite2", image_size=64, weights="none", head="linear")  # no classifier
    assert num_params(model.backbone) < num_params(full.backbone)
    assert model.cam_layer == "backbone.blocks.4" and len(model.backbone.blocks) == 5  # pruned after blocks.4
    assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 2)


def test_probe_trains_on_demo_data_through_the_trainer(tmp_path):
    """The registry's probe in the one training loop, on the procedural demo face-swap set: the backbone
    stays exactly the packaged ImageNet weights (BatchNorm statistics included), only the head learns, and
    validation AUC is far above chance."""
    from deepfake_detect.config import load_params, rename_run
    from deepfake_detect.models.backbones import load_backbone
    from deepfake_detect.splits import SplitOptions, prepare_dataset
    from deepfake_detect.train import fit

    from conftest import PARAMS_YAML

    params = rename_run(load_params(PARAMS_YAML, {"device": "cpu", "demo": {"image_size": 64}, "competition-fakes": {
        "model": "probe", "image_size": 64, "batch_size": 16, "epochs": 3, "lr": 0.01,
        "model_params": {"backbone": "efficientnet_lite0", "weights": "packaged", "dropout": 0.0},
        "eval_test_every_epoch": False, "tta": "flip", "ema_decay": 0.0}}), "competition-fakes", "probe-demo")
    demo = {**params["demo"], "fakes": {"train": 96, "val": 48, "test": 24, "strength": 1.0}}
    prepare_dataset("fakes", params["data"]["fakes"], tmp_path / "data/fakes", SplitOptions(demo_cfg=demo),
                    progress=False)
    out = fit(params["probe-demo"], params, data_dir=tmp_path / "data", models_dir=tmp_path / "models",
              metrics_dir=tmp_path / "metrics", cache_dir=tmp_path / "cache", progress=False)
    assert out["best_val_auc"] >= 0.8, out
    model, ckpt = load_model(tmp_path / "models/probe-demo.pt")
    assert ckpt.arch == "probe" and ckpt.tta == "flip"
    ref = load_backbone("efficientnet_lite0", "packaged").state_dict()
    state = model.backbone.state_dict()
    assert state and all(torch.equal(v, ref[k]) for k, v in state.items() if k in ref)  # frozen, stats too
