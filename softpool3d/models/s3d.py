"""S3D (Xie et al., 2018) from torchvision, with its pools chosen by ``pool`` and an adaptive head.

torchvision's S3D ends with a fixed AvgPool3d((2, 7, 7)) that breaks on small clips; it is replaced
by the adaptive global pool ``head_pool``. Its max pools become the ``pool`` kind with the same
geometry (``replace_modules``).
"""

from __future__ import annotations

from torch import nn
from torchvision.models.video import s3d as tv_s3d

from ..nn import replace_modules
from ._pooling import check_kind, global_pool3d, pool3d


def s3d(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.2) -> nn.Module:
    """S3D as in torchvision (its classifier's dropout is ``dropout``)."""
    check_kind(pool, "pool")
    model = tv_s3d(num_classes=num_classes, dropout=dropout)
    if pool != "max":
        replace_modules(model, lambda name, layer: pool3d(pool, layer.kernel_size, layer.stride, layer.padding,
                                                          bool(layer.ceil_mode))
                        if isinstance(layer, nn.MaxPool3d) else None)
    model.avgpool = global_pool3d(head_pool)
    return model
