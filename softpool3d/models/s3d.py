"""S3D (Xie et al., 2018) from torchvision, with its pools chosen by ``pool`` and an adaptive head.

torchvision's S3D ends with a fixed AvgPool3d((2, 7, 7)) that breaks on small clips; it is replaced
by the adaptive global pool ``head_pool``. Its max pools become SoftPool (``replace_pooling``) or
average pools with the same geometry.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.video import s3d as tv_s3d

from ..nn import replace_pooling
from ._pooling import check_kind, global_pool3d, pool3d


def s3d(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.2) -> nn.Module:
    """S3D as in torchvision (its classifier's dropout is ``dropout``)."""
    check_kind(pool, "pool")
    model = tv_s3d(num_classes=num_classes, dropout=dropout)
    if pool == "soft":
        replace_pooling(model, include=("max",))
    elif pool == "avg":
        for name, layer in list(model.named_modules()):
            if isinstance(layer, nn.MaxPool3d):
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child,
                        pool3d("avg", layer.kernel_size, layer.stride, layer.padding, bool(layer.ceil_mode)))
    model.avgpool = global_pool3d(head_pool)
    return model
