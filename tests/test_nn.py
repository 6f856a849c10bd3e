"""Modules and replace_pooling, on hand-made and torchvision models."""

import logging

import pytest
import torch
import torchvision
from torch import nn

import softpool3d as sp


def test_modules_match_functional_and_repr(seed):
    x = torch.randn(2, 3, 5, 6, 7)
    module = sp.SoftPool3d(3, 2, 1, ceil_mode=True)
    torch.testing.assert_close(module(x), sp.soft_pool3d(x, 3, 2, 1, True))
    assert repr(module) == "SoftPool3d(kernel_size=3, stride=2, padding=1, ceil_mode=True)"
    assert repr(sp.SoftPool2d(2)) == "SoftPool2d(kernel_size=2, stride=2, padding=0, ceil_mode=False)"
    assert repr(sp.AdaptiveSoftPool3d((1, None, 2))) == "AdaptiveSoftPool3d(output_size=(1, None, 2))"
    torch.testing.assert_close(sp.AdaptiveSoftPool3d((1, None, 2))(x), sp.adaptive_soft_pool3d(x, (1, 6, 2)))
    torch.testing.assert_close(sp.SoftPool1d(2)(x[:, :, 0, 0]), sp.soft_pool1d(x[:, :, 0, 0], 2))


def test_replace_pooling_resnet18(seed, caplog):
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with caplog.at_level(logging.INFO, logger="softpool3d"):
        returned = sp.replace_pooling(model)
    assert returned is model
    assert "replaced 1 pooling layer" in caplog.text
    assert isinstance(model.maxpool, sp.SoftPool2d)
    assert (model.maxpool.kernel_size, model.maxpool.stride, model.maxpool.padding) == (3, 2, 1)
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d)   # "avg" was not included
    # The stem now feeds layer1 with SoftPool of the stem activations.
    seen = {}
    model.layer1.register_forward_pre_hook(lambda mod, args: seen.setdefault("layer1_in", args[0]))
    with torch.no_grad():
        out = model(x)
        stem = model.relu(model.bn1(model.conv1(x)))
    assert out.shape == (2, 10)
    torch.testing.assert_close(seen["layer1_in"], sp.soft_pool2d(stem, 3, 2, 1))


def test_replace_pooling_avg_includes_adaptive(seed):
    model = sp.replace_pooling(torchvision.models.resnet18(num_classes=5).eval(), include=("max", "avg"))
    assert isinstance(model.avgpool, sp.AdaptiveSoftPool2d)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_replace_pooling_s3d(seed):
    model = torchvision.models.video.s3d(num_classes=7).eval()
    n_max = sum(isinstance(m, nn.MaxPool3d) for m in model.modules())
    geometry = [(m.kernel_size, m.stride, m.padding, m.ceil_mode) for m in model.modules() if isinstance(m, nn.MaxPool3d)]
    sp.replace_pooling(model)
    soft = [m for m in model.modules() if isinstance(m, sp.SoftPool3d)]
    assert n_max >= 4 and len(soft) == n_max
    assert not any(isinstance(m, nn.MaxPool3d) for m in model.modules())
    assert [(m.kernel_size, m.stride, m.padding, m.ceil_mode) for m in soft] == geometry
    with torch.no_grad():
        out = model(torch.randn(1, 3, 16, 224, 224))
    assert out.shape == (1, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize("layer,match", [
    (nn.MaxPool2d(3, dilation=2), r"block\.1 \(MaxPool2d\).*dilation"),
    (nn.MaxPool3d(2, return_indices=True), r"block\.1 \(MaxPool3d\).*return_indices"),
    (nn.AdaptiveMaxPool2d(2, return_indices=True), r"block\.1 \(AdaptiveMaxPool2d\).*return_indices"),
])
def test_replace_pooling_refuses_what_it_cannot_represent(layer, match):
    model = nn.Sequential()
    model.add_module("first", nn.MaxPool2d(2))
    model.add_module("block", nn.Sequential(nn.Identity(), layer))
    with pytest.raises(ValueError, match=match):
        sp.replace_pooling(model)
    assert isinstance(model.first, nn.MaxPool2d)   # nothing was half-replaced


def test_replace_pooling_avg_with_divisor_override_is_refused():
    with pytest.raises(ValueError, match="divisor_override"):
        sp.replace_pooling(nn.Sequential(nn.AvgPool2d(2, divisor_override=3)), include="avg")


def test_replace_pooling_unknown_kind_and_root_pool():
    with pytest.raises(ValueError, match="unknown include"):
        sp.replace_pooling(nn.Sequential(), include=("min",))
    replaced = sp.replace_pooling(nn.MaxPool1d(3, 2, 1, ceil_mode=True))
    assert isinstance(replaced, sp.SoftPool1d) and replaced.ceil_mode is True


def test_pytorchvideo_hub_model_if_installed(seed):
    hub = pytest.importorskip("pytorchvideo.models.hub", reason="pytorchvideo is optional")
    model = hub.slow_r50(pretrained=False)
    n_max = sum(isinstance(m, nn.MaxPool3d) for m in model.modules())
    sp.replace_pooling(model)
    assert sum(isinstance(m, sp.SoftPool3d) for m in model.modules()) == n_max > 0
