"""MViT v1-B (Fan et al., 2021) and MViT v2-S (Li et al., 2022) from torchvision.

Their attention pools are strided convolutions (kept as they are); the max pools on the skip
connections of the blocks that downsample (``blocks.N.pool_skip.pool``) become the ``pool`` kind with
the same geometry, as ``softpool3d.nn.replace_pooling`` converts them. The classifier reads the class
token, so there is no global pool before it: ``head_pool`` must stay "avg" (the default).
The state_dict is torchvision's, so its Kinetics-400 weights load (``pretrained="kinetics400"``).

Input: (N, 3, 16, 224, 224) exactly (the position embeddings are sized for it).
"""

from __future__ import annotations

from torch import nn
from torchvision.models.video import mvit_v1_b as tv_mvit_v1_b
from torchvision.models.video import mvit_v2_s as tv_mvit_v2_s

from ._pooling import check_kind, replace_max_pools


def _checked(name: str, head_pool: str) -> None:
    check_kind(head_pool, "head_pool")
    if head_pool != "avg":
        raise ValueError(f"{name} classifies its class token and has no head pool; head_pool={head_pool!r} "
                         "cannot apply (leave it at 'avg')")


def mvit_v1_b(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.5) -> nn.Module:
    """MViT v1-B as in torchvision (``dropout`` before its classifier; torchvision's default 0.5)."""
    _checked("mvit_v1_b", head_pool)
    return replace_max_pools(tv_mvit_v1_b(num_classes=num_classes, dropout=dropout), pool)


def mvit_v2_s(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.5) -> nn.Module:
    """MViT v2-S as in torchvision (``dropout`` before its classifier; torchvision's default 0.5)."""
    _checked("mvit_v2_s", head_pool)
    return replace_max_pools(tv_mvit_v2_s(num_classes=num_classes, dropout=dropout), pool)
