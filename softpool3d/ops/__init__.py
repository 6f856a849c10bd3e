"""SoftPool operators: ``y = sum_i softmax(x)_i * x_i`` over each pooling window.

Thin functional API over the ``softpool3d::*`` custom ops (see ``_registration``).
Inputs are (N, C, *spatial) or unbatched (C, *spatial), as for ``F.max_poolNd``.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

from torch import Tensor

from . import _registration
from ._geometry import adaptive_args, pool_args
from ._registration import backend_for, force_backend

__all__ = [
    "soft_pool1d", "soft_pool2d", "soft_pool3d",
    "adaptive_soft_pool1d", "adaptive_soft_pool2d", "adaptive_soft_pool3d",
    "backend_for", "force_backend",
]

IntOrTuple = Union[int, Sequence[int]]


def _batched(x: Tensor, dims: int) -> tuple[Tensor, bool]:
    unbatched = x.dim() == dims + 1
    return (x.unsqueeze(0) if unbatched else x), unbatched


def _soft_pool(x, dims, kernel_size, stride, padding, ceil_mode, dilation, fn) -> Tensor:
    kernel, strides, pads = pool_args(x, dims, kernel_size, stride, padding, ceil_mode, dilation, fn)
    xb, unbatched = _batched(x, dims)
    y = _registration.soft_pool(xb, list(kernel), list(strides), list(pads), ceil_mode)
    return y.squeeze(0) if unbatched else y


def _adaptive(x, dims, output_size, fn) -> Tensor:
    sizes = adaptive_args(x, dims, output_size, fn)
    xb, unbatched = _batched(x, dims)
    y = _registration.adaptive_soft_pool(xb, list(sizes))
    return y.squeeze(0) if unbatched else y


def soft_pool1d(x: Tensor, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None,
                padding: IntOrTuple = 0, ceil_mode: bool = False, *, dilation: IntOrTuple = 1) -> Tensor:
    """SoftPool over L. x: (N, C, L) or (C, L) -> (N, C, L_out) or (C, L_out), L_out as in max_pool1d."""
    return _soft_pool(x, 1, kernel_size, stride, padding, ceil_mode, dilation, "soft_pool1d")


def soft_pool2d(x: Tensor, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None,
                padding: IntOrTuple = 0, ceil_mode: bool = False, *, dilation: IntOrTuple = 1) -> Tensor:
    """SoftPool over (H, W). x: (N, C, H, W) or (C, H, W) -> (N, C, H_out, W_out) as in max_pool2d."""
    return _soft_pool(x, 2, kernel_size, stride, padding, ceil_mode, dilation, "soft_pool2d")


def soft_pool3d(x: Tensor, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None,
                padding: IntOrTuple = 0, ceil_mode: bool = False, *, dilation: IntOrTuple = 1) -> Tensor:
    """SoftPool over (T, H, W). x: (N, C, T, H, W) or (C, T, H, W) -> (N, C, T_out, H_out, W_out).

    Each window returns ``sum_i softmax(x)_i * x_i`` over its valid positions (padding is
    excluded); stride defaults to kernel_size; output sizes equal ``F.max_pool3d``'s.
    """
    return _soft_pool(x, 3, kernel_size, stride, padding, ceil_mode, dilation, "soft_pool3d")


def adaptive_soft_pool1d(x: Tensor, output_size: IntOrTuple) -> Tensor:
    """Adaptive SoftPool. x: (N, C, L) or (C, L) -> (N, C, output_size); windows as in adaptive_avg_pool1d."""
    return _adaptive(x, 1, output_size, "adaptive_soft_pool1d")


def adaptive_soft_pool2d(x: Tensor, output_size: IntOrTuple) -> Tensor:
    """Adaptive SoftPool. x: (N, C, H, W) or (C, H, W) -> (N, C, *output_size); None keeps a size."""
    return _adaptive(x, 2, output_size, "adaptive_soft_pool2d")


def adaptive_soft_pool3d(x: Tensor, output_size: IntOrTuple) -> Tensor:
    """Adaptive SoftPool. x: (N, C, T, H, W) or (C, T, H, W) -> (N, C, *output_size).

    Output index i pools [floor(i*L/out), ceil((i+1)*L/out)) per axis; ``output_size=1`` is global SoftPool.
    """
    return _adaptive(x, 3, output_size, "adaptive_soft_pool3d")
