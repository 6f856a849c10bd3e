"""The Triton kernels' correctness suite on a device, as ``tools/gpu_check.py`` runs it.

Every case compares the op on the device with the float64 reference, forward and backward, with the
caching allocator poisoned with NaN first so that an element a kernel forgets to write fails the
check; then gradcheck, opcheck, torch.compile(fullgraph=True), autocast, a side stream, a second GPU
when there is one, and 64-bit indexing. Needs only torch and triton.
"""

from __future__ import annotations

import time
import traceback

import torch
import torch.nn.functional as F

from .. import ops as sp
from . import reference
from ._geometry import adaptive_windows, pool_windows

SOFT = {1: sp.soft_pool1d, 2: sp.soft_pool2d, 3: sp.soft_pool3d}
ADAPTIVE = {1: sp.adaptive_soft_pool1d, 2: sp.adaptive_soft_pool2d, 3: sp.adaptive_soft_pool3d}
MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}

# dims, shape, kernel, stride, padding, ceil_mode
POOL_CASES = [
    (1, (4, 8, 37), 3, 2, 1, True),
    (1, (4, 8, 40), 2, 2, 0, False),
    (1, (2, 8, 41), 2, 3, 0, True),
    (2, (4, 16, 23, 31), 3, 2, 1, True),
    (2, (4, 16, 24, 32), 2, 2, 0, False),
    (2, (2, 16, 17, 19), (2, 3), (1, 2), (1, 1), False),
    (3, (2, 16, 9, 23, 29), 3, 2, 1, True),
    (3, (2, 16, 8, 24, 24), 2, 2, 0, False),
    (3, (2, 16, 8, 23, 23), (1, 3, 3), (1, 2, 2), (0, 1, 1), False),
    (3, (2, 8, 7, 9, 11), (3, 2, 3), (1, 2, 3), (1, 0, 1), True),
    (3, (2, 8, 7, 9, 11), 2, 3, 0, True),
]
ADAPTIVE_CASES = [
    (1, (4, 8, 37), 5),
    (1, (4, 8, 5), 9),
    (2, (4, 16, 23, 31), (4, 6)),
    (3, (2, 16, 9, 23, 29), (2, 3, 3)),
    (3, (2, 16, 8, 14, 14), 1),
]


def _tuple(value, dims):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims


class Checks:
    """Collects named pass/fail results; a failing check records its error instead of stopping the run."""

    def __init__(self):
        self.results: list[dict] = []

    def run(self, name: str, fn) -> None:
        start = time.perf_counter()
        try:
            fn()
            ok, error = True, ""
        except Exception as exc:  # noqa: BLE001 - report and go on
            ok, error = False, f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        seconds = time.perf_counter() - start
        self.results.append({"check": name, "ok": ok, "error": error[:500], "seconds": round(seconds, 2)})
        print(f"[{'ok' if ok else 'FAIL'}] {name} ({seconds:.1f} s){'  ' + error[:200] if error else ''}", flush=True)


def poison(device: torch.device, *shapes_and_dtypes) -> None:
    """Leave NaN in the caching allocator's free blocks of these sizes, so unwritten outputs show up."""
    if device.type != "cuda":
        return
    blocks = [torch.full(shape, float("nan"), dtype=dtype, device=device) for shape, dtype in shapes_and_dtypes]
    del blocks


def compare(x: torch.Tensor, op, windows, out_shape) -> None:
    """Forward and backward of ``op`` on the device against the float64 reference on the CPU."""
    tol = TOLERANCE[x.dtype]
    x = x.detach().requires_grad_(True)
    poison(x.device, (out_shape, x.dtype), (tuple(x.shape), x.dtype))
    y = op(x)
    x64 = x.detach().double().cpu()
    expected = reference.forward(x64, windows)
    torch.testing.assert_close(y.double().cpu(), expected, rtol=tol, atol=tol * 3, equal_nan=True)
    grad64 = torch.randn(expected.shape, dtype=torch.float64)
    poison(x.device, (tuple(x.shape), x.dtype))
    (gx,) = torch.autograd.grad(y, x, grad64.to(x.device, x.dtype))
    assert gx.dtype == x.dtype and gx.stride() == torch.empty_like(x).stride(), "gradient layout"
    torch.testing.assert_close(gx.double().cpu(), reference.backward(grad64, x64, windows),
                               rtol=tol, atol=tol * 3, equal_nan=True)


def correctness(checks: Checks, device: torch.device, quick: bool) -> None:
    dtypes = [torch.float32, torch.float64] if quick else [torch.float32, torch.float16, torch.bfloat16,
                                                           torch.float64]
    layouts = ["contiguous"] if quick else ["contiguous", "channels_last"]
    cases = POOL_CASES[::3] if quick else POOL_CASES
    adaptive_cases = ADAPTIVE_CASES[::2] if quick else ADAPTIVE_CASES

    def layout_of(x, dims, layout):
        return x.contiguous(memory_format=CHANNELS_LAST[dims]) if layout == "channels_last" else x

    def pool_check(dims, shape, k, s, p, ceil_mode, dtype, layout):
        def fn():
            x = layout_of((torch.randn(shape, device=device) * 3).to(dtype), dims, layout)
            windows = pool_windows(shape[2:], _tuple(k, dims), _tuple(s, dims), _tuple(p, dims), ceil_mode)
            out = tuple(shape[:2]) + tuple(len(a.starts) for a in windows)
            compare(x, lambda t: SOFT[dims](t, k, s, p, ceil_mode), windows, out)
        return fn

    def adaptive_check(dims, shape, out, dtype, layout):
        def fn():
            x = layout_of((torch.randn(shape, device=device) * 3).to(dtype), dims, layout)
            windows = adaptive_windows(shape[2:], _tuple(out, dims))
            compare(x, lambda t: ADAPTIVE[dims](t, out), windows, tuple(shape[:2]) + _tuple(out, dims))
        return fn

    for dtype in dtypes:
        for layout in layouts:
            for dims, shape, k, s, p, ceil_mode in cases:
                if layout == "channels_last" and dims == 1:
                    continue
                checks.run(f"pool{dims}d {shape} k={k} s={s} p={p} ceil={ceil_mode} {dtype} {layout}",
                           pool_check(dims, shape, k, s, p, ceil_mode, dtype, layout))
            for dims, shape, out in adaptive_cases:
                if layout == "channels_last" and dims == 1:
                    continue
                checks.run(f"adaptive{dims}d {shape} -> {out} {dtype} {layout}",
                           adaptive_check(dims, shape, out, dtype, layout))

    def non_finite():
        x = (torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4) / 4).repeat(1, 3, 1, 1)
        x[:, 0, 0, 0] = float("nan")
        x[:, :, 0, 2] = float("inf")
        x[:, :, 2, 0] = float("-inf")
        x[:, 1:, 2:, 2:] = float("-inf")
        for geometry in ((2, 2, 0), (3, 1, 1)):
            windows = pool_windows((4, 4), geometry[:1] * 2, geometry[1:2] * 2, geometry[2:] * 2, False)
            out = (1, 3) + tuple(len(a.starts) for a in windows)
            compare(x.float().to(device), lambda t: sp.soft_pool2d(t, *geometry), windows, out)

    checks.run("non-finite rules (NaN, +inf, -inf windows), forward and backward", non_finite)

    def gradcheck():
        for case in ((3, 2, 1, True), (2, 2, 0, False)):
            x = (torch.randn(1, 2, 4, 5, 6, dtype=torch.float64, device=device) * 2).requires_grad_(True)
            assert torch.autograd.gradcheck(lambda t: sp.soft_pool3d(t, *case), (x,), fast_mode=quick)
        x = (torch.randn(1, 2, 5, 7, dtype=torch.float64, device=device) * 2).requires_grad_(True)
        assert torch.autograd.gradcheck(lambda t: sp.adaptive_soft_pool2d(t, (3, 4)), (x,), fast_mode=quick)

    checks.run("gradcheck (float64, Triton kernels)", gradcheck)

    def determinism():
        x = torch.randn(2, 16, 8, 20, 20, device=device, requires_grad=True)
        g = torch.randn(2, 16, 8, 20, 20, device=device)
        first = torch.autograd.grad(sp.soft_pool3d(x, 3, 1, 1), x, g)[0]
        assert torch.equal(first, torch.autograd.grad(sp.soft_pool3d(x, 3, 1, 1), x, g)[0])

    checks.run("backward is bit-identical run to run (overlapping windows)", determinism)

    def opcheck():
        x = torch.randn(1, 2, 4, 5, 6, dtype=torch.float32, device=device, requires_grad=True)
        torch.library.opcheck(torch.ops.softpool3d.soft_pool.default, (x, [3, 3, 3], [2, 2, 2], [1, 1, 1], True))
        torch.library.opcheck(torch.ops.softpool3d.adaptive_soft_pool.default, (x, [2, 3, 3]))

    checks.run("torch.library.opcheck", opcheck)

    if device.type != "cuda":
        return

    def compiled():
        model = torch.nn.Sequential(torch.nn.Conv3d(3, 8, 3, padding=1), sp.SoftPool3d(3, 2, 1),
                                    torch.nn.ReLU(), sp.AdaptiveSoftPool3d(1)).to(device)
        x = torch.randn(2, 3, 8, 32, 32, device=device, requires_grad=True)
        eager = model(x)
        compiled_model = torch.compile(model, fullgraph=True)
        out = compiled_model(x)
        torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-4)
        g_eager = torch.autograd.grad(eager.sum(), x)[0]
        g_compiled = torch.autograd.grad(compiled_model(x).sum(), x)[0]
        torch.testing.assert_close(g_compiled, g_eager, rtol=1e-4, atol=1e-4)

    checks.run("torch.compile(fullgraph=True) matches eager, forward and backward", compiled)

    def autocast():
        x = torch.randn(2, 8, 8, 16, 16, device=device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y32 = sp.soft_pool3d(x, 2)
            y16 = sp.soft_pool3d(x.bfloat16(), 2)
        assert y32.dtype == torch.float32 and y16.dtype == torch.bfloat16, (y32.dtype, y16.dtype)
        torch.testing.assert_close(y32, sp.soft_pool3d(x, 2))

    checks.run("autocast keeps the input's dtype", autocast)

    def side_stream():
        x = torch.randn(4, 32, 8, 56, 56, device=device)
        expected = sp.soft_pool3d(x, 3, 2, 1)
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            y = sp.soft_pool3d(x, 3, 2, 1)
        torch.cuda.current_stream(device).wait_stream(stream)
        torch.testing.assert_close(y, expected, rtol=0, atol=0)

    checks.run("runs on the current (side) stream", side_stream)

    if torch.cuda.device_count() > 1:
        def second_gpu():
            other = torch.device("cuda", 1)
            x = torch.randn(2, 8, 6, 10, 10, dtype=torch.float64)
            y = sp.soft_pool3d(x.to(other), 3, 2, 1)
            assert y.device == other
            torch.testing.assert_close(y.cpu(), reference.forward(x, pool_windows((6, 10, 10), (3,) * 3, (2,) * 3,
                                                                                   (1,) * 3, False)))

        checks.run("a tensor on cuda:1 while cuda:0 is current", second_gpu)

    if not quick:
        def huge():
            # (2^16 + 64) x 64 x 8^3 = 2^31 + 2^21 float16 elements: offsets past int32 must be right,
            # forward and backward; the last samples are compared with the reference.
            x = torch.randn(2**16 + 64, 64, 8, 8, 8, device=device, dtype=torch.float16)
            for k, s, p in ((2, 2, 0), (3, 2, 1)):
                x.requires_grad_(True)
                y = sp.soft_pool3d(x, k, s, p)
                (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
                x_tail = x.detach()[-3:].double().cpu()
                windows = pool_windows((8, 8, 8), (k,) * 3, (s,) * 3, (p,) * 3, False)
                expected = reference.forward(x_tail, windows)
                torch.testing.assert_close(y.detach()[-3:].double().cpu(), expected, rtol=3e-3, atol=3e-3)
                g_expected = reference.backward(torch.ones_like(expected), x_tail, windows)
                torch.testing.assert_close(gx[-3:].double().cpu(), g_expected, rtol=3e-3, atol=3e-3)
                del y, gx
                x = x.detach()
            del x
            torch.cuda.empty_cache()

        checks.run("64-bit indexing: a tensor of 2^31 + 2^21 elements", huge)
