"""What is specific to the C++ kernel (the CPU backend), and the functional API's shapes and errors.

The operator's contract (values, gradients, dtypes, magnitudes, non-finite input, layouts) runs on
every backend in test_op_contract.py; here: a property-based cross-check against the reference, the
windows of very different scales in one row, channels_last without a copy, unbatched input and errors."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import softpool3d as sp
from softpool3d.ops import backend_for, reference

from helpers import reference_adaptive, reference_pool, windows_for

SOFT = {1: sp.soft_pool1d, 2: sp.soft_pool2d, 3: sp.soft_pool3d}
ADAPTIVE = {1: sp.adaptive_soft_pool1d, 2: sp.adaptive_soft_pool2d, 3: sp.adaptive_soft_pool3d}
MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVG_ADAPTIVE = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}


def test_cpp_backend_serves_cpu_floats():
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        assert backend_for(torch.zeros(1, dtype=dtype)) == "cpp"


@pytest.mark.skipif(not sys.platform.startswith("linux") or not torch.backends.openmp.is_available(),
                    reason="PyTorch runs on OpenMP on Linux only")
def test_cpp_kernel_runs_on_pytorch_threads():
    # Without -fopenmp, at::parallel_for runs every plane on the calling thread.
    sp.soft_pool1d(torch.zeros(1, 1, 2), 2)
    [library] = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
                 if "softpool3d_cpu_" in line}
    assert b"GOMP_parallel" in Path(library).read_bytes()


@pytest.mark.parametrize("geometry", [(2, 2, 0), (3, 2, 1)])
def test_cpp_result_does_not_depend_on_the_thread_count(seed, geometry):
    x = torch.randn(2, 5, 6, 9, 11, requires_grad=True)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            y = sp.soft_pool3d(x, *geometry)
            results.append((y, *torch.autograd.grad(y, x, torch.ones_like(y))))
    finally:
        torch.set_num_threads(threads)
    for one, many in zip(*results):
        assert torch.equal(one, many)


# ---------------------------------------------------------------- property-based cross-check

@st.composite
def pool_problems(draw):
    dims = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(dims))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    ceil_mode = draw(st.booleans())
    spatial = tuple(draw(st.integers(max(1, k - 2 * p), 9)) for k, p in zip(kernel, padding))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 20))) + spatial
    layout = draw(st.sampled_from(["contiguous", "channels_last"] if dims > 1 else ["contiguous"]))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 50.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    return dims, shape, kernel, stride, padding, ceil_mode, layout, scale, seed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pool_problems())
def test_cpp_matches_reference_forward_and_backward(problem):
    dims, shape, kernel, stride, padding, ceil_mode, layout, scale, seed = problem
    gen = torch.Generator().manual_seed(seed)
    x64 = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 2e-5)):
        x = x64.to(dtype)
        if layout == "channels_last":
            x = x.contiguous(memory_format=CHANNELS_LAST[dims])
        x.requires_grad_(True)
        y = SOFT[dims](x, kernel, stride, padding, ceil_mode)
        assert y.shape == MAX[dims](x64, kernel, stride, padding, ceil_mode=ceil_mode).shape
        expected_x = x.detach().double().requires_grad_(True)
        expected = reference.forward(expected_x, windows_for(x, dims, kernel, stride, padding, ceil_mode))
        torch.testing.assert_close(y.double(), expected, rtol=tol, atol=tol * scale)
        grad = torch.randn(y.shape, generator=gen, dtype=torch.float64)
        (gx,) = torch.autograd.grad(y, x, grad.to(dtype))
        (gx_expected,) = torch.autograd.grad(expected, expected_x, grad)
        torch.testing.assert_close(gx.double(), gx_expected, rtol=tol * 10, atol=tol * 10)


@settings(max_examples=60, deadline=None)
@given(dims=st.integers(1, 3), data=st.data())
def test_adaptive_matches_reference_and_shape(dims, data):
    spatial = tuple(data.draw(st.integers(1, 9)) for _ in range(dims))
    out = tuple(data.draw(st.integers(1, 10)) for _ in range(dims))
    seed = data.draw(st.integers(0, 2**31 - 1))
    x = torch.randn((2, 3) + spatial, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x.requires_grad_(True)
    y = ADAPTIVE[dims](x, out)
    assert y.shape == AVG_ADAPTIVE[dims](x, out).shape
    x_ref = x.detach().clone().requires_grad_(True)
    expected = reference_adaptive(x_ref, dims, out)
    torch.testing.assert_close(y, expected)
    grad = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, x, grad)[0], torch.autograd.grad(expected, x_ref, grad)[0])


def test_global_pool_is_softmax_weighted_mean(seed):
    x = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64)
    flat = x.flatten(2)
    expected = (torch.softmax(flat, -1) * flat).sum(-1)
    torch.testing.assert_close(sp.adaptive_soft_pool3d(x, 1).flatten(2)[..., 0], expected)


# ---------------------------------------------------------------- dtypes and magnitudes

@pytest.mark.parametrize("geometry", [(2, 2, 0), (3, 2, 1)])
def test_mixed_scales_in_one_row_use_exact_windows(seed, geometry):
    # Rows hold values near 0 and near 1000: windows far below the row's largest value must still
    # be exact, forward and backward.
    x = torch.randn(1, 2, 4, 8, 8, dtype=torch.float64)
    x[..., :3] += 1000.0
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        xt = x.to(dtype).requires_grad_(True)
        y = sp.soft_pool3d(xt, *geometry)
        x_ref = xt.detach().double().requires_grad_(True)
        expected = reference_pool(x_ref, 3, *geometry)
        torch.testing.assert_close(y.double(), expected, rtol=tol, atol=tol)
        grad = torch.randn(y.shape, dtype=torch.float64)
        torch.testing.assert_close(torch.autograd.grad(y, xt, grad.to(dtype))[0].double(),
                                   torch.autograd.grad(expected, x_ref, grad)[0], rtol=tol * 10, atol=tol * 10)


# ---------------------------------------------------------------- layouts and shapes

@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_matches_contiguous_and_keeps_layout(seed, dims):
    shape = (2, 19, 7, 9) if dims == 2 else (2, 19, 5, 7, 9)
    x = torch.randn(shape)
    x_cl = x.contiguous(memory_format=CHANNELS_LAST[dims]).requires_grad_(True)
    x_c = x.clone().requires_grad_(True)
    y_cl, y_c = SOFT[dims](x_cl, 3, 2, 1), SOFT[dims](x_c, 3, 2, 1)
    assert y_cl.is_contiguous(memory_format=CHANNELS_LAST[dims])
    torch.testing.assert_close(y_cl, y_c, rtol=2e-6, atol=2e-6)
    grad = torch.randn_like(y_c)
    g_cl, g_c = torch.autograd.grad(y_cl, x_cl, grad)[0], torch.autograd.grad(y_c, x_c, grad)[0]
    assert g_cl.is_contiguous(memory_format=CHANNELS_LAST[dims])
    torch.testing.assert_close(g_cl, g_c, rtol=2e-5, atol=2e-5)


def test_channels_last_runs_without_a_copy(seed):
    x = torch.randn(2, 8, 4, 6, 6).contiguous(memory_format=torch.channels_last_3d)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        sp.soft_pool3d(x, 2)
    names = {event.name for event in prof.events()}
    assert not names & {"aten::contiguous", "aten::clone", "aten::copy_"}, names


def test_non_contiguous_and_unbatched_inputs(seed):
    x = torch.randn(2, 3, 6, 14, 8)
    sliced = x[..., ::2, :]                  # non-contiguous view
    torch.testing.assert_close(sp.soft_pool3d(sliced, 2), sp.soft_pool3d(sliced.contiguous(), 2))
    transposed = torch.randn(2, 3, 7, 6, 8).transpose(2, 4)   # neither contiguous nor channels_last
    torch.testing.assert_close(sp.soft_pool3d(transposed, 2), sp.soft_pool3d(transposed.contiguous(), 2))
    torch.testing.assert_close(sp.soft_pool3d(x[0], 3, 2, 1), sp.soft_pool3d(x, 3, 2, 1)[0])
    torch.testing.assert_close(sp.soft_pool2d(x[0, 0], 2), sp.soft_pool2d(x[:1, 0], 2)[0])
    torch.testing.assert_close(sp.soft_pool1d(x[0, 0, 0], 3), sp.soft_pool1d(x[:1, 0, 0], 3)[0])
    torch.testing.assert_close(sp.adaptive_soft_pool3d(x[0], 2), sp.adaptive_soft_pool3d(x, 2)[0])


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("call,match", [
    (lambda x: sp.soft_pool3d(x[0, 0], 2), "input must have 4 dims"),
    (lambda x: sp.soft_pool3d(x.to(torch.int64), 2), "float16, bfloat16, float32 or float64"),
    (lambda x: sp.soft_pool3d(x, 0), "kernel_size must be >= 1"),
    (lambda x: sp.soft_pool3d(x, (2, 2)), "kernel_size must be an int or a tuple of 3"),
    (lambda x: sp.soft_pool3d(x, 2, 0), "stride must be >= 1"),
    (lambda x: sp.soft_pool3d(x, 2, 2, -1), "padding must be >= 0"),
    (lambda x: sp.soft_pool3d(x, 3, 2, 2), "padding should be at most half of kernel_size"),
    (lambda x: sp.soft_pool3d(x, 9), "output size would be"),
    (lambda x: sp.soft_pool3d(x, 2, dilation=2), "dilation"),
    (lambda x: sp.soft_pool3d(x, 2, ceil_mode=1), "ceil_mode must be a bool"),
    (lambda x: sp.soft_pool3d(x, 2.5), "kernel_size must contain ints"),
    (lambda x: sp.adaptive_soft_pool3d(x, 0), "output_size must be >= 1"),
    (lambda x: sp.adaptive_soft_pool2d(x, 2), "input must have 3 dims"),
    (lambda x: sp.soft_pool3d(x[..., :0], 1), "empty spatial dim"),
    (lambda x: sp.SoftPool3d(0), "kernel_size must be >= 1"),
    (lambda x: sp.AdaptiveSoftPool2d((1, 2, 3)), "output_size must be an int or a tuple of 2"),
])
def test_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.randn(1, 2, 4, 4, 4))


def test_output_shape_matches_max_pool_including_ceil_mode():
    # The classic ceil_mode edge: the last window would start in the right padding.
    for length, k, s, p in [(5, 2, 2, 1), (6, 3, 3, 1), (7, 3, 2, 1), (10, 4, 3, 2), (1, 1, 3, 0)]:
        x = torch.randn(1, 1, length)
        for ceil_mode in (False, True):
            assert sp.soft_pool1d(x, k, s, p, ceil_mode).shape == F.max_pool1d(x, k, s, p, ceil_mode=ceil_mode).shape
