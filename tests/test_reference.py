"""The PyTorch reference is the oracle for every kernel, so it is checked first: against
plain-Python loops, and its closed-form backward against autograd and finite differences."""

import pytest
import torch

from softpool3d.ops import reference
from softpool3d.ops._geometry import adaptive_windows, pool_windows

from helpers import naive_soft_pool

CASES = [
    # spatial, kernel, stride, padding, ceil_mode
    ((7,), (3,), (2,), (1,), True),
    ((9,), (2,), (3,), (0,), False),
    ((5, 6), (2, 3), (1, 2), (1, 1), False),
    ((5, 7), (3, 3), (2, 2), (1, 1), True),
    ((4, 5, 6), (2, 2, 2), (2, 2, 2), (0, 0, 0), True),
    ((5, 4, 7), (3, 2, 3), (2, 1, 2), (1, 1, 0), False),
]


@pytest.mark.parametrize("spatial,kernel,stride,padding,ceil_mode", CASES)
def test_reference_matches_naive_loops(seed, spatial, kernel, stride, padding, ceil_mode):
    x = torch.randn((2, 3) + spatial, dtype=torch.float64) * 4
    windows = pool_windows(spatial, kernel, stride, padding, ceil_mode)
    torch.testing.assert_close(reference.forward(x, windows), naive_soft_pool(x, windows), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spatial,out", [((7,), (3,)), ((5, 9), (2, 4)), ((4, 5, 7), (3, 2, 5)), ((6, 6), (1, 1))])
def test_reference_adaptive_matches_naive_loops(seed, spatial, out):
    x = torch.randn((2, 2) + spatial, dtype=torch.float64) * 4
    windows = adaptive_windows(spatial, out)
    torch.testing.assert_close(reference.forward(x, windows), naive_soft_pool(x, windows), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spatial,kernel,stride,padding,ceil_mode", CASES)
def test_reference_backward_is_the_autograd_gradient(seed, spatial, kernel, stride, padding, ceil_mode):
    x = (torch.randn((2, 2) + spatial, dtype=torch.float64) * 3).requires_grad_(True)
    windows = pool_windows(spatial, kernel, stride, padding, ceil_mode)
    y = reference.forward(x, windows)
    grad = torch.randn_like(y)
    (expected,) = torch.autograd.grad(y, x, grad)
    torch.testing.assert_close(reference.backward(grad, x.detach(), windows), expected)
    assert torch.autograd.gradcheck(lambda t: reference.forward(t, windows), (x,))


def test_reference_non_finite_rules():
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([[[1.0, nan, 2.0, 3.0, inf, 1.0, -inf, 2.0, -inf, -inf]]], dtype=torch.float64)
    windows = pool_windows((10,), (2,), (2,), (0,), False)
    y = reference.forward(x, windows)[0, 0]
    assert torch.isnan(y[0])
    w = torch.sigmoid(torch.tensor(1.0, dtype=torch.float64))  # softmax weight of 3 against 2
    torch.testing.assert_close(y[1], 3.0 * w + 2.0 * (1 - w))
    assert y[2] == inf and y[3] == 2.0 and y[4] == -inf
    torch.testing.assert_close(y, naive_soft_pool(x, windows)[0, 0], equal_nan=True)
