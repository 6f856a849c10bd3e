"""The pooling layers a model builder asks for by kind: "soft", "max" or "avg"."""

from __future__ import annotations

from torch import nn

from ..nn import AdaptiveSoftPool2d, AdaptiveSoftPool3d, SoftPool2d, SoftPool3d

POOL_KINDS = ("soft", "max", "avg")


def check_kind(kind: str, argument: str) -> str:
    if kind not in POOL_KINDS:
        raise ValueError(f"{argument} must be one of {POOL_KINDS}, got {kind!r}")
    return kind


def pool3d(kind: str, kernel_size, stride, padding=0, ceil_mode: bool = False) -> nn.Module:
    """A 3D downsampling pool of the given kind (average pooling excludes padding, like SoftPool)."""
    check_kind(kind, "pool")
    if kind == "soft":
        return SoftPool3d(kernel_size, stride, padding, ceil_mode)
    if kind == "max":
        return nn.MaxPool3d(kernel_size, stride, padding, ceil_mode=ceil_mode)
    return nn.AvgPool3d(kernel_size, stride, padding, ceil_mode=ceil_mode, count_include_pad=False)


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
