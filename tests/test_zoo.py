"""The companion study's model zoo: MesoNet (meso4, mesoinception4) and any timm architecture by name."""
from __future__ import annotations

import pytest
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from deepfake_detect.checkpoint import load_model, save_checkpoint
from deepfake_detect.models import get_model, get_submodule, list_models, num_params


@pytest.mark.parametrize("name,count", [("meso4", 27_977), ("mesoinception4", 28_615)])
def test_mesonet_paper_counts_and_shapes(name, count):
    assert name in list_models()
    model = get_model(name, image_size=256).eval()
    assert num_params(model) == count  # the MesoNet paper, 256x256 input
    assert model.mean == (0.0, 0.0, 0.0) and model.std == (1.0, 1.0, 1.0)
    with torch.no_grad():
        logits = model(torch.rand(3, 3, 256, 256))
    assert logits.shape == (3, 2)
    # the paper's single sigmoid output: softmax(-z/2, z/2)[1] = sigmoid(z)
    z = logits[:, 1] - logits[:, 0]
    torch.testing.assert_close(logits.softmax(1)[:, 1], torch.sigmoid(z))
    small = get_model(name, image_size=96).eval()  # other sizes work (flatten size follows)
    assert small(torch.rand(2, 3, 96, 96)).shape == (2, 2)


@pytest.mark.parametrize("name,size", [("meso4", 64), ("mesoinception4", 64), ("efficientnet_lite0", 32)])
def test_gradcam_runs_at_cam_layer(name, size):
    model = get_model(name, image_size=size).eval()
    layer = get_submodule(model, model.cam_layer)
    with GradCAM(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=torch.rand(1, 3, size, size), targets=[ClassifierOutputTarget(1)])
    assert maps.shape == (1, size, size)


@pytest.mark.parametrize("name,backbone_params", [("resnet18", 11_689_512)])
def test_any_timm_architecture(name, backbone_params):
    model = get_model(name, image_size=64)
    assert num_params(model.backbone) == backbone_params  # timm's, with its ImageNet classifier
    assert num_params(model) == backbone_params + 272_834  # + the course head 1000→256→64→2
    get_submodule(model, model.cam_layer)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 2)


def test_unknown_model_names_the_name():
    with pytest.raises(ValueError, match="unknown model 'no_such_net'"):
        get_model("no_such_net")


def test_meso_checkpoint_round_trip(tmp_path):
    model = get_model("mesoinception4", image_size=128, dropout=0.3).eval()
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        y = model(x)
    loaded, ckpt = load_model(save_checkpoint(tmp_path / "m.pt", model, 128, run="t"))
    assert ckpt.cam_layer == "features.3.1"
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), y)
