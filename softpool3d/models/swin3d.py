"""Video Swin Transformers (Liu et al., 2022), tiny, small and base, from torchvision.

They downsample by patch merging (linear layers), so they have no pooling layer outside the head:
``pool`` changes nothing, and ``head_pool`` replaces the global average pool before the classifier.
``dropout`` > 0 puts a dropout before the classifier (its state_dict key becomes ``head.1.*``).
The state_dict is torchvision's, so its Kinetics-400 weights load (``pretrained="kinetics400"``).

Input: (N, 3, T, H, W), any size (windows are padded).
"""

from __future__ import annotations

from typing import Callable

from torch import nn
from torchvision.models.video import swin3d_b as tv_swin3d_b
from torchvision.models.video import swin3d_s as tv_swin3d_s
from torchvision.models.video import swin3d_t as tv_swin3d_t

from ._pooling import check_kind, global_pool3d


def _swin3d(builder: Callable[..., nn.Module], num_classes: int, pool: str, head_pool: str, dropout: float) -> nn.Module:
    check_kind(pool, "pool")  # accepted for a uniform API; Swin3D has no pool to change
    model = builder(num_classes=num_classes)
    model.avgpool = global_pool3d(head_pool)
    if dropout > 0:
        model.head = nn.Sequential(nn.Dropout(dropout), model.head)
    return model


def swin3d_t(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.0) -> nn.Module:
    """Swin3D-T as in torchvision."""
    return _swin3d(tv_swin3d_t, num_classes, pool, head_pool, dropout)


def swin3d_s(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.0) -> nn.Module:
    """Swin3D-S as in torchvision."""
    return _swin3d(tv_swin3d_s, num_classes, pool, head_pool, dropout)


def swin3d_b(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.0) -> nn.Module:
    """Swin3D-B as in torchvision."""
    return _swin3d(tv_swin3d_b, num_classes, pool, head_pool, dropout)
