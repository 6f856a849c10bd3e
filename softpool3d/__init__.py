"""softpool3d: exact, stable and fast SoftPool for PyTorch, and video action recognition around it."""

from .nn import (
    AdaptiveSoftPool1d,
    AdaptiveSoftPool2d,
    AdaptiveSoftPool3d,
    SoftPool1d,
    SoftPool2d,
    SoftPool3d,
    replace_pooling,
)
from .ops import (
    adaptive_soft_pool1d,
    adaptive_soft_pool2d,
    adaptive_soft_pool3d,
    backend_for,
    soft_pool1d,
    soft_pool2d,
    soft_pool3d,
)

__version__ = "0.1.0"

__all__ = [
    "soft_pool1d", "soft_pool2d", "soft_pool3d",
    "adaptive_soft_pool1d", "adaptive_soft_pool2d", "adaptive_soft_pool3d",
    "SoftPool1d", "SoftPool2d", "SoftPool3d",
    "AdaptiveSoftPool1d", "AdaptiveSoftPool2d", "AdaptiveSoftPool3d",
    "replace_pooling", "backend_for",
]
