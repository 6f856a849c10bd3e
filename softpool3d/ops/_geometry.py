"""Argument checking and pooling-window geometry shared by every backend.

A pooling problem is described per spatial axis by ``AxisWindows``: the input
length and, for each output position ``o``, the half-open input range
``[starts[o], ends[o])`` that its window covers after clipping to the input.
Padding positions are never part of a window, so they get zero weight.
Regular and adaptive pooling differ only in how these ranges are computed.
"""

from __future__ import annotations

import functools
import numbers
from typing import NamedTuple, Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class AxisWindows(NamedTuple):
    """The windows along one axis: what every backend receives (the C++ kernel as ``flat_windows``)."""

    length: int
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    # Regular windows (o * stride - padding, of size kernel, clipped) record their rule;
    # adaptive windows have kernel 0.
    kernel: int = 0
    stride: int = 0
    padding: int = 0

    @property
    def out(self) -> int:
        return len(self.starts)

    @property
    def window(self) -> int:
        """The largest window after clipping (a kernel's loop bound)."""
        return _bounds(self)[0]

    @property
    def covers(self) -> int:
        """The most windows that contain one input position (a gather's loop bound)."""
        return _bounds(self)[1]


@functools.lru_cache(maxsize=4096)
def _bounds(axis: AxisWindows) -> tuple[int, int]:
    window = max(e - s for s, e in zip(axis.starts, axis.ends))
    change = [0] * (axis.length + 1)
    for s, e in zip(axis.starts, axis.ends):
        change[s] += 1
        change[e] -= 1
    covers = running = 0
    for c in change[:-1]:
        running += c
        covers = max(covers, running)
    return window, covers


Windows = tuple[AxisWindows, ...]


def _as_tuple(value, dims: int, name: str, fn: str, allow_none: bool = False) -> tuple:
    if isinstance(value, (list, tuple, torch.Size)):
        items = tuple(value)
        if len(items) == 1:
            items = items * dims
        if len(items) != dims:
            raise ValueError(f"{fn}: {name} must be an int or a tuple of {dims} ints, got {value!r}")
    else:
        items = (value,) * dims
    for item in items:
        if item is None and allow_none:
            continue
        if isinstance(item, bool) or not isinstance(item, numbers.Integral):
            raise ValueError(f"{fn}: {name} must contain ints, got {value!r}")
    return tuple(None if item is None else int(item) for item in items)


def check_input(x: torch.Tensor, dims: int, fn: str) -> None:
    """Raise a ValueError naming ``x`` if it is not a (N, C, *spatial) or (C, *spatial) float tensor."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{fn}: input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (dims + 1, dims + 2):
        raise ValueError(
            f"{fn}: input must have {dims + 1} dims (C, *spatial) or {dims + 2} dims "
            f"(N, C, *spatial) for {dims}D pooling, got shape {tuple(x.shape)}"
        )
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"{fn}: input must be float16, bfloat16, float32 or float64, got {x.dtype}"
        )
    spatial = x.shape[-dims:]
    if any(size == 0 for size in spatial):
        raise ValueError(f"{fn}: input has an empty spatial dim, shape {tuple(x.shape)}")


def pool_output_size(length: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """Output length of max pooling along one axis (PyTorch's rule, ceil_mode included)."""
    numerator = length + 2 * padding - kernel + (stride - 1 if ceil_mode else 0)
    out = numerator // stride + 1
    # In ceil mode the last window must start inside the input or the left padding.
    if ceil_mode and (out - 1) * stride >= length + padding:
        out -= 1
    return out


def check_pool_args(
    dims: int, kernel_size, stride, padding, ceil_mode, dilation, fn: str
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Validate pooling arguments; return (kernel, stride, padding) as tuples of ``dims`` ints."""
    kernel = _as_tuple(kernel_size, dims, "kernel_size", fn)
    no_stride = stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0)
    strides = kernel if no_stride else _as_tuple(stride, dims, "stride", fn)
    pads = _as_tuple(padding, dims, "padding", fn)
    dil = _as_tuple(dilation, dims, "dilation", fn)
    if not isinstance(ceil_mode, bool):
        raise ValueError(f"{fn}: ceil_mode must be a bool, got {ceil_mode!r}")
    if any(d != 1 for d in dil):
        raise ValueError(f"{fn}: dilation={dilation!r} is not supported; SoftPool windows are dense (dilation=1)")
    if any(k < 1 for k in kernel):
        raise ValueError(f"{fn}: kernel_size must be >= 1, got {kernel_size!r}")
    if any(s < 1 for s in strides):
        raise ValueError(f"{fn}: stride must be >= 1, got {stride!r}")
    if any(p < 0 for p in pads):
        raise ValueError(f"{fn}: padding must be >= 0, got {padding!r}")
    if any(p > k // 2 for p, k in zip(pads, kernel)):
        raise ValueError(
            f"{fn}: padding should be at most half of kernel_size, got padding={padding!r} "
            f"and kernel_size={kernel_size!r}"
        )
    return kernel, strides, pads


def pool_args(
    x: torch.Tensor, dims: int, kernel_size, stride, padding, ceil_mode, dilation, fn: str
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Validate ``x`` and the pooling arguments together (the output must not be empty)."""
    check_input(x, dims, fn)
    kernel, strides, pads = check_pool_args(dims, kernel_size, stride, padding, ceil_mode, dilation, fn)
    spatial = tuple(x.shape[-dims:])
    out = tuple(pool_output_size(n, k, s, p, ceil_mode) for n, k, s, p in zip(spatial, kernel, strides, pads))
    if any(o < 1 for o in out):
        raise ValueError(
            f"{fn}: output size would be {out} for input spatial size {spatial}; "
            f"kernel_size={kernel_size!r} with padding={padding!r} is too large"
        )
    return kernel, strides, pads


def check_output_size(dims: int, output_size, fn: str) -> tuple:
    sizes = _as_tuple(output_size, dims, "output_size", fn, allow_none=True)
    if any(o is not None and o < 1 for o in sizes):
        raise ValueError(f"{fn}: output_size must be >= 1, got {output_size!r}")
    return sizes


def adaptive_args(x: torch.Tensor, dims: int, output_size, fn: str) -> tuple[int, ...]:
    """Validate an adaptive output size; ``None`` entries keep the input size."""
    check_input(x, dims, fn)
    sizes = check_output_size(dims, output_size, fn)
    return tuple(n if o is None else o for o, n in zip(sizes, x.shape[-dims:]))


@functools.lru_cache(maxsize=4096)
def pool_axis(length: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> AxisWindows:
    out = pool_output_size(length, kernel, stride, padding, ceil_mode)
    starts = tuple(max(o * stride - padding, 0) for o in range(out))
    ends = tuple(min(o * stride - padding + kernel, length) for o in range(out))
    return AxisWindows(length, starts, ends, kernel, stride, padding)


@functools.lru_cache(maxsize=4096)
def adaptive_axis(length: int, out: int) -> AxisWindows:
    starts = tuple((o * length) // out for o in range(out))
    ends = tuple(-((-(o + 1) * length) // out) for o in range(out))
    return AxisWindows(length, starts, ends)


def pool_windows(spatial: Sequence[int], kernel, stride, padding, ceil_mode: bool) -> Windows:
    return tuple(pool_axis(int(n), k, s, p, ceil_mode) for n, k, s, p in zip(spatial, kernel, stride, padding))


def adaptive_windows(spatial: Sequence[int], output_size: Sequence[int]) -> Windows:
    return tuple(adaptive_axis(int(n), int(o)) for n, o in zip(spatial, output_size))


def output_memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last(_3d) when ``x`` is strictly in that layout, else contiguous (the kernels' rule)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


UNIT_AXIS = AxisWindows(1, (0,), (1,), 1, 1, 0)


def lift(windows: Windows) -> Windows:
    """Windows of 1 to 3 axes as exactly three (depth, height, width), leading unit axes first."""
    return (UNIT_AXIS,) * (3 - len(windows)) + tuple(windows)


def flat_windows(windows: Windows) -> list[int]:
    """Windows of 1 to 3 axes as the flat int list the C++ kernel reads.

    Three axes (leading ones of length 1 for 1D/2D), each as
    [L, O, kernel, stride, padding, starts..., ends...]; kernel 0 marks adaptive windows.
    """
    flat: list[int] = []
    for axis in lift(windows):
        flat += [axis.length, len(axis.starts), axis.kernel, axis.stride, axis.padding, *axis.starts, *axis.ends]
    return flat
