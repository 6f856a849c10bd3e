"""SoftPool as a drop-in: in-place ops after the pool, and every torchvision model with a pool.

The zoo sweep runs a representative set in ``make test``; the rest is marked ``zoo``
(``pytest -m zoo tests/test_dropin.py`` runs it).
"""

import warnings

import pytest
import torch
import torchvision
from torch import nn

import softpool3d as sp

TORCH_POOLS = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
)
SOFT_POOLS = (sp.SoftPool1d, sp.SoftPool2d, sp.SoftPool3d,
              sp.AdaptiveSoftPool1d, sp.AdaptiveSoftPool2d, sp.AdaptiveSoftPool3d)

POOLS = {
    "soft_pool1d": (lambda x: sp.soft_pool1d(x, 3, 2, 1), (2, 3, 9)),
    "soft_pool2d": (lambda x: sp.soft_pool2d(x, 2), (2, 3, 6, 7)),
    "soft_pool3d": (lambda x: sp.soft_pool3d(x, 3, 2, 1, True), (2, 3, 5, 6, 7)),
    "adaptive_soft_pool2d": (lambda x: sp.adaptive_soft_pool2d(x, (2, 3)), (2, 3, 5, 7)),
    "adaptive_soft_pool3d": (lambda x: sp.adaptive_soft_pool3d(x, 1), (2, 3, 4, 5, 6)),
}


@pytest.mark.parametrize("name", sorted(POOLS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inplace_op_on_the_output_keeps_the_exact_gradient(seed, name, dtype):
    fn, shape = POOLS[name]
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    y = fn(x)
    y.mul_(2.0).relu_()   # both modify the op's output in place (as Dropout(inplace=True) does)
    y.sum().backward()
    x_out_of_place = x.detach().clone().requires_grad_(True)
    (fn(x_out_of_place) * 2.0).relu().sum().backward()
    torch.testing.assert_close(x.grad, x_out_of_place.grad)


def _saved_bytes(fn, x) -> tuple[int, list]:
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(t.numel() * t.element_size() for t in saved), saved


def test_only_the_input_is_saved_for_backward(seed):
    x = torch.randn(2, 4, 8, 10, 12, requires_grad=True)
    soft_bytes, saved = _saved_bytes(lambda t: sp.soft_pool3d(t, 3, 2, 1), x)
    assert len(saved) == 1 and saved[0] is x
    assert soft_bytes == x.numel() * x.element_size()
    max_bytes, _ = _saved_bytes(lambda t: torch.nn.functional.max_pool3d(t, 3, 2, 1), x)
    assert soft_bytes < max_bytes   # max pooling also keeps int64 indices
    _, saved = _saved_bytes(lambda t: sp.adaptive_soft_pool3d(t, 1), x)
    assert len(saved) == 1 and saved[0] is x


# ------------------------------------------------------------------ torchvision's model zoo

IMAGE_DEFAULT, VIDEO_DEFAULT = (2, 3, 64, 64), (2, 3, 8, 64, 64)
# The smallest inputs that these architectures accept (fixed position embeddings or pools).
INPUT_SHAPES = {
    "inception_v3": (2, 3, 299, 299),
    "maxvit_t": (2, 3, 224, 224),
    "s3d": (2, 3, 16, 224, 224),
    "mvit_v1_b": (1, 3, 16, 224, 224),
    "mvit_v2_s": (1, 3, 16, 224, 224),
}
REPRESENTATIVE = {
    "efficientnet_b0", "efficientnet_v2_s", "googlenet", "inception_v3", "densenet121",
    "mobilenet_v3_small", "regnet_y_400mf", "resnet18", "vgg11",
}


VIDEO_MODELS = torchvision.models.list_models(module=torchvision.models.video)
IMAGE_MODELS = torchvision.models.list_models(module=torchvision.models)


def _zoo() -> list:
    """Every classification and video model; the video models and REPRESENTATIVE run in make test."""
    return [pytest.param(name, id=name, marks=() if name in REPRESENTATIVE or name in VIDEO_MODELS
                         else (pytest.mark.zoo,))
            for name in IMAGE_MODELS + VIDEO_MODELS]


@pytest.mark.parametrize("name", _zoo())
def test_replace_pooling_on_torchvision_models_trains(seed, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torchvision's init-weights notices
        model = torchvision.models.get_model(name, weights=None, num_classes=5)
    pools = sum(isinstance(m, TORCH_POOLS) for m in model.modules())
    if pools == 0:
        pytest.skip(f"{name} has no max or average pooling layer")
    sp.replace_pooling(model, include=("max", "avg"))
    left = [n for n, m in model.named_modules() if isinstance(m, TORCH_POOLS)]
    assert not left, f"pools left in {name}: {left}"
    assert sum(isinstance(m, SOFT_POOLS) for m in model.modules()) == pools
    x = torch.randn(INPUT_SHAPES.get(name, VIDEO_DEFAULT if name in VIDEO_MODELS else IMAGE_DEFAULT))
    model.train()
    out = model(x)
    outputs = [o for o in (out if isinstance(out, tuple) else (out,)) if isinstance(o, torch.Tensor)]
    assert outputs[0].shape == (x.shape[0], 5)
    sum(o.square().mean() for o in outputs).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    first = next(p for p in model.parameters() if p.requires_grad)
    assert first.grad.abs().sum() > 0   # the gradient reached the stem, through every SoftPool
