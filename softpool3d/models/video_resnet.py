"""torchvision's video ResNets: R3D-18 (``tv_r3d_18``), MC3-18 and R(2+1)D-18 (Tran et al., 2018),
built with torchvision's VideoResNet so that torchvision's state_dicts (and Kinetics-400 weights) load.

``tv_r3d_18`` is torchvision's R3D-18: a 3x7x7 stem with stride (1, 2, 2) and no stem pool. It is not
softpool3d's ``r3d_18``, which is Hara et al.'s layout (a 7x7x7 stem followed by a 3x3x3 max pool, see
``resnet3d.py``) and takes Hara et al.'s checkpoints. The two have different weights and keys.

These three have no pooling layer outside the head (they downsample with strided convolutions), so
``pool`` changes nothing for them; ``head_pool`` replaces the global average pool.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.video import mc3_18 as tv_mc3_18
from torchvision.models.video import r2plus1d_18 as tv_r2plus1d_18
from torchvision.models.video import r3d_18 as tv_r3d_18_builder

from ._pooling import check_kind, global_pool3d


def _with_head(model: nn.Module, pool: str, head_pool: str, dropout: float) -> nn.Module:
    check_kind(pool, "pool")  # accepted for a uniform API; these models have no pool to change
    model.avgpool = global_pool3d(head_pool)
    if dropout > 0:  # only then does the classifier's state_dict key change (fc.1.*)
        model.fc = nn.Sequential(nn.Dropout(dropout), model.fc)
    return model


def tv_r3d_18(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.0) -> nn.Module:
    """torchvision's R3D-18 (3x7x7 stem, no stem pool); not Hara et al.'s ``r3d_18`` (7x7x7 stem and a pool)."""
    return _with_head(tv_r3d_18_builder(num_classes=num_classes), pool, head_pool, dropout)


def r2plus1d_18(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.0) -> nn.Module:
    """R(2+1)D-18 (Tran et al., 2018) as in torchvision."""
    return _with_head(tv_r2plus1d_18(num_classes=num_classes), pool, head_pool, dropout)


def mc3_18(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.0) -> nn.Module:
    """MC3-18 (mixed convolutions, Tran et al., 2018) as in torchvision."""
    return _with_head(tv_mc3_18(num_classes=num_classes), pool, head_pool, dropout)
