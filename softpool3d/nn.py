"""SoftPool modules and ``replace_pooling``, which swaps a model's pooling layers for SoftPool."""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Optional

from torch import Tensor, nn

from . import ops
from .ops._geometry import check_output_size, check_pool_args

logger = logging.getLogger("softpool3d")

# The pooling kinds a model or the demo can ask for; "soft" is SoftPool.
POOL_KINDS = ("soft", "max", "avg")

__all__ = [
    "POOL_KINDS", "SoftPool1d", "SoftPool2d", "SoftPool3d",
    "AdaptiveSoftPool1d", "AdaptiveSoftPool2d", "AdaptiveSoftPool3d",
    "replace_modules", "replace_pooling",
]


class _SoftPoolNd(nn.Module):
    dims = 0
    _fn = None

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False) -> None:
        super().__init__()
        check_pool_args(self.dims, kernel_size, stride, padding, ceil_mode, 1, type(self).__name__)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = ceil_mode

    def forward(self, x: Tensor) -> Tensor:
        return type(self)._fn(x, self.kernel_size, self.stride, self.padding, self.ceil_mode)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, ceil_mode={self.ceil_mode}"


class SoftPool1d(_SoftPoolNd):
    """SoftPool over L: (N, C, L) or (C, L) -> (N, C, L_out); arguments as nn.MaxPool1d."""

    dims = 1
    _fn = staticmethod(ops.soft_pool1d)


class SoftPool2d(_SoftPoolNd):
    """SoftPool over (H, W): (N, C, H, W) or (C, H, W) -> (N, C, H_out, W_out); arguments as nn.MaxPool2d."""

    dims = 2
    _fn = staticmethod(ops.soft_pool2d)


class SoftPool3d(_SoftPoolNd):
    """SoftPool over (T, H, W): (N, C, T, H, W) or (C, T, H, W) -> (N, C, T_out, H_out, W_out)."""

    dims = 3
    _fn = staticmethod(ops.soft_pool3d)


class _AdaptiveSoftPoolNd(nn.Module):
    dims = 0
    _fn = None

    def __init__(self, output_size) -> None:
        super().__init__()
        check_output_size(self.dims, output_size, type(self).__name__)
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        return type(self)._fn(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveSoftPool1d(_AdaptiveSoftPoolNd):
    """Adaptive SoftPool: (N, C, L) -> (N, C, output_size), windows as nn.AdaptiveAvgPool1d."""

    dims = 1
    _fn = staticmethod(ops.adaptive_soft_pool1d)


class AdaptiveSoftPool2d(_AdaptiveSoftPoolNd):
    """Adaptive SoftPool: (N, C, H, W) -> (N, C, *output_size), windows as nn.AdaptiveAvgPool2d."""

    dims = 2
    _fn = staticmethod(ops.adaptive_soft_pool2d)


class AdaptiveSoftPool3d(_AdaptiveSoftPoolNd):
    """Adaptive SoftPool: (N, C, T, H, W) -> (N, C, *output_size); output_size=1 is global SoftPool."""

    dims = 3
    _fn = staticmethod(ops.adaptive_soft_pool3d)


_POOL_KINDS = {
    "max": {
        nn.MaxPool1d: SoftPool1d, nn.MaxPool2d: SoftPool2d, nn.MaxPool3d: SoftPool3d,
        nn.AdaptiveMaxPool1d: AdaptiveSoftPool1d, nn.AdaptiveMaxPool2d: AdaptiveSoftPool2d,
        nn.AdaptiveMaxPool3d: AdaptiveSoftPool3d,
    },
    "avg": {
        nn.AvgPool1d: SoftPool1d, nn.AvgPool2d: SoftPool2d, nn.AvgPool3d: SoftPool3d,
        nn.AdaptiveAvgPool1d: AdaptiveSoftPool1d, nn.AdaptiveAvgPool2d: AdaptiveSoftPool2d,
        nn.AdaptiveAvgPool3d: AdaptiveSoftPool3d,
    },
}


def _soft_equivalent(name: str, layer: nn.Module, target: type) -> nn.Module:
    """The SoftPool module with ``layer``'s geometry, or a ValueError naming the layer."""
    label = f"{name or '<root>'} ({type(layer).__name__})"
    if getattr(layer, "return_indices", False):
        raise ValueError(f"replace_pooling: cannot replace {label}: return_indices=True has no SoftPool equivalent")
    dilation = getattr(layer, "dilation", 1)
    if any(d != 1 for d in (dilation if isinstance(dilation, (tuple, list)) else (dilation,))):
        raise ValueError(f"replace_pooling: cannot replace {label}: dilation={dilation} is not supported")
    if getattr(layer, "divisor_override", None) is not None:
        raise ValueError(f"replace_pooling: cannot replace {label}: divisor_override has no SoftPool equivalent")
    if issubclass(target, _AdaptiveSoftPoolNd):
        return target(layer.output_size)
    return target(layer.kernel_size, layer.stride, layer.padding, bool(layer.ceil_mode))


def replace_pooling(module: nn.Module, include: Iterable[str] = ("max",)) -> nn.Module:
    """Swap pooling layers of ``module`` for SoftPool modules with the same geometry, in place.

    ``include`` picks the kinds: ``"max"`` (nn.MaxPoolNd, nn.AdaptiveMaxPoolNd) and/or ``"avg"``
    (nn.AvgPoolNd, nn.AdaptiveAvgPoolNd). Returns the module (a new one if ``module`` itself is a pool).
    """
    kinds = (include,) if isinstance(include, str) else tuple(include)
    unknown = [k for k in kinds if k not in _POOL_KINDS]
    if unknown:
        raise ValueError(f"replace_pooling: unknown include={unknown}; choose from {sorted(_POOL_KINDS)}")
    mapping: dict[type, type] = {}
    for kind in kinds:
        mapping.update(_POOL_KINDS[kind])

    def make(name: str, layer: nn.Module) -> Optional[nn.Module]:
        target = mapping.get(type(layer))
        return None if target is None else _soft_equivalent(name, layer, target)

    module, count = replace_modules(module, make)
    logger.info("replace_pooling: replaced %d pooling layer(s) with SoftPool", count)
    return module


def replace_modules(module: nn.Module, make: Callable[[str, nn.Module], Optional[nn.Module]]) -> tuple[nn.Module, int]:
    """Swap every submodule for which ``make(name, layer)`` returns a module, in place.

    Every replacement is built before any is made, so an error in ``make`` leaves the model untouched.
    Returns the module (a new one if ``module`` itself is replaced) and the number of replacements.
    """
    root = make("", module)
    if root is not None:
        return root, 1
    replacements = [(name, new) for name, layer in module.named_modules() if name
                    for new in [make(name, layer)] if new is not None]
    for name, new_layer in replacements:
        parent_name, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent_name) if parent_name else module, child, new_layer)
    return module, len(replacements)
