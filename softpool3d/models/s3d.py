"""S3D (Xie et al., 2018) from torchvision, with its pools chosen by ``pool`` and an adaptive head.

torchvision's S3D ends with a fixed AvgPool3d((2, 7, 7)) that breaks on small clips; it is replaced
by the adaptive global pool ``head_pool`` (the same result where the last feature map is 2x7x7, as on
16x224x224 clips). Its max pools become the ``pool`` kind with the same geometry. The state_dict is
torchvision's, so torchvision's Kinetics-400 weights load (``pretrained="kinetics400"``).
"""

from __future__ import annotations

from torch import nn
from torchvision.models.video import s3d as tv_s3d

from ._pooling import global_pool3d, replace_max_pools


def s3d(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.2) -> nn.Module:
    """S3D as in torchvision (its classifier's dropout is ``dropout``)."""
    model = replace_max_pools(tv_s3d(num_classes=num_classes, dropout=dropout), pool)
    model.avgpool = global_pool3d(head_pool)
    return model
