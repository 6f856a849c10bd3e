"""The operator's contract, run on every available backend (reference, cpp, triton), in the manner of
torchvision's RoIOpTester: values and exact gradients against the float64 reference for 1D/2D/3D, regular
and adaptive windows, every layout and dtype, huge magnitudes and non-finite input. Without a GPU the
Triton kernels run on CPU tensors in Triton's interpreter. Backend-specific tests stay in test_ops.py
(C++), test_triton.py and test_reference.py (the reference against plain loops)."""

import random

import pytest
import torch
import torch.nn.functional as F

import softpool3d as sp
from softpool3d.ops import reference
from softpool3d.ops._geometry import adaptive_windows

from helpers import as_tuple, windows_for

SOFT = {1: sp.soft_pool1d, 2: sp.soft_pool2d, 3: sp.soft_pool3d}
ADAPTIVE = {1: sp.adaptive_soft_pool1d, 2: sp.adaptive_soft_pool2d, 3: sp.adaptive_soft_pool3d}
CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}
NAN, INF = float("nan"), float("inf")


def _check(x, op, windows, grad=None, rtol=1e-12, atol=1e-12):
    """Run ``op`` on x and compare output and gradient with the float64 reference."""
    x = x.detach().requires_grad_(True)
    y = op(x)
    x64 = x.detach().double()
    expected = reference.forward(x64, windows)
    assert y.shape == expected.shape and y.dtype == x.dtype
    torch.testing.assert_close(y.double(), expected, rtol=rtol, atol=atol, equal_nan=True)
    if grad is None:
        grad = torch.randn(expected.shape, dtype=torch.float64, device=x.device)
    (gx,) = torch.autograd.grad(y, x, grad.to(x.dtype))
    assert gx.dtype == x.dtype
    torch.testing.assert_close(gx.double(), reference.backward(grad, x64, windows),
                               rtol=rtol, atol=atol, equal_nan=True)
    return y, gx


def _with_layouts(cases):
    return [(*case, layout) for case in cases for layout in ("contiguous", "channels_last")
            if not (layout == "channels_last" and case[0] == 1)]   # 1D has no channels_last


POOL_CASES = [
    # dims, shape, kernel, stride, padding, ceil_mode
    (1, (2, 3, 11), 3, 2, 1, True),
    (1, (2, 3, 9), 2, None, 0, False),
    (1, (1, 2, 10), 2, 3, 0, False),                      # stride > kernel: positions in no window
    (2, (2, 3, 7, 9), 3, 2, 1, True),
    (2, (2, 3, 8, 6), 2, 2, 0, False),
    (2, (1, 3, 6, 5), (2, 3), (1, 2), (1, 1), False),
    (3, (2, 3, 5, 6, 7), 3, 2, 1, True),                   # the ResNet stem pool, ceil mode
    (3, (2, 3, 4, 6, 8), 2, 2, 0, False),                  # disjoint windows that cover everything
    (3, (1, 2, 5, 7, 7), (1, 3, 3), (1, 2, 2), (0, 1, 1), False),
    (3, (1, 2, 5, 5, 5), (3, 2, 3), (1, 2, 3), (1, 0, 1), True),
    (3, (1, 2, 5, 6, 7), (2, 2, 2), (3, 3, 3), 0, True),   # stride > kernel with ceil mode
]



@pytest.mark.parametrize("dims,shape,kernel,stride,padding,ceil_mode,layout", _with_layouts(POOL_CASES))
def test_pool_matches_float64_reference(device, seed, dims, shape, kernel, stride, padding, ceil_mode, layout):
    x = torch.randn(shape, dtype=torch.float64, device=device) * 3
    if layout == "channels_last":
        x = x.contiguous(memory_format=CHANNELS_LAST[dims])
    y, gx = _check(x, lambda t: SOFT[dims](t, kernel, stride, padding, ceil_mode),
                   windows_for(x, dims, kernel, stride, padding, ceil_mode))
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=CHANNELS_LAST[dims])
        assert gx.is_contiguous(memory_format=CHANNELS_LAST[dims])


ADAPTIVE_CASES = [
    (1, (2, 3, 10), 4),
    (1, (2, 3, 5), 7),                  # more outputs than inputs: every input in two windows
    (2, (2, 2, 7, 9), (3, 4)),
    (3, (1, 2, 5, 6, 7), (2, 3, 3)),
    (3, (2, 3, 4, 6, 6), (2, 3, 3)),    # divisible: disjoint windows
    (3, (1, 2, 4, 5, 6), 1),            # global
]



@pytest.mark.parametrize("dims,shape,out,layout", _with_layouts(ADAPTIVE_CASES))
def test_adaptive_matches_float64_reference(device, seed, dims, shape, out, layout):
    x = torch.randn(shape, dtype=torch.float64, device=device) * 3
    if layout == "channels_last":
        x = x.contiguous(memory_format=CHANNELS_LAST[dims])
    _check(x, lambda t: ADAPTIVE[dims](t, out), adaptive_windows(x.shape[2:], as_tuple(out, dims)))


def test_random_geometries(device, seed):
    rng = random.Random(seed)
    for _ in range(6):
        dims = rng.randint(1, 3)
        kernel = tuple(rng.randint(1, 4) for _ in range(dims))
        stride = tuple(rng.randint(1, 4) for _ in range(dims))
        padding = tuple(rng.randint(0, k // 2) for k in kernel)
        ceil_mode = rng.random() < 0.5
        spatial = tuple(rng.randint(k, k + 6) for k in kernel)
        x = torch.randn((rng.randint(1, 2), rng.randint(1, 4), *spatial), dtype=torch.float64, device=device)
        print("case", dims, x.shape, kernel, stride, padding, ceil_mode)
        _check(x, lambda t: SOFT[dims](t, kernel, stride, padding, ceil_mode),
               windows_for(x, dims, kernel, stride, padding, ceil_mode))


GRAD_CASES = [
    (1, (2, 3, 11), 3, 2, 1, True),
    (1, (2, 2, 9), 2, None, 0, False),
    (2, (2, 2, 7, 9), 3, 2, 1, True),        # overlapping, padded, ceil
    (2, (1, 3, 6, 5), (2, 3), (1, 2), (1, 1), False),
    (3, (1, 2, 5, 6, 7), 3, 2, 1, True),
    (3, (2, 2, 4, 4, 6), 2, 2, 0, False),
    (3, (1, 2, 5, 5, 5), (3, 2, 3), (1, 2, 3), (1, 0, 1), True),
]




@pytest.mark.parametrize("dims,shape,kernel,stride,padding,ceil_mode", GRAD_CASES)
def test_gradcheck(device, seed, dims, shape, kernel, stride, padding, ceil_mode):
    x = (torch.randn(shape, dtype=torch.float64, device=device) * 2).requires_grad_(True)
    # fast_mode: the interpreter makes each of gradcheck's many calls slow.
    assert torch.autograd.gradcheck(lambda t: SOFT[dims](t, kernel, stride, padding, ceil_mode), (x,), fast_mode=True)


@pytest.mark.parametrize("dims,shape,out", [(1, (2, 3, 10), 4), (2, (2, 2, 7, 9), (3, 4)), (3, (1, 2, 5, 6, 7), (2, 3, 3)),
                                            (3, (1, 2, 4, 5, 6), 1)])
def test_gradcheck_adaptive(device, seed, dims, shape, out):
    x = (torch.randn(shape, dtype=torch.float64, device=device) * 2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: ADAPTIVE[dims](t, out), (x,), fast_mode=True)


def test_gradcheck_channels_last(device, seed):
    x = (torch.randn(2, 5, 5, 6, 7, dtype=torch.float64, device=device) * 2)
    x = x.contiguous(memory_format=torch.channels_last_3d).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: sp.soft_pool3d(t, 3, 2, 1, True), (x,), fast_mode=True)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("geometry", [(3, 2, 1, True), (2, 2, 0, False)])   # overlapping / disjoint windows
def test_reduced_precision_accumulates_in_float32(device, seed, dtype, tol, layout, geometry):
    x = (torch.randn(2, 16, 5, 6, 7, device=device) * 3).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    _check(x, lambda t: sp.soft_pool3d(t, *geometry), windows_for(x, 3, *geometry), rtol=tol, atol=tol * 3)


@pytest.mark.parametrize("dtype,magnitude", [(torch.float32, 1e4), (torch.float32, 3e38), (torch.float16, 6e4),
                                             (torch.bfloat16, 1e30), (torch.float64, 1e300)])
@pytest.mark.parametrize("geometry", [(3, 2, 1, True), (2, 2, 0, True)])
def test_huge_magnitudes_stay_finite_and_exact(device, seed, dtype, magnitude, geometry):
    x = ((torch.rand(2, 4, 5, 6, 7, dtype=torch.float64, device=device) * 2 - 1) * magnitude).to(dtype)
    y = sp.soft_pool3d(x, *geometry)
    assert torch.isfinite(y).all()
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(y.double(), reference.forward(x.double(), windows_for(x, 3, *geometry)),
                               rtol=2 * eps, atol=0)


def _activations(kind: str, shape: tuple, dtype: torch.dtype, device) -> torch.Tensor:
    """Inputs like real activations, where most windows sit far below the largest value of their (n, c)
    plane: randn plus one +40 per plane ("outlier"), and ReLU of a Student-t with 2 degrees of freedom."""
    if kind == "outlier":
        x = torch.randn(shape, dtype=torch.float64)
        planes = x.view(shape[0] * shape[1], -1)
        planes[torch.arange(planes.shape[0]), torch.randint(planes.shape[1], (planes.shape[0],))] += 40.0
    else:
        x = torch.relu(torch.distributions.StudentT(torch.tensor(2.0, dtype=torch.float64)).sample(shape))
    return x.to(dtype).to(device)


@pytest.mark.parametrize("kind", ["outlier", "relu_student_t"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5), (torch.float16, 2e-3),
                                       (torch.bfloat16, 1.6e-2)])
@pytest.mark.parametrize("geometry", [(3, 2, 1, True), (2, 2, 0, False), (3, 1, 1, False)],
                         ids=["k3s2p1", "k2s2", "k3s1p1"])
def test_realistic_activations_match_float64_reference(device, seed, kind, dtype, tol, geometry):
    # Overlapping and disjoint windows, each far below (or holding) its plane's largest value. Gradients sum
    # terms as large as the inputs (and the upstream gradient is rounded to the dtype): atol scales with them.
    x = _activations(kind, (2, 3, 5, 9, 20), dtype, device)
    scale = max(1.0, float(x.double().abs().max()))
    _check(x, lambda t: sp.soft_pool3d(t, *geometry), windows_for(x, 3, *geometry), rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("geometry", [(3, 2, 1, True), (2, 2, 0, False), (3, 1, 1, False)],
                         ids=["k3s2p1", "k2s2", "k3s1p1"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_window_result_depends_on_its_own_values_only(device, seed, geometry, dtype):
    # A large value added to one input changes no output whose window lacks it, and no gradient of an
    # input that shares no window with it: bit for bit, whatever the rest of the plane holds.
    x = torch.randn(2, 3, 5, 9, 20, dtype=dtype, device=device)
    grad = torch.randn(sp.soft_pool3d(x, *geometry).shape, dtype=dtype, device=device)
    where = (slice(None), slice(None), 3, 7, 17)
    x_far = x.clone()
    x_far[where] += 60.0
    results = []
    for t in (x, x_far):
        t = t.detach().requires_grad_(True)
        y = sp.soft_pool3d(t, *geometry)
        results.append((y, *torch.autograd.grad(y, t, grad)))
    # The outputs whose window holds the changed input, and the inputs that share a window with it.
    kernel, stride, padding, ceil_mode = geometry
    marker = torch.zeros(x.shape, dtype=torch.float64)
    marker[where] = 1.0
    touched_out = F.max_pool3d(marker, kernel, stride, padding, ceil_mode=ceil_mode) > 0
    marker.requires_grad_(True)
    spread = F.avg_pool3d(marker, kernel, stride, padding, ceil_mode=ceil_mode, count_include_pad=False)
    touched_in = (torch.autograd.grad(spread, marker, touched_out.double())[0] > 0).to(x.device)
    touched_out = touched_out.to(x.device)
    (y, gx), (y_far, gx_far) = results
    assert touched_out.any() and not touched_out.all() and not touched_in.all()
    assert torch.equal(y[~touched_out], y_far[~touched_out])
    assert torch.equal(gx[~touched_in], gx_far[~touched_in])


@pytest.mark.parametrize("geometry", [(2, 2, 0, False), (3, 1, 1, False)], ids=["disjoint", "overlapping"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_finite_input_against_the_reference(device, geometry, dtype):
    x = (torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4) / 4).repeat(1, 3, 1, 1)
    x[:, 0, 0, 0] = NAN
    x[:, :, 0, 2] = INF
    x[:, :, 2, 0] = -INF
    x[:, 1:, 2:, 2:] = -INF
    x = x.to(dtype).to(device)
    grad = torch.ones(sp.soft_pool2d(x, *geometry).shape, dtype=torch.float64, device=device)
    y, gx = _check(x, lambda t: sp.soft_pool2d(t, *geometry), windows_for(x, 2, *geometry), grad,
                   rtol=1e-5, atol=1e-6)
    assert torch.isnan(y[:, 0]).any() and (y == INF).any() and (y == -INF).any()
    assert torch.isfinite(gx[:, 1:]).all()
    assert (gx[:, 1:, 2:, 2:] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_non_finite_rules(device, dtype, layout):
    base = torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4) / 4
    x = base.repeat(1, 3, 1, 1)
    x[:, :, 0, 0] = NAN                     # window (0, 0): NaN
    x[:, :, 0, 2] = INF                     # window (0, 1): +inf
    x[:, :, 2, 0] = -INF                    # window (1, 0): one -inf entry, weight 0
    x[:, :, 2:, 2:] = -INF                  # window (1, 1): all -inf
    x = x.to(dtype).to(device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    y = sp.soft_pool2d(x, 2).double()
    assert torch.isnan(y[:, :, 0, 0]).all()
    assert (y[:, :, 0, 1] == INF).all()
    rest = x.double()[0, 0, 2:, :2].flatten()[1:]          # the three finite entries
    torch.testing.assert_close(y[:, :, 1, 0], (torch.softmax(rest, 0) * rest).sum().expand(1, 3), rtol=1e-2, atol=0)
    assert (y[:, :, 1, 1] == -INF).all()
    torch.testing.assert_close(y, reference.forward(x.double(), windows_for(x, 2, 2)), equal_nan=True, rtol=1e-2, atol=0)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_non_finite_gradients(device, layout):
    x = (torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4) / 4).repeat(1, 2, 1, 1)
    x[:, :, 0, 2] = INF
    x[:, :, 2, 0] = -INF
    x[:, :, 2:, 2:] = -INF
    x = x.to(device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    y = sp.soft_pool2d(x, 2)
    (gx,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(gx).all()
    assert (gx[:, :, 2, 0] == 0).all() and (gx[:, :, 2:, 2:] == 0).all()   # -inf entries get no gradient
    assert (gx[:, :, 0, 2] == 1).all() and (gx[:, :, :2, 2:].sum((-1, -2)) == 1).all()  # +inf takes it all
    finite = x.detach().clone()[:, :, 2:, :2].flatten(2)[..., 1:].requires_grad_(True)
    (expected,) = torch.autograd.grad((torch.softmax(finite, -1) * finite).sum(), finite)
    torch.testing.assert_close(gx[:, :, 2:, :2].flatten(2)[..., 1:], expected)
    torch.testing.assert_close(gx, reference.backward(torch.ones_like(y), x.detach(), windows_for(x, 2, 2)))
    x_nan = x.detach().clone()
    x_nan[:, :, 0, 0] = NAN
    x_nan.requires_grad_(True)
    (g_nan,) = torch.autograd.grad(sp.soft_pool2d(x_nan, 2).sum(), x_nan)
    assert torch.isnan(g_nan[:, :, :2, :2]).all() and torch.isfinite(g_nan[:, :, 2:, :2]).all()


def test_expanded_upstream_gradient(device, seed):
    # y.sum() hands backward a gradient with zero strides.
    x = torch.randn(2, 3, 4, 6, 6, dtype=torch.float64, device=device, requires_grad=True)
    for geometry in ((2, 2, 0), (3, 2, 1)):
        (gx,) = torch.autograd.grad(sp.soft_pool3d(x, *geometry).sum(), x)
        windows = windows_for(x, 3, *geometry)
        y = reference.forward(x.detach(), windows)
        torch.testing.assert_close(gx, reference.backward(torch.ones_like(y), x.detach(), windows))


def test_non_contiguous_input(device, seed):
    base = torch.randn(2, 3, 7, 6, 8, dtype=torch.float64, device=device)
    view = base.transpose(2, 4)[..., ::2, :]          # neither contiguous nor channels_last
    _check(view, lambda t: sp.soft_pool3d(t, 2, 2, 0, True), windows_for(view, 3, 2, 2, 0, True))


def test_input_is_not_modified(device, seed):
    x = torch.randn(2, 3, 5, 6, 7, device=device, requires_grad=True)
    before = x.detach().clone()
    sp.soft_pool3d(x, 3, 2, 1).sum().backward()
    assert torch.equal(x.detach(), before)


def test_empty_batch(device, seed):
    x = torch.randn(0, 3, 4, 4, 4, device=device, requires_grad=True)
    y = sp.soft_pool3d(x, 2)
    assert y.shape == (0, 3, 2, 2, 2)
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_opcheck(device, seed):
    x = torch.randn(1, 2, 4, 5, 6, dtype=torch.float64, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.softpool3d.soft_pool.default, (x, [3, 3, 3], [2, 2, 2], [1, 1, 1], True))
    torch.library.opcheck(torch.ops.softpool3d.adaptive_soft_pool.default, (x, [2, 3, 3]))
