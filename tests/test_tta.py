"""Test-time augmentation (engine.tta_views, engine.predict(tta=...)): the views, exact translations, averaging."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from deepfake_detect.engine import TTA_MODES, TTAError, predict, tta_shift, tta_views
from deepfake_detect.errors import UserError


def test_tta_views_shapes_and_flip():
    x = torch.randn(2, 3, 64, 64)
    assert TTA_MODES == ("none", "flip", "flip_shift")
    counts = {mode: len(tta_views(x, mode)) for mode in TTA_MODES}
    assert counts == {"none": 1, "flip": 2, "flip_shift": 10}
    views = tta_views(x, "flip_shift")
    assert all(v.shape == x.shape for v in views)
    assert torch.equal(views[0], x) and torch.equal(views[1], x.flip(-1))
    with pytest.raises(UserError, match="'rotate'"):
        tta_views(x, "rotate")


@pytest.mark.parametrize("size", [64, 48, 20])
def test_flip_shift_views_are_pixel_exact_translations(size):
    x = torch.randn(2, 3, size, size)
    s = tta_shift(x)
    assert s == max(1, size // 32)
    views = tta_views(x, "flip_shift")
    for base, shifted in ((views[0], views[2:6]), (views[1], views[6:10])):
        right, left, down, up = shifted
        assert torch.equal(right[..., :, s:], base[..., :, :-s])  # moved right by s: column j shows column j - s
        assert torch.equal(left[..., :, :-s], base[..., :, s:])
        assert torch.equal(down[..., s:, :], base[..., :-s, :])
        assert torch.equal(up[..., :-s, :], base[..., s:, :])
        # the border is the reflection of the image (no zeros, no resampling)
        assert torch.equal(right[..., :, :s], base[..., :, 1:s + 1].flip(-1))


class _FlipInvariant(nn.Module):
    """Logits g(x) + g(flip x): the same for an image and its mirror image."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.g = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))

    def forward(self, x):
        return self.g(x) + self.g(x.flip(-1))


def _loader(n=10, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, size, size, generator=g), torch.arange(n) % 2
    return [(x[i:i + 4], y[i:i + 4]) for i in range(0, n, 4)]


def test_predict_flip_on_flip_invariant_model_equals_none():
    model = _FlipInvariant()
    model(torch.zeros(1, 3, 16, 16))  # materialise the lazy layer
    cpu = torch.device("cpu")
    p0, y0, l0 = predict(model, _loader(), cpu, progress=False)
    p1, y1, l1 = predict(model, _loader(), cpu, progress=False, tta="flip")
    np.testing.assert_allclose(p1, p0, atol=1e-6)
    assert np.array_equal(y0, y1) and l1 == pytest.approx(l0, abs=1e-6)


def test_predict_averages_probabilities_and_loss_is_log_of_mean():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 2))
    cpu = torch.device("cpu")
    loader = _loader(size=32)
    probs, labels, loss = predict(model, loader, cpu, progress=False, tta="flip_shift")
    x = torch.cat([b[0] for b in loader])
    with torch.no_grad():
        views = torch.stack([torch.softmax(model(v), 1) for v in tta_views(x, "flip_shift")])
    mean = views.mean(0).numpy()
    np.testing.assert_allclose(probs, mean, atol=1e-6)
    assert not np.allclose(probs, views[0].numpy(), atol=1e-4)  # the views do change the scores
    assert loss == pytest.approx(-np.log(mean[np.arange(len(labels)), labels]).mean(), rel=1e-5)
    with pytest.raises(TTAError, match="tta: unknown test-time augmentation 'nope'"):
        predict(model, loader, cpu, progress=False, tta="nope")
