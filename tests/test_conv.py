"""softpool3d.models.Conv3d: the per-tap weight gradient against nn.Conv3d's autograd in float64, where the
tap path is taken and where it is not, that the models train through it, and that every other autograd
feature (double backward, torch.func, forward mode, parametrised weights) gives what nn.Conv3d gives."""

import pytest
import torch
import torch.autograd.forward_ad as forward_ad
from torch import nn
from torch.func import functional_call, grad, jvp, vmap
from torch.nn.utils.parametrizations import spectral_norm

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


def last_stage_pair(dtype=torch.float64):
    """nn.Conv3d and Conv3d with the same weights, and an input shaped as r3d_10's last stage sees it
    (3x3x3 kernel, 1x2x2 positions per clip), on which Conv3d takes the tap path."""
    plain, mine = pair(32, 32, 3, 1, 1, 1, True)
    plain, mine = plain.to(dtype), mine.to(dtype)
    x = torch.randn(2, 32, 1, 2, 2, dtype=dtype, requires_grad=True)
    assert mine.uses_tap_gradient(x)
    return plain, mine, x


def test_plain_backward_takes_the_tap_path_and_create_graph_does_not(seed, monkeypatch):
    calls = []
    real = _conv.tap_weight_grad
    monkeypatch.setattr(_conv, "tap_weight_grad", lambda *args: calls.append(1) or real(*args))
    _, mine, x = last_stage_pair()
    mine(x).tanh().sum().backward()
    assert len(calls) == 1
    torch.autograd.grad(mine(x).tanh().sum(), mine.weight, create_graph=True)
    assert len(calls) == 1


def test_double_backward_matches_conv3d(seed):
    """A gradient penalty: the gradient of |d loss / d (x, w)|^2 with respect to x, the weight and the bias."""
    plain, mine, x = last_stage_pair()

    def penalty_grads(conv):
        first = torch.autograd.grad(conv(x).tanh().sum(), [x, conv.weight], create_graph=True)
        penalty = sum(g.square().sum() for g in first)
        return first + torch.autograd.grad(penalty, [x, conv.weight, conv.bias])

    names = ("d loss/dx", "d loss/dw", "d penalty/dx", "d penalty/dw", "d penalty/db")
    for name, expected, got in zip(names, penalty_grads(plain), penalty_grads(mine)):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12, msg=name)


def test_torch_func_grad_and_per_sample_gradients_match_conv3d(seed):
    plain, mine, x = last_stage_pair()
    params = {name: p.detach() for name, p in plain.named_parameters()}
    x = x.detach()

    def loss(conv, params, clips):
        return functional_call(conv, params, (clips,)).tanh().sum()

    def per_sample(conv):
        return vmap(grad(lambda p, clip: loss(conv, p, clip[None])), in_dims=(None, 0))(params, x)

    for name in params:
        torch.testing.assert_close(grad(lambda p: loss(mine, p, x))(params)[name],
                                   grad(lambda p: loss(plain, p, x))(params)[name], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(per_sample(mine)[name], per_sample(plain)[name], rtol=1e-10, atol=1e-12)
    assert per_sample(mine)["weight"].shape == (2, *params["weight"].shape)


def test_forward_mode_ad_matches_conv3d(seed):
    plain, mine, x = last_stage_pair()
    x = x.detach()
    tangents = {name: torch.randn_like(p) for name, p in plain.named_parameters()}
    x_tangent = torch.randn_like(x)
    # torch.autograd.forward_ad, tangents on the input and on the parameters
    results = []
    for conv in (plain, mine):
        with forward_ad.dual_level():
            params = {name: forward_ad.make_dual(p.detach(), tangents[name]) for name, p in conv.named_parameters()}
            out = functional_call(conv, params, (forward_ad.make_dual(x, x_tangent),))
            results.append(forward_ad.unpack_dual(out))
    torch.testing.assert_close(results[1].primal, results[0].primal, rtol=0, atol=0)
    torch.testing.assert_close(results[1].tangent, results[0].tangent, rtol=1e-10, atol=1e-12)
    # torch.func.jvp of the input only, on the module as it is (parameters requiring grad)
    expected, got = (jvp(conv, (x,), (x_tangent,)) for conv in (plain, mine))
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], expected[1], rtol=1e-10, atol=1e-12)


def test_spectral_norm_runs_once_per_forward_and_trains_as_conv3d(seed):
    plain, mine, x = last_stage_pair(torch.float32)
    x = x.detach()
    for conv in (plain, mine):
        torch.manual_seed(seed)                            # the same random start of the power iteration
        spectral_norm(conv)
    assert mine.uses_tap_gradient(x)                      # a parametrised weight keeps the tap path
    plain.weight                                           # one power iteration on each, to stay in step
    norms = [conv.parametrizations.weight[0] for conv in (plain, mine)]
    runs = {id(norm): 0 for norm in norms}
    for norm in norms:
        norm.register_forward_hook(lambda module, args, out: runs.__setitem__(id(module), runs[id(module)] + 1))
    optimizers = [torch.optim.SGD(conv.parameters(), lr=0.1) for conv in (plain, mine)]
    for step in range(5):
        outputs = []
        for conv, optimizer in zip((plain, mine), optimizers):
            optimizer.zero_grad()
            outputs.append(conv(x))
            outputs[-1].tanh().square().mean().backward()
            optimizer.step()
        assert list(runs.values()) == [step + 1, step + 1], "power iterations per forward"
        torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-6, atol=1e-6, msg=f"output at step {step}")
    torch.testing.assert_close(norms[1]._u, norms[0]._u, rtol=1e-6, atol=1e-6)
