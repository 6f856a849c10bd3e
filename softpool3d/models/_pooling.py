"""The pooling layers a model builder asks for by kind: "soft", "max" or "avg"."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _triple

from ..nn import POOL_KINDS, AdaptiveSoftPool2d, AdaptiveSoftPool3d, SoftPool2d, SoftPool3d, replace_modules
from ..ops._geometry import pool_output_size



def check_kind(kind: str, argument: str) -> str:
    if kind not in POOL_KINDS:
        raise ValueError(f"{argument} must be one of {POOL_KINDS}, got {kind!r}")
    return kind


class CountValidAvgPool3d(nn.AvgPool3d):
    """Average pooling that divides each window's sum by its count of real (not padded) elements and, like
    max and soft pooling, accepts an input shorter than the kernel when padding or ceil_mode allows a window. PyTorch's avg_pool3d refuses such an input;
    C3D's pool5 meets one on 8-frame clips.

    Shapes: (N, C, T, H, W) -> (N, C, T', H', W') with MaxPool3d's output sizes.
    """

    def __init__(self, kernel_size, stride, padding=0, ceil_mode: bool = False) -> None:
        super().__init__(_triple(kernel_size), _triple(stride), _triple(padding), ceil_mode=ceil_mode,
                         count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes = x.shape[-3:]
        if all(n >= k for n, k in zip(sizes, self.kernel_size)):
            return super().forward(x)
        # Pad (zeros) so the windows fit exactly, then divide each window's sum by its count of real elements.
        pads = []
        for n, k, s, p in zip(sizes, self.kernel_size, self.stride, self.padding):
            out = pool_output_size(n, k, s, p, self.ceil_mode)
            pads = [p, (out - 1) * s + k - n - p] + pads     # F.pad lists the last axis first
        ones = torch.ones((1, 1, *sizes), dtype=x.dtype, device=x.device)
        sums = F.avg_pool3d(F.pad(x, pads), self.kernel_size, self.stride, divisor_override=1)
        counts = F.avg_pool3d(F.pad(ones, pads), self.kernel_size, self.stride, divisor_override=1)
        return sums / counts


def pool3d(kind: str, kernel_size, stride, padding=0, ceil_mode: bool = False) -> nn.Module:
    """A 3D downsampling pool of the given kind (average pooling excludes padding, like SoftPool)."""
    check_kind(kind, "pool")
    if kind == "soft":
        return SoftPool3d(kernel_size, stride, padding, ceil_mode)
    if kind == "max":
        return nn.MaxPool3d(kernel_size, stride, padding, ceil_mode=ceil_mode)
    return CountValidAvgPool3d(kernel_size, stride, padding, ceil_mode)


def global_pool3d(kind: str, output_size=1) -> nn.Module:
    """The adaptive pool before the classifier: (N, C, T, H, W) -> (N, C, *output_size); 1 is global."""
    check_kind(kind, "head_pool")
    return {"soft": AdaptiveSoftPool3d, "max": nn.AdaptiveMaxPool3d, "avg": nn.AdaptiveAvgPool3d}[kind](output_size)


def pool2d(kind: str, kernel_size, stride, padding=0) -> nn.Module:
    """A 2D downsampling pool of the given kind."""
    check_kind(kind, "pool")
    if kind == "soft":
        return SoftPool2d(kernel_size, stride, padding)
    if kind == "max":
        return nn.MaxPool2d(kernel_size, stride, padding)
    return nn.AvgPool2d(kernel_size, stride, padding, count_include_pad=False)


def global_pool2d(kind: str) -> nn.Module:
    """(N, C, H, W) -> (N, C, 1, 1)."""
    check_kind(kind, "head_pool")
    return {"soft": AdaptiveSoftPool2d, "max": nn.AdaptiveMaxPool2d, "avg": nn.AdaptiveAvgPool2d}[kind](1)


def replace_max_pools(model: nn.Module, kind: str) -> nn.Module:
    """Turn every nn.MaxPool3d of ``model`` into a ``kind`` pool with the same geometry, in place.

    "soft" gives what ``softpool3d.nn.replace_pooling`` gives; "max" leaves the model as it is.
    Pools hold no parameters, so the model's state_dict keys and tensors do not change.
    """
    check_kind(kind, "pool")
    if kind != "max":
        replace_modules(model, lambda name, layer: pool3d(kind, layer.kernel_size, layer.stride, layer.padding,
                                                          bool(layer.ceil_mode))
                        if isinstance(layer, nn.MaxPool3d) else None)
    return model
