"""NPR (Tan et al., "Rethinking the Up-Sampling Operations in CNN-based Generative Network for Generalizable
Deepfake Detection", CVPR 2024): a detector of the traces that up-sampling leaves in generated images.

The input is the neighbouring-pixel residual ``x - up(down(x))`` (nearest interpolation, factor 2): each
pixel minus the top-left pixel of its 2x2 block, which is zero for an image a nearest x2 up-sampler made and
carries the local correlation that generators' up-sampling layers imprint. It feeds a small ResNet trained
from scratch: the stem, ``layer1`` and ``layer2`` of a torchvision ResNet-50 (no pretrained weights),
global average pooling and one linear output. As in the authors' code the stem convolution is 3x3 with
stride 2 (``stem_kernel: 7`` gives torchvision's 7x7 one instead) and the residual is scaled by 2/3;
1,437,761 parameters (1,445,441 with the 7x7 stem), whatever the input size. The authors normalise inputs
with the ImageNet statistics; Grad-CAM looks at ``layer2`` (the last block, stride 8).

The single output ``z`` is returned as the logits ``(-z/2, z/2)`` (as ``meso.py`` does): softmax gives
P(fake) = sigmoid(z) and cross-entropy is the authors' binary cross-entropy, with their parameter count.

The residual lives at the pixel grid: resizing an image (the trainer's ``image_size``) resamples it away,
so train and score NPR at the images' own size. Its authors report it fragile under JPEG re-compression.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register_model

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """``x - up(down(x))`` with nearest interpolation by a factor of 2 (N x C x H x W, H and W even)."""
    down = F.interpolate(x, scale_factor=0.5, mode="nearest")
    return x - F.interpolate(down, size=x.shape[-2:], mode="nearest")


class NPRNet(nn.Module):
    def __init__(self, stem_kernel: int = 3):
        super().__init__()
        from torchvision.models import resnet50

        if stem_kernel not in (3, 7):
            raise ValueError(f"npr: model_params.stem_kernel must be 3 (the authors') or 7 (ResNet-50's), "
                             f"got {stem_kernel!r}")
        net = resnet50(weights=None)
        if stem_kernel == 3:
            net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as resnet50 inits
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2 = net.layer1, net.layer2
        self.num_features = 512
        self.fc = nn.Linear(self.num_features, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(npr_residual(x) * (2.0 / 3.0))
        return self.layer2(self.layer1(self.maxpool(self.relu(self.bn1(x)))))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return torch.cat([-z / 2, z / 2], 1)  # softmax -> P(fake) = sigmoid(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("npr", cam_layer="layer2", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                description="NPR: nearest up-sampling residual into ResNet-50 stem + layer1-2 (1,437,761 params)")
def npr(image_size: int = 256, stem_kernel: int = 3) -> NPRNet:
    """``image_size`` must be even (the residual works on 2x2 blocks); the network itself takes any size."""
    if image_size % 2:
        raise ValueError(f"npr needs an even image_size (its residual works on 2x2 pixel blocks), got {image_size}")
    return NPRNet(stem_kernel=stem_kernel)
