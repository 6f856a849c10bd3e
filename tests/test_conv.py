"""softpool3d.models.Conv3d: the per-tap weight gradient against nn.Conv3d's autograd in float64, where the
tap path is taken and where it is not, and that the models train through it."""

import pytest
import torch
from torch import nn

from softpool3d.models import Conv3d, _conv, build_model


def pair(cin, cout, kernel, stride, padding, dilation, bias):
    plain = nn.Conv3d(cin, cout, kernel, stride, padding, dilation, bias=bias).double()
    mine = Conv3d(cin, cout, kernel, stride, padding, dilation, bias=bias).double()
    mine.load_state_dict(plain.state_dict())
    return plain, mine


@pytest.mark.parametrize("shape, cout, kernel, stride, padding, dilation, bias", [
    ((2, 5, 3, 6, 7), 4, 3, (1, 2, 2), (1, 0, 2), (1, 1, 2), True),      # uneven stride, padding, dilation
    ((3, 4, 1, 2, 2), 6, (1, 3, 3), 2, 1, 1, False),                      # r3d's last stage: 1x2x2 inputs
    ((1, 3, 5, 9, 8), 2, (3, 1, 2), (2, 3, 1), (0, 0, 1), (2, 1, 1), True),
    ((2, 6, 2, 3, 3), 7, 1, 1, 0, 1, False),                              # a 1x1x1 projection
])
def test_tap_weight_gradient_matches_conv3d(seed, monkeypatch, shape, cout, kernel, stride, padding, dilation, bias):
    monkeypatch.setattr(_conv, "TAP_GRADIENT_RATIO", 0)    # every layer takes the tap path
    plain, mine = pair(shape[1], cout, kernel, stride, padding, dilation, bias)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    assert mine.uses_tap_gradient(x)
    expected, got = plain(x), mine(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    upstream = torch.randn_like(expected)
    wrt = [x, plain.weight] + ([plain.bias] if bias else [])
    grads_plain = torch.autograd.grad((expected * upstream).sum(), wrt)
    grads_mine = torch.autograd.grad((got * upstream).sum(), [x, mine.weight] + ([mine.bias] if bias else []))
    for name, a, b in zip(("input", "weight", "bias"), grads_plain, grads_mine):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=f"{name} gradient")


def test_rows_are_gathered_in_chunks_when_large(seed, monkeypatch):
    monkeypatch.setattr(_conv, "TAP_GRADIENT_RATIO", 0)
    monkeypatch.setattr(_conv, "_ROWS_BYTES", 1)           # one input channel per product
    plain, mine = pair(5, 3, 3, 1, 1, 1, False)
    x = torch.randn(2, 5, 3, 4, 4, dtype=torch.float64)
    grad_plain = torch.autograd.grad(plain(x).square().sum(), plain.weight)[0]
    grad_mine = torch.autograd.grad(mine(x).square().sum(), mine.weight)[0]
    torch.testing.assert_close(grad_mine, grad_plain, rtol=1e-12, atol=1e-12)


def test_when_the_tap_path_is_taken():
    deep = Conv3d(512, 512, 3, padding=1, bias=False)
    x = torch.randn(8, 512, 1, 2, 2)          # 32 output positions for 7M weights
    assert deep.uses_tap_gradient(x)
    assert not Conv3d(64, 64, 3, padding=1).uses_tap_gradient(torch.randn(8, 64, 4, 16, 16))   # many positions
    with torch.no_grad():
        assert not deep.uses_tap_gradient(x)
    deep.weight.requires_grad_(False)
    assert not deep.uses_tap_gradient(x)
    deep.weight.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not deep.uses_tap_gradient(x)
    grouped = Conv3d(512, 512, 3, padding=1, groups=2, bias=False)
    assert not grouped.uses_tap_gradient(x)
    assert not deep.uses_tap_gradient(x.half())
    # Inside the tap path the gradient is that of nn.Conv3d (float32, real sizes).
    plain = nn.Conv3d(512, 512, 3, padding=1, bias=False)
    plain.load_state_dict(deep.state_dict())
    upstream = torch.randn(8, 512, 1, 2, 2)
    a = torch.autograd.grad((plain(x) * upstream).sum(), plain.weight)[0]
    b = torch.autograd.grad((deep(x) * upstream).sum(), deep.weight)[0]
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_r3d_10_trains_the_same_with_and_without_the_tap_path(seed, monkeypatch):
    # The main job's model and clip size, where stages 3 and 4 take the tap path.
    torch.manual_seed(seed)
    model = build_model("r3d_10", num_classes=4, pool="soft").double()
    x = torch.randn(2, 3, 8, 64, 64, dtype=torch.float64)
    taken = []
    hooks = [m.register_forward_pre_hook(lambda m, a: taken.append(m.uses_tap_gradient(a[0])))
             for m in model.modules() if isinstance(m, Conv3d)]
    loss = model(x).logsumexp(1).sum()
    for hook in hooks:
        hook.remove()
    assert any(taken) and not all(taken)
    with_tap = torch.autograd.grad(loss, list(model.parameters()))
    monkeypatch.setattr(_conv, "TAP_GRADIENT_RATIO", float("inf"))
    without = torch.autograd.grad(model(x).logsumexp(1).sum(), list(model.parameters()))
    for (name, _), a, b in zip(model.named_parameters(), with_tap, without):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)
