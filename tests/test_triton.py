"""The Triton kernels against the float64 reference: values, gradients, dtypes, non-finite input,
layouts and every window geometry. Without a GPU they run on CPU tensors in Triton's interpreter."""

import importlib.util
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import softpool3d as sp
from softpool3d.ops import backend_for, force_backend, reference
from softpool3d.ops._geometry import adaptive_windows, pool_windows

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SOFT = {1: sp.soft_pool1d, 2: sp.soft_pool2d, 3: sp.soft_pool3d}
ADAPTIVE = {1: sp.adaptive_soft_pool1d, 2: sp.adaptive_soft_pool2d, 3: sp.adaptive_soft_pool3d}
CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}


@pytest.fixture(autouse=True)
def triton_backend():
    with force_backend("triton"), warnings.catch_warnings():
        # The interpreter evaluates masked-off lanes too, in numpy, which warns about their inf/nan.
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="triton")
        yield


def _tuple(value, dims):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims


def _windows(x, dims, kernel, stride, padding, ceil_mode):
    k = _tuple(kernel, dims)
    s = k if stride is None else _tuple(stride, dims)
    return pool_windows(x.shape[-dims:], k, s, _tuple(padding, dims), ceil_mode)


def _check(x, op, windows, grad=None, rtol=1e-12, atol=1e-12):
    """Run ``op`` on x through Triton and compare output and gradient with the float64 reference."""
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


def _with_layouts(cases):
    return [(*case, layout) for case in cases for layout in ("contiguous", "channels_last")
            if not (layout == "channels_last" and case[0] == 1)]   # 1D has no channels_last


@pytest.mark.parametrize("dims,shape,kernel,stride,padding,ceil_mode,layout", _with_layouts(POOL_CASES))
def test_pool_matches_float64_reference(seed, dims, shape, kernel, stride, padding, ceil_mode, layout):
    x = torch.randn(shape, dtype=torch.float64, device=DEVICE) * 3
    if layout == "channels_last":
        x = x.contiguous(memory_format=CHANNELS_LAST[dims])
    y, gx = _check(x, lambda t: SOFT[dims](t, kernel, stride, padding, ceil_mode),
                   _windows(x, dims, kernel, stride, padding, ceil_mode))
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
def test_adaptive_matches_float64_reference(seed, dims, shape, out, layout):
    x = torch.randn(shape, dtype=torch.float64, device=DEVICE) * 3
    if layout == "channels_last":
        x = x.contiguous(memory_format=CHANNELS_LAST[dims])
    _check(x, lambda t: ADAPTIVE[dims](t, out), adaptive_windows(x.shape[2:], _tuple(out, dims)))


def test_random_geometries(seed):
    rng = random.Random(seed)
    for _ in range(6):
        dims = rng.randint(1, 3)
        kernel = tuple(rng.randint(1, 4) for _ in range(dims))
        stride = tuple(rng.randint(1, 4) for _ in range(dims))
        padding = tuple(rng.randint(0, k // 2) for k in kernel)
        ceil_mode = rng.random() < 0.5
        spatial = tuple(rng.randint(k, k + 6) for k in kernel)
        x = torch.randn((rng.randint(1, 2), rng.randint(1, 4), *spatial), dtype=torch.float64, device=DEVICE)
        print("case", dims, x.shape, kernel, stride, padding, ceil_mode)
        _check(x, lambda t: SOFT[dims](t, kernel, stride, padding, ceil_mode),
               _windows(x, dims, kernel, stride, padding, ceil_mode))


@pytest.mark.parametrize("case", [(3, 2, 1, True), (2, 2, 0, False)])
def test_gradcheck(seed, case):
    # fast_mode: the interpreter makes each of gradcheck's many calls slow.
    x = (torch.randn(1, 2, 4, 5, 6, dtype=torch.float64, device=DEVICE) * 2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: sp.soft_pool3d(t, *case), (x,), fast_mode=True)


def test_gradcheck_adaptive(seed):
    x = (torch.randn(1, 2, 5, 7, dtype=torch.float64, device=DEVICE) * 2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: sp.adaptive_soft_pool2d(t, (3, 4)), (x,), fast_mode=True)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
@pytest.mark.parametrize("geometry", [(3, 2, 1, True), (2, 2, 0, False)])
def test_reduced_precision_accumulates_in_float32(seed, dtype, tol, geometry):
    x = (torch.randn(2, 8, 5, 6, 7, device=DEVICE) * 3).to(dtype)
    _check(x, lambda t: sp.soft_pool3d(t, *geometry), _windows(x, 3, *geometry), rtol=tol, atol=tol * 3)


@pytest.mark.parametrize("dtype,magnitude", [(torch.float32, 3e38), (torch.float16, 6e4), (torch.bfloat16, 1e30)])
def test_huge_magnitudes_stay_finite(seed, dtype, magnitude):
    x = ((torch.rand(2, 4, 5, 6, 7, dtype=torch.float64, device=DEVICE) * 2 - 1) * magnitude).to(dtype)
    y = sp.soft_pool3d(x, 3, 2, 1, True)
    assert torch.isfinite(y).all()
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(y.double(), reference.forward(x.double(), _windows(x, 3, 3, 2, 1, True)),
                               rtol=2 * eps, atol=0)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("geometry", [(2, 2, 0, False), (3, 1, 1, False)], ids=["disjoint", "overlapping"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_finite_rules_forward_and_backward(geometry, dtype):
    x = (torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4) / 4).repeat(1, 3, 1, 1)
    x[:, 0, 0, 0] = NAN
    x[:, :, 0, 2] = INF
    x[:, :, 2, 0] = -INF
    x[:, 1:, 2:, 2:] = -INF
    x = x.to(dtype).to(DEVICE)
    grad = torch.ones(SOFT[2](x, *geometry).shape, dtype=torch.float64, device=DEVICE)
    y, gx = _check(x, lambda t: sp.soft_pool2d(t, *geometry), _windows(x, 2, *geometry), grad, rtol=1e-5, atol=1e-6)
    assert torch.isnan(y[:, 0]).any() and (y == INF).any() and (y == -INF).any()
    assert torch.isfinite(gx[:, 1:]).all()
    assert (gx[:, 1:, 2:, 2:] == 0).all()


def test_backward_is_deterministic(seed):
    x = torch.randn(2, 4, 6, 7, 8, device=DEVICE, requires_grad=True)
    grad = torch.randn(sp.soft_pool3d(x, 3, 1, 1).shape, device=DEVICE)
    first = torch.autograd.grad(sp.soft_pool3d(x, 3, 1, 1), x, grad)[0]
    second = torch.autograd.grad(sp.soft_pool3d(x, 3, 1, 1), x, grad)[0]
    assert torch.equal(first, second)


def test_expanded_upstream_gradient(seed):
    # y.sum() hands backward a gradient with zero strides.
    x = torch.randn(2, 3, 4, 6, 6, dtype=torch.float64, device=DEVICE, requires_grad=True)
    for geometry in ((2, 2, 0), (3, 2, 1)):
        (gx,) = torch.autograd.grad(sp.soft_pool3d(x, *geometry).sum(), x)
        windows = _windows(x, 3, *geometry, False)
        y = reference.forward(x.detach(), windows)
        torch.testing.assert_close(gx, reference.backward(torch.ones_like(y), x.detach(), windows))


def test_gpu_check_script_runs_its_checks(monkeypatch, tmp_path):
    """tools/gpu_check.py --quick: its correctness suite, here on the interpreter (CUDA when there is one)."""
    import json

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import gpu_check

    assert gpu_check.main(["--device", DEVICE, "--quick", "--json", str(tmp_path / "report.json")]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["backend"] == "triton" and report["failed"] == 0 and len(report["checks"]) >= 15


def test_non_contiguous_input_is_read_in_place(seed):
    base = torch.randn(2, 3, 7, 6, 8, dtype=torch.float64, device=DEVICE)
    view = base.transpose(2, 4)[..., ::2, :]
    _check(view, lambda t: sp.soft_pool3d(t, 2, 2, 0, True), _windows(view, 3, 2, 2, 0, True))


def test_backend_for_names_triton(monkeypatch):
    assert backend_for(torch.zeros(1, 1, 2, device=DEVICE)) == "triton"
    if DEVICE == "cpu":
        monkeypatch.delenv("TRITON_INTERPRET")
        with pytest.raises(ValueError, match="TRITON_INTERPRET"):
            backend_for(torch.zeros(1, 1, 2))
        with force_backend("auto"):
            assert backend_for(torch.zeros(1, 1, 2)) == "cpp"


def test_opcheck(seed):
    x = torch.randn(1, 2, 4, 5, 6, dtype=torch.float64, device=DEVICE, requires_grad=True)
    torch.library.opcheck(torch.ops.softpool3d.soft_pool.default, (x, [3, 3, 3], [2, 2, 2], [1, 1, 1], True))
    torch.library.opcheck(torch.ops.softpool3d.adaptive_soft_pool.default, (x, [2, 3, 3]))


def test_package_works_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, softpool3d as sp\n"
        "from softpool3d.ops import backend_for\n"
        "x = torch.randn(1, 2, 4, 4, 4)\n"
        "assert backend_for(x) == 'cpp', backend_for(x)\n"
        "print(sp.soft_pool3d(x, 2).shape)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("SOFTPOOL3D_BACKEND", "TRITON_INTERPRET")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "torch.Size([1, 2, 2, 2, 2])" in done.stdout
