"""Image models from torchvision's builders with a SoftPool stem (the seed's ImageNet table).

With ``pool="soft"`` the stem max pool becomes SoftPool2d(kernel 2, stride 2), the geometry of the
published SoftPool ImageNet checkpoints, whose torchvision-format state_dicts therefore load with
``strict=True`` (SoftPool has no parameters). ``pool="max"`` keeps torchvision's MaxPool2d(3, 2, 1);
``pool="avg"`` uses AvgPool2d(2, 2). ``head_pool`` replaces the global average pool. Input (N, 3, H, W).
"""

from __future__ import annotations

from functools import partial

import torch.nn.functional as F
import torchvision.models as tvm
from torch import Tensor, nn

from ._pooling import check_kind, global_pool2d, pool2d


def _stem_pool(kind: str) -> nn.Module:
    check_kind(kind, "pool")
    return nn.MaxPool2d(3, 2, 1) if kind == "max" else pool2d(kind, 2, 2)


def _resnet(make, *, num_classes: int = 1000, pool: str = "soft", head_pool: str = "avg") -> tvm.ResNet:
    model = make(num_classes=num_classes)
    model.maxpool = _stem_pool(pool)
    model.avgpool = global_pool2d(head_pool)
    return model


class DenseNet(tvm.DenseNet):
    """torchvision's DenseNet with the stem pool and the (otherwise functional) global pool as modules."""

    def __init__(self, *args, pool: str, head_pool: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.features.pool0 = _stem_pool(pool)
        self.head_pool = global_pool2d(head_pool)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.head_pool(F.relu(self.features(x))).flatten(1))


def _densenet(growth: int, blocks: tuple, init: int, *, num_classes: int = 1000, pool: str = "soft",
              head_pool: str = "avg") -> DenseNet:
    return DenseNet(growth, blocks, init, num_classes=num_classes, pool=pool, head_pool=head_pool)


def _resnext101_32x4d(num_classes: int) -> tvm.ResNet:
    # Not a torchvision builder: ResNet-101 depths with 32 groups of width 4.
    return tvm.ResNet(tvm.resnet.Bottleneck, [3, 4, 23, 3], num_classes=num_classes, groups=32, width_per_group=4)


resnet18 = partial(_resnet, tvm.resnet18)
resnet34 = partial(_resnet, tvm.resnet34)
resnet50 = partial(_resnet, tvm.resnet50)
resnet101 = partial(_resnet, tvm.resnet101)
resnet152 = partial(_resnet, tvm.resnet152)
resnext50_32x4d = partial(_resnet, tvm.resnext50_32x4d)
resnext101_32x4d = partial(_resnet, _resnext101_32x4d)
wide_resnet50_2 = partial(_resnet, tvm.wide_resnet50_2)
densenet121 = partial(_densenet, 32, (6, 12, 24, 16), 64)
densenet161 = partial(_densenet, 48, (6, 12, 36, 24), 96)
densenet169 = partial(_densenet, 32, (6, 12, 32, 32), 64)

IMAGE_MODELS = {
    "resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50, "resnet101": resnet101,
    "resnet152": resnet152, "resnext50_32x4d": resnext50_32x4d, "resnext101_32x4d": resnext101_32x4d,
    "wide_resnet50_2": wide_resnet50_2, "densenet121": densenet121, "densenet161": densenet161,
    "densenet169": densenet169,
}
