"""SoftPool in standard ONNX operators, for ``torch.onnx.export(..., dynamo=True)``.

``TRANSLATIONS`` maps the ``softpool3d`` custom ops to functions that the exporter traces into plain
ONNX (opset 18): no custom domain and no runtime plugin, so the file runs in a stock ONNX Runtime.
Each window is gathered explicitly, then reduced exactly as the kernels do, max first:

    m = ReduceMax(window),  e = Exp(window - m),  y = ReduceSum(e * window) / ReduceSum(e)

As in the kernels, float16 and bfloat16 input is computed in float32 (float64 in float64) and the result
rounded once to the input's type. Regular windows: the input is padded with float32's lowest finite value
(weight exp(lowest - m) = 0, so padding is excluded as in the kernels; ceil_mode pads the far end the extra
amount), and every kernel offset is one strided ``Slice``, stacked on a new axis. The padding happens after
the cast: in half precision float32's lowest value would be -inf, and 0 * -inf = NaN. Adaptive windows: one ``Slice`` per output position,
concatenated back along each axis. The spatial sizes must be static; the batch may be dynamic. Finite
inputs only: the kernels' NaN/±inf rules are not reproduced.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import torch

from ._geometry import adaptive_axis, pool_output_size

OPSET = 18


def _spatial(x, dims: int) -> list[int]:
    sizes = [x.shape[2 + i] for i in range(dims)]
    if not all(isinstance(s, int) for s in sizes):
        raise ValueError(f"SoftPool's ONNX translation needs static spatial sizes, got {x.shape}")
    return sizes


def _ints(values) -> "np.ndarray":
    return np.asarray(list(values), dtype=np.int64)


def _widened(op, x):
    """x in its accumulation type: float32 for float16/bfloat16 (as the kernels do), else as it is."""
    if x.dtype is not None and int(x.dtype) in (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16):
        return op.Cast(x, to=onnx.TensorProto.FLOAT)
    return x


def _softmax_mean(op, windows, axes: list[int]):
    """sum(softmax(w) * w) over ``axes`` of the stacked windows, max subtracted first."""
    axes_const = op.Constant(value_ints=axes)
    m = op.ReduceMax(windows, axes_const, keepdims=1)
    e = op.Exp(op.Sub(windows, m))
    return op.Div(op.ReduceSum(op.Mul(e, windows), axes_const, keepdims=0),
                  op.ReduceSum(e, axes_const, keepdims=0))


def soft_pool(x, kernel_size: list[int], stride: list[int], padding: list[int], ceil_mode: bool):
    """ONNX for ``softpool3d::soft_pool``: x (N, C, *spatial) -> (N, C, *out)."""
    from onnxscript import opset18 as op  # noqa: PLC0415

    dims = len(kernel_size)
    sizes = _spatial(x, dims)
    out = [pool_output_size(n, k, s, p, ceil_mode) for n, k, s, p in zip(sizes, kernel_size, stride, padding)]
    far = [(o - 1) * s + k - n - p for o, s, k, n, p in zip(out, stride, kernel_size, sizes, padding)]
    pads = [0, 0, *padding, 0, 0, *[max(f, 0) for f in far]]
    wide = _widened(op, x)
    lowest = op.Constant(value_float=float(np.finfo(np.float32).min))
    padded = op.Pad(wide, op.Constant(value_ints=pads), op.CastLike(lowest, wide))
    axes = list(range(2, 2 + dims))
    slices = []
    for offset in itertools.product(*[range(k) for k in kernel_size]):
        ends = [o + (n - 1) * s + 1 for o, n, s in zip(offset, out, stride)]
        window = op.Slice(padded, op.Constant(value_ints=list(offset)), op.Constant(value_ints=ends),
                          op.Constant(value_ints=axes), op.Constant(value_ints=list(stride)))
        slices.append(op.Unsqueeze(window, op.Constant(value_ints=[2])))
    stacked = op.Concat(*slices, axis=2) if len(slices) > 1 else slices[0]     # (N, C, K, *out)
    return op.CastLike(_softmax_mean(op, stacked, [2]), x)


def adaptive_soft_pool(x, output_size: list[int]):
    """ONNX for ``softpool3d::adaptive_soft_pool``: x (N, C, *spatial) -> (N, C, *output_size)."""
    from onnxscript import opset18 as op  # noqa: PLC0415

    dims = len(output_size)
    sizes = _spatial(x, dims)
    axes_list = [adaptive_axis(n, o) for n, o in zip(sizes, output_size)]
    spatial_axes = list(range(2, 2 + dims))
    wide = _widened(op, x)

    def block(position: tuple[int, ...]):
        starts = [a.starts[i] for a, i in zip(axes_list, position)]
        ends = [a.ends[i] for a, i in zip(axes_list, position)]
        window = op.Slice(wide, op.Constant(value_ints=starts), op.Constant(value_ints=ends),
                          op.Constant(value_ints=spatial_axes))
        pooled = _softmax_mean(op, window, spatial_axes)                          # (N, C)
        return op.Unsqueeze(pooled, op.Constant(value_ints=spatial_axes))       # (N, C, 1, ..., 1)

    def along(axis: int, prefix: tuple[int, ...]):
        if axis == dims:
            return block(prefix)
        parts = [along(axis + 1, prefix + (i,)) for i in range(output_size[axis])]
        return op.Concat(*parts, axis=2 + axis) if len(parts) > 1 else parts[0]

    return op.CastLike(along(0, ()), x)


TRANSLATIONS = {
    torch.ops.softpool3d.soft_pool.default: soft_pool,
    torch.ops.softpool3d.adaptive_soft_pool.default: adaptive_soft_pool,
}
