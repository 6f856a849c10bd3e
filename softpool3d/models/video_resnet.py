"""R(2+1)D-18 and MC3-18, built with torchvision's VideoResNet so that torchvision's state_dicts load.

They have no pooling layer outside the head (they downsample with strided convolutions), so
``pool`` changes nothing for them; ``head_pool`` replaces the global average pool.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.video import mc3_18 as tv_mc3_18
from torchvision.models.video import r2plus1d_18 as tv_r2plus1d_18

from ._pooling import check_kind, global_pool3d


def _with_head(model: nn.Module, pool: str, head_pool: str, dropout: float) -> nn.Module:
    check_kind(pool, "pool")  # accepted for a uniform API; these models have no pool to change
    model.avgpool = global_pool3d(head_pool)
    if dropout > 0:  # only then does the classifier's state_dict key change (fc.1.*)
        model.fc = nn.Sequential(nn.Dropout(dropout), model.fc)
    return model


def r2plus1d_18(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.0) -> nn.Module:
    """R(2+1)D-18 (Tran et al., 2018) as in torchvision."""
    return _with_head(tv_r2plus1d_18(num_classes=num_classes), pool, head_pool, dropout)


def mc3_18(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.0) -> nn.Module:
    """MC3-18 (mixed convolutions, Tran et al., 2018) as in torchvision."""
    return _with_head(tv_mc3_18(num_classes=num_classes), pool, head_pool, dropout)
