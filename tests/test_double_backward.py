"""Second and higher derivatives of SoftPool (gradient penalties, MAML, Hessian-vector products), on every
backend: the first backward is each backend's kernel, its derivative the closed form in
``reference.backward_grads``. Checked by ``gradgradcheck`` in float64 and against autograd run twice through
the differentiable float64 reference forward. Without a GPU the Triton kernels run in Triton's interpreter."""


import pytest
import torch

import softpool3d as sp
from softpool3d.ops import force_backend, reference
from softpool3d.ops._geometry import AxisWindows, adaptive_windows

from helpers import as_tuple, windows_for

SOFT = {1: sp.soft_pool1d, 2: sp.soft_pool2d, 3: sp.soft_pool3d}
ADAPTIVE = {1: sp.adaptive_soft_pool1d, 2: sp.adaptive_soft_pool2d, 3: sp.adaptive_soft_pool3d}


POOL_CASES = [  # dims, shape, kernel, stride, padding, ceil_mode
    (1, (2, 2, 9), 3, 2, 1, True),                        # overlapping, padded, ceil mode
    (2, (1, 2, 5, 6), 3, 2, 1, True),
    (2, (1, 2, 4, 6), 2, 2, 0, False),                    # disjoint windows
    (3, (1, 2, 4, 5, 5), 3, 2, 1, True),                  # the ResNet stem pool
    (3, (1, 1, 4, 5, 4), (2, 3, 1), (1, 2, 3), (1, 1, 0), False),
]
ADAPTIVE_CASES = [  # dims, shape, output_size
    (1, (2, 2, 5), 7),                                    # more outputs than inputs: overlapping windows
    (2, (1, 2, 5, 7), (3, 4)),
    (3, (1, 2, 3, 5, 4), (2, 3, 2)),
    (3, (1, 2, 3, 4, 3), 1),                              # global
]


def _pool(dims, kernel, stride, padding, ceil_mode):
    return lambda t: SOFT[dims](t, kernel, stride, padding, ceil_mode)


def _adaptive(dims, out):
    return lambda t: ADAPTIVE[dims](t, out)


def _case_params():
    for dims, shape, *args in POOL_CASES:
        yield pytest.param(shape, _pool(dims, *args), lambda x, d=dims, a=args: windows_for(x, d, *a),
                           id=f"pool{dims}d-{shape}-{args}")
    for dims, shape, out in ADAPTIVE_CASES:
        yield pytest.param(shape, _adaptive(dims, out),
                           lambda x, d=dims, o=out: adaptive_windows(x.shape[2:], as_tuple(o, d)),
                           id=f"adaptive{dims}d-{shape}-{out}")


CASES = list(_case_params())


@pytest.mark.parametrize("shape,op,windows", CASES)
def test_gradgradcheck(device, seed, shape, op, windows):
    x = (torch.randn(shape, dtype=torch.float64, device=device) * 2).requires_grad_(True)
    # fast_mode: the interpreter makes each of the check's many calls slow.
    assert torch.autograd.gradgradcheck(op, (x,), fast_mode=True)


@pytest.mark.parametrize("shape,op,windows", CASES)
def test_hessian_vector_products_match_autograd_through_the_reference(device, seed, shape, op, windows):
    """d/dx and d/dgrad of <dL/dx, v> against autograd run twice through the float64 reference forward."""
    x = (torch.randn(shape, dtype=torch.float64, device=device) * 3).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    y = op(x)
    grad = torch.randn(y.shape, dtype=torch.float64, device=device, requires_grad=True)
    grad_ref = grad.detach().clone().requires_grad_(True)
    v = torch.randn(shape, dtype=torch.float64, device=device)

    (gx,) = torch.autograd.grad(y, x, grad, create_graph=True)
    hvp_x, hvp_grad = torch.autograd.grad(gx, (x, grad), v)
    y_ref = reference.forward(x_ref, windows(x_ref))
    (gx_ref,) = torch.autograd.grad(y_ref, x_ref, grad_ref, create_graph=True)
    expected_x, expected_grad = torch.autograd.grad(gx_ref, (x_ref, grad_ref), v)

    torch.testing.assert_close(gx, gx_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(hvp_x, expected_x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(hvp_grad, expected_grad, rtol=1e-10, atol=1e-10)


def test_gradient_penalty_trains(device, seed):
    """A WGAN-GP-style penalty on ||dL/dx||: the parameters before the pool get its gradient."""
    conv = torch.nn.Conv3d(2, 3, 3, padding=1).double().to(device)
    x = torch.randn(2, 2, 4, 6, 6, dtype=torch.float64, device=device, requires_grad=True)
    score = sp.soft_pool3d(conv(x), 3, 2, 1, True).square().mean()
    (gx,) = torch.autograd.grad(score, x, create_graph=True)
    penalty = (gx.flatten(1).norm(dim=1) - 1).square().mean()
    penalty.backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert torch.isfinite(conv.weight.grad).all()


def test_third_derivative_matches_the_reference(seed):
    """The double backward is made of torch ops, so the third derivative works too (checked on the reference)."""
    x = (torch.randn(1, 2, 5, 6, dtype=torch.float64) * 2).requires_grad_(True)
    windows = windows_for(x, 2, 3, 2, 1, True)

    def third(pool, t):
        (g1,) = torch.autograd.grad(pool(t).square().sum(), t, create_graph=True)
        (g2,) = torch.autograd.grad(g1.square().sum(), t, create_graph=True)
        return torch.autograd.grad(g2.sum(), t)[0]

    with force_backend("reference"):
        torch.testing.assert_close(third(lambda t: sp.soft_pool2d(t, 3, 2, 1, True), x),
                                   third(lambda t: reference.forward(t, windows), x), rtol=1e-10, atol=1e-10)


def test_double_backward_of_non_finite_windows_follows_the_first_backwards_rules():
    """-inf entries and all -inf windows get zero weight; a +inf window's gradient is constant in x; NaN is NaN."""
    x = torch.tensor([[[0.5, float("-inf"), 1.0, 2.0, float("-inf"), float("-inf"), float("inf"), 3.0]]],
                     dtype=torch.float64)
    windows = windows_for(x, 1, 2)
    grad = torch.tensor([[[1.0, 2.0, -1.0, 0.5]]], dtype=torch.float64)
    v = torch.randn_like(x)
    grad_grad, grad_x = reference.backward_grads(v, grad, x, windows)
    finite = torch.tensor([[[0.5, 1.0, 2.0]]], dtype=torch.float64, requires_grad=True)
    finite_grad = grad[..., :2].clone().requires_grad_(True)
    finite_windows = (AxisWindows(3, (0, 1), (1, 3)),)  # [0.5] and [1.0, 2.0]: the -inf entries left out
    (dx,) = torch.autograd.grad(reference.forward(finite, finite_windows), finite, finite_grad, create_graph=True)
    expected_x, expected_grad = torch.autograd.grad(dx, (finite, finite_grad), v[..., [0, 2, 3]])
    torch.testing.assert_close(grad_x[..., [0, 2, 3]], expected_x)
    torch.testing.assert_close(grad_grad[..., :2], expected_grad)
    assert grad_x[..., 1].item() == 0 and torch.equal(grad_x[..., 4:], torch.zeros(1, 1, 4, dtype=torch.float64))
    assert grad_grad[..., 2].item() == 0 and grad_grad[..., 3].item() == v[..., 6].item()
    nan_x = x.clone()
    nan_x[..., 3] = float("nan")
    grad_grad, grad_x = reference.backward_grads(v, grad, nan_x, windows)
    assert grad_grad[..., 1].isnan().all() and grad_x[..., 2:4].isnan().all()
    assert not grad_x[..., :2].isnan().any() and not grad_x[..., 4:].isnan().any()


def test_forward_mode_ad_is_refused_not_dropped(device):
    """The ops have no forward-mode formula: a dual tensor's tangent must not silently vanish (zero JVPs)."""
    import torch.autograd.forward_ad as fwAD

    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, device=device)
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.ones_like(x))
        with pytest.raises(NotImplementedError, match="no forward-mode AD"):
            sp.soft_pool2d(dual, 3, 2, 1, True)
        with pytest.raises(NotImplementedError, match="no forward-mode AD"):
            sp.adaptive_soft_pool2d(dual, 2)
        plain = sp.soft_pool2d(x, 3, 2, 1, True)              # no tangent: served as usual
    torch.testing.assert_close(plain, sp.soft_pool2d(x, 3, 2, 1, True))


def test_opcheck_backward_ops(seed):
    """torch.library's own checks of the backward ops, now differentiable: schema, fake kernel, autograd
    registration and AOT dispatch (torch.compile's double backward path)."""
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.softpool3d.soft_pool_backward.default, (grad, x, [3, 3], [2, 2], [1, 1], True))
    grad = torch.randn(1, 2, 2, 4, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.softpool3d.adaptive_soft_pool_backward.default, (grad, x, [2, 4]))
