"""Triton kernels for SoftPool: the CUDA implementation of the ``softpool3d`` ops (see ``_registration``).

Triton compiles them at first call, so the GPU path needs no build step. With
``TRITON_INTERPRET=1`` (set before this module is imported) they also run on
CPU tensors, slowly, which is how CI tests them.

Every problem is lifted to 3D: (N, C, L) and (N, C, H, W) are viewed as
(N, C, 1, 1, L) and (N, C, 1, H, W). Tensors are addressed through their
strides, so contiguous and channels_last(_3d) inputs are read in place; the
flat index enumerates outputs (or inputs) in the output's memory order so that
neighbouring lanes write neighbouring addresses. Offsets are 64-bit.

Math (per window, accumulated in float32, or float64 for float64 input)::

    m = max x,  s = sum exp(x - m),  y = sum exp(x - m) * x / s
    dL/dx_i = sum over windows o containing i of g_o * w_oi * (1 + x_i - y_o)

Backward is deterministic and uses no atomics:

- windows that do not overlap (stride >= kernel, the common k=s=2 case): one
  kernel per output window recomputes m, s and y and writes the gradient of
  each of its inputs, which no other window touches;
- overlapping windows: a stats kernel stores per window ``lse = m + log s``,
  ``y`` (recomputed in float32) and the upstream gradient, then a gather kernel
  sums, for each input, over the few windows that contain it.

The gather costs one extra pass over x compared with atomics, and buys
bit-identical gradients from run to run.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._geometry import Windows, lift, output_memory_format

def _as_5d(t: Tensor) -> Tensor:
    while t.dim() < 5:
        t = t.unsqueeze(2)
    return t


def _disjoint(windows: Windows) -> bool:
    return all(e <= s for a in windows for e, s in zip(a.ends[:-1], a.starts[1:]))


def _covers_all(windows: Windows) -> bool:
    return all(
        a.starts[0] == 0 and a.ends[-1] == a.length and all(e == s for e, s in zip(a.ends[:-1], a.starts[1:]))
        for a in windows
    )


def _block(total: int) -> int:
    # The interpreter runs one program at a time in numpy: few large programs are fastest.
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return max(16, min(triton.next_power_of_2(total), 8192))
    return 256


def _strides(t: Tensor) -> tuple[int, ...]:
    return tuple(t.stride())


# ------------------------------------------------------------------ device helpers


@triton.jit
def _decode(idx, C, A, B, E, CHANNELS_LAST: tl.constexpr):
    """Flat index -> (n, c, a, b, e) of an (N, C, A, B, E) tensor enumerated in contiguous or channels-last order."""
    if CHANNELS_LAST:
        c = idx % C
        rest = idx // C
        e = rest % E
        rest = rest // E
        b = rest % B
        rest = rest // B
        a = rest % A
        n = rest // A
    else:
        e = idx % E
        rest = idx // E
        b = rest % B
        rest = rest // B
        a = rest % A
        rest = rest // A
        c = rest % C
        n = rest // C
    return n, c, a, b, e


@triton.jit
def _window(o, L, O, k, s, p, ADAPTIVE: tl.constexpr):
    """Input range [lo, hi) of window o along one axis, clipped to [0, L)."""
    if ADAPTIVE:
        lo = (o * L) // O
        hi = ((o + 1) * L + O - 1) // O
    else:
        raw = o * s - p
        lo = tl.maximum(raw, 0)
        hi = tl.minimum(raw + k, L)
    return lo, hi


@triton.jit
def _output_window(idx, C, D, H, W, OD, OH, OW, kD, kH, kW, sD, sH, sW, pD, pH, pW,
                   ADAPTIVE: tl.constexpr, CHANNELS_LAST: tl.constexpr):
    """Flat output index -> (n, c, od, oh, ow) and its window's input ranges along D, H and W."""
    n, c, od, oh, ow = _decode(idx, C, OD, OH, OW, CHANNELS_LAST)
    d0, d1 = _window(od, D, OD, kD, sD, pD, ADAPTIVE)
    h0, h1 = _window(oh, H, OH, kH, sH, pH, ADAPTIVE)
    w0, w1 = _window(ow, W, OW, kW, sW, pW, ADAPTIVE)
    return n, c, od, oh, ow, d0, d1, h0, h1, w0, w1


@triton.jit
def _covering(i, L, O, k, s, p, ADAPTIVE: tl.constexpr):
    """Range [lo, hi] of the windows that contain input position i along one axis."""
    if ADAPTIVE:
        lo = (i * O) // L
        hi = ((i + 1) * O - 1) // L
    else:
        # o * s - p <= i < o * s - p + k; numerators kept >= 0 so that // is a floor.
        lo = (tl.maximum(i + p - k + 1, 0) + s - 1) // s
        hi = (i + p) // s
    return lo, tl.minimum(hi, O - 1)


@triton.jit
def _window_stats(x_ptr, base, d0, d1, h0, h1, w0, w1, sxD, sxH, sxW, mask,
                  KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """Per lane, in one pass over the window: m (max), s = sum exp(x - m), t = sum exp(x - m) * x,
    a NaN flag and the number of +inf entries.

    Online max: a value above the running max m rescales s and t by exp(m - v) and adds 1 and v;
    any other finite value adds exp(v - m) and exp(v - m) * v. One exp per element either way.
    """
    m = tl.full([BLOCK], float("-inf"), ACC)
    s = tl.zeros([BLOCK], ACC)
    t = tl.zeros([BLOCK], ACC)
    has_nan = tl.zeros([BLOCK], tl.int1)
    n_inf = tl.zeros([BLOCK], ACC)
    for kd in range(KD):
        for kh in range(KH):
            for kw in range(KW):
                d, h, w = d0 + kd, h0 + kh, w0 + kw
                valid = mask & (d < d1) & (h < h1) & (w < w1)
                v = tl.load(x_ptr + base + d * sxD + h * sxH + w * sxW, mask=valid, other=float("-inf")).to(ACC)
                has_nan = has_nan | (v != v)
                n_inf += tl.where(v == float("inf"), 1.0, 0.0)
                # Only finite values enter s and t; NaN and +inf windows get their result from the rules.
                go = (v > float("-inf")) & (v < float("inf")) & (m < float("inf"))
                above = v > m
                scale = tl.exp(tl.where(go, tl.where(above, m - v, v - m), 0.0))
                s = tl.where(go, tl.where(above, s * scale + 1.0, s + scale), s)
                t = tl.where(go, tl.where(above, t * scale + v, t + scale * v), t)
                m = tl.where(v != v, m, tl.maximum(m, v))
    return m, s, t, has_nan, n_inf


@triton.jit
def _finish(m, s, t, has_nan):
    """y from the window statistics, with the non-finite rules."""
    y = t / s
    y = tl.where(m == float("inf"), float("inf"), y)
    y = tl.where(m == float("-inf"), float("-inf"), y)
    return tl.where(has_nan, float("nan"), y)


# ------------------------------------------------------------------ kernels


@triton.jit
def _forward_kernel(
    x_ptr, y_ptr, total, C, D, H, W, OD, OH, OW,
    kD, kH, kW, sD, sH, sW, pD, pH, pW,
    sxN, sxC, sxD, sxH, sxW, syN, syC, syD, syH, syW,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    ADAPTIVE: tl.constexpr, CHANNELS_LAST: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = idx < total
    n, c, od, oh, ow, d0, d1, h0, h1, w0, w1 = _output_window(idx, C, D, H, W, OD, OH, OW, kD, kH, kW, sD, sH, sW,
                                                              pD, pH, pW, ADAPTIVE, CHANNELS_LAST)
    m, s, t, has_nan, n_inf = _window_stats(x_ptr, n * sxN + c * sxC, d0, d1, h0, h1, w0, w1, sxD, sxH, sxW, mask,
                                            KD, KH, KW, ACC, BLOCK)
    y = _finish(m, s, t, has_nan)
    tl.store(y_ptr + n * syN + c * syC + od * syD + oh * syH + ow * syW, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _disjoint_backward_kernel(
    g_ptr, x_ptr, dx_ptr, total, C, D, H, W, OD, OH, OW,
    kD, kH, kW, sD, sH, sW, pD, pH, pW,
    sgN, sgC, sgD, sgH, sgW, sxN, sxC, sxD, sxH, sxW, sdN, sdC, sdD, sdH, sdW,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    ADAPTIVE: tl.constexpr, CHANNELS_LAST: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    """One lane per window; no two windows share an input, so each lane owns the gradient it writes."""
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = idx < total
    n, c, od, oh, ow, d0, d1, h0, h1, w0, w1 = _output_window(idx, C, D, H, W, OD, OH, OW, kD, kH, kW, sD, sH, sW,
                                                              pD, pH, pW, ADAPTIVE, CHANNELS_LAST)
    x_base = n * sxN + c * sxC
    m, s, t, has_nan, n_inf = _window_stats(x_ptr, x_base, d0, d1, h0, h1, w0, w1, sxD, sxH, sxW, mask,
                                            KD, KH, KW, ACC, BLOCK)
    y = _finish(m, s, t, has_nan)
    g = tl.load(g_ptr + n * sgN + c * sgC + od * sgD + oh * sgH + ow * sgW, mask=mask, other=0.0).to(ACC)
    finite = (m == m) & (tl.abs(m) != float("inf"))
    shift = tl.where(finite, m, 0.0)
    scale = g / s
    share = g / tl.maximum(n_inf, 1.0)
    dx_base = n * sdN + c * sdC
    for kd in range(KD):
        for kh in range(KH):
            for kw in range(KW):
                d, h, w = d0 + kd, h0 + kh, w0 + kw
                valid = mask & (d < d1) & (h < h1) & (w < w1)
                v = tl.load(x_ptr + x_base + d * sxD + h * sxH + w * sxW, mask=valid, other=float("-inf")).to(ACC)
                e = tl.exp(v - shift)
                grad = tl.where(e > 0, scale * e * (1.0 + v - y), 0.0)
                grad = tl.where(m == float("inf"), tl.where(v == float("inf"), share, 0.0), grad)
                grad = tl.where(m == float("-inf"), 0.0, grad)
                grad = tl.where(has_nan, float("nan"), grad)
                tl.store(dx_ptr + dx_base + d * sdD + h * sdH + w * sdW, grad.to(dx_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _stats_kernel(
    g_ptr, x_ptr, lse_ptr, y_ptr, coef_ptr, total, C, D, H, W, OD, OH, OW,
    kD, kH, kW, sD, sH, sW, pD, pH, pW,
    sgN, sgC, sgD, sgH, sgW, sxN, sxC, sxD, sxH, sxW,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    ADAPTIVE: tl.constexpr, CHANNELS_LAST: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    """Per window, for the gather: lse = m + log s (+inf, -inf or NaN for those windows), y, and the gradient
    coefficient (g, or g shared among the +inf entries). The three buffers are laid out in flat index order."""
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = idx < total
    n, c, od, oh, ow, d0, d1, h0, h1, w0, w1 = _output_window(idx, C, D, H, W, OD, OH, OW, kD, kH, kW, sD, sH, sW,
                                                              pD, pH, pW, ADAPTIVE, CHANNELS_LAST)
    m, s, t, has_nan, n_inf = _window_stats(x_ptr, n * sxN + c * sxC, d0, d1, h0, h1, w0, w1, sxD, sxH, sxW, mask,
                                            KD, KH, KW, ACC, BLOCK)
    y = _finish(m, s, t, has_nan)
    g = tl.load(g_ptr + n * sgN + c * sgC + od * sgD + oh * sgH + ow * sgW, mask=mask, other=0.0).to(ACC)
    lse = tl.where(m == float("-inf"), float("-inf"), m + tl.log(s))
    lse = tl.where(m == float("inf"), float("inf"), lse)
    lse = tl.where(has_nan, float("nan"), lse)
    coef = tl.where(m == float("inf"), g / tl.maximum(n_inf, 1.0), g)
    tl.store(lse_ptr + idx, lse, mask=mask)
    tl.store(y_ptr + idx, y, mask=mask)
    tl.store(coef_ptr + idx, coef, mask=mask)


@triton.jit
def _gather_backward_kernel(
    x_ptr, lse_ptr, y_ptr, coef_ptr, dx_ptr, total, C, D, H, W, OD, OH, OW,
    kD, kH, kW, sD, sH, sW, pD, pH, pW,
    sxN, sxC, sxD, sxH, sxW, sdN, sdC, sdD, sdH, sdW,
    ND: tl.constexpr, NH: tl.constexpr, NW: tl.constexpr,
    ADAPTIVE: tl.constexpr, CHANNELS_LAST: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    """One lane per input: sums the contributions of the (at most ND*NH*NW) windows that contain it."""
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = idx < total
    n, c, d, h, w = _decode(idx, C, D, H, W, CHANNELS_LAST)
    v = tl.load(x_ptr + n * sxN + c * sxC + d * sxD + h * sxH + w * sxW, mask=mask, other=0.0).to(ACC)
    od0, od1 = _covering(d, D, OD, kD, sD, pD, ADAPTIVE)
    oh0, oh1 = _covering(h, H, OH, kH, sH, pH, ADAPTIVE)
    ow0, ow1 = _covering(w, W, OW, kW, sW, pW, ADAPTIVE)
    acc = tl.zeros([BLOCK], ACC)
    for jd in range(ND):
        for jh in range(NH):
            for jw in range(NW):
                od, oh, ow = od0 + jd, oh0 + jh, ow0 + jw
                valid = mask & (od <= od1) & (oh <= oh1) & (ow <= ow1)
                if CHANNELS_LAST:
                    o = (((n * OD + od) * OH + oh) * OW + ow) * C + c
                else:
                    o = (((n * C + c) * OD + od) * OH + oh) * OW + ow
                lse = tl.load(lse_ptr + o, mask=valid, other=float("-inf"))
                y = tl.load(y_ptr + o, mask=valid, other=0.0)
                coef = tl.load(coef_ptr + o, mask=valid, other=0.0)
                e = tl.exp(v - tl.where(lse == lse, lse, 0.0))
                term = tl.where(e > 0, coef * e * (1.0 + v - y), 0.0)
                term = tl.where(lse == float("inf"), tl.where(v == float("inf"), coef, 0.0), term)
                term = tl.where(lse == float("-inf"), 0.0, term)
                term = tl.where(lse != lse, float("nan"), term)
                acc += term
    tl.store(dx_ptr + n * sdN + c * sdC + d * sdD + h * sdH + w * sdW, acc.to(dx_ptr.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------ host side


def _geometry_args(axes) -> list[int]:
    d, h, w = axes
    return [d.kernel, h.kernel, w.kernel, d.stride, h.stride, w.stride, d.padding, h.padding, w.padding]


# When set (by ``recording_launches``), launches are appended here instead of run: (kernel, args, constexprs).
_recorded: Optional[list] = None


@contextlib.contextmanager
def recording_launches() -> Iterator[list]:
    """Record what the host code would launch, without launching: the ahead-of-time compile check's source."""
    global _recorded
    _recorded = []
    try:
        yield _recorded
    finally:
        _recorded = None


def _launch(kernel, total: int, args: list, constexprs: dict, device: torch.device) -> None:
    if total == 0:
        return
    block = _block(total)
    if _recorded is not None:
        _recorded.append((kernel, args, {**constexprs, "BLOCK": block}))
        return
    grid = (triton.cdiv(total, block),)
    if device.type == "cuda":
        with torch.cuda.device(device):
            kernel[grid](*args, BLOCK=block, **constexprs)
    else:
        kernel[grid](*args, BLOCK=block, **constexprs)


def _common(x: Tensor, windows: Windows):
    axes = lift(windows)
    adaptive = windows[0].kernel == 0  # all axes are adaptive or none is
    fmt = output_memory_format(x)
    channels_last = fmt != torch.contiguous_format
    acc = tl.float64 if x.dtype == torch.float64 else tl.float32
    sizes = [x.shape[1], *(a.length for a in axes), *(a.out for a in axes)]
    return axes, adaptive, fmt, channels_last, acc, sizes


def forward(x: Tensor, windows: Windows) -> Tensor:
    """SoftPool of x (N, C, *spatial) over ``windows`` -> (N, C, *out), in x's dtype and memory format."""
    axes, adaptive, fmt, channels_last, acc, sizes = _common(x, windows)
    y = x.new_empty((*x.shape[:2], *(a.out for a in axes[3 - len(windows):]))).contiguous(memory_format=fmt)
    x5, y5 = _as_5d(x), _as_5d(y)
    total = y.numel()
    args = [x5, y5, total, *sizes, *_geometry_args(axes), *_strides(x5), *_strides(y5)]
    constexprs = dict(KD=axes[0].window, KH=axes[1].window, KW=axes[2].window,
                      ADAPTIVE=adaptive, CHANNELS_LAST=channels_last, ACC=acc)
    _launch(_forward_kernel, total, args, constexprs, x.device)
    return y


def backward(grad: Tensor, x: Tensor, windows: Windows) -> Tensor:
    """Exact dL/dx (N, C, *spatial) from dL/dy (N, C, *out) and x; y is recomputed in the accumulation dtype."""
    axes, adaptive, fmt, channels_last, acc, sizes = _common(x, windows)
    geometry = _geometry_args(axes)
    x5, g5 = _as_5d(x), _as_5d(grad)
    if _disjoint(windows):
        dx = (torch.empty_like if _covers_all(windows) else torch.zeros_like)(x, memory_format=fmt)
        dx5 = _as_5d(dx)
        total = grad.numel()
        args = [g5, x5, dx5, total, *sizes, *geometry, *_strides(g5), *_strides(x5), *_strides(dx5)]
        constexprs = dict(KD=axes[0].window, KH=axes[1].window, KW=axes[2].window,
                          ADAPTIVE=adaptive, CHANNELS_LAST=channels_last, ACC=acc)
        _launch(_disjoint_backward_kernel, total, args, constexprs, x.device)
        return dx

    stats_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    lse, y_acc, coef = (torch.empty(grad.numel(), dtype=stats_dtype, device=x.device) for _ in range(3))
    total = grad.numel()
    args = [g5, x5, lse, y_acc, coef, total, *sizes, *geometry, *_strides(g5), *_strides(x5)]
    constexprs = dict(KD=axes[0].window, KH=axes[1].window, KW=axes[2].window,
                      ADAPTIVE=adaptive, CHANNELS_LAST=channels_last, ACC=acc)
    _launch(_stats_kernel, total, args, constexprs, x.device)

    dx = torch.empty_like(x, memory_format=fmt)
    dx5 = _as_5d(dx)
    total = x.numel()
    args = [x5, lse, y_acc, coef, dx5, total, *sizes, *geometry, *_strides(x5), *_strides(dx5)]
    constexprs = dict(ND=axes[0].covers, NH=axes[1].covers, NW=axes[2].covers,
                      ADAPTIVE=adaptive, CHANNELS_LAST=channels_last, ACC=acc)
    _launch(_gather_backward_kernel, total, args, constexprs, x.device)
    return dx
