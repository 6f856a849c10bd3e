"""3D ResNets in Hara et al.'s layout ("Can Spatiotemporal 3D CNNs Retrace the History of 2D CNNs
and ImageNet?", CVPR 2018): the 3D ResNets most often trained on Kinetics and fine-tuned on
UCF-101 and HMDB-51.

Stem: a 7x7x7 convolution with stride (1, 2, 2) and padding 3, then a 3x3x3 pool with stride 2 and
padding 1 (the pool ``pool`` selects). Stages of basic blocks (18/34) or bottlenecks (50/101) with
3x3x3 convolutions; stages 2-4 halve T, H and W with a strided convolution and a 1x1x1 projection
shortcut. Head: a global pool (``head_pool``), dropout, a linear classifier.

Hara et al.'s Kinetics-700 checkpoints (``r3d18_K_200ep.pth`` ...) load into these by name
(``pretrained="kinetics700"``; the key mapping is in ``pretrained.py``). torchvision's R3D-18 is a
different network (3x7x7 stem, no stem pool): it is ``tv_r3d_18``, not ``r3d_18``.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._conv import Conv3d
from ._pooling import check_kind, global_pool3d, pool3d


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [Conv3d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm3d(cout)]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(cin, width, 3, stride), nn.ReLU(inplace=True), *_conv_bn(width, width, 3))
        self.shortcut = (nn.Sequential(*_conv_bn(cin, width, 1, stride)) if stride != 1 or cin != width
                         else nn.Identity())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            *_conv_bn(cin, width, 1), nn.ReLU(inplace=True),
            *_conv_bn(width, width, 3, stride), nn.ReLU(inplace=True),
            *_conv_bn(width, cout, 1),
        )
        self.shortcut = nn.Sequential(*_conv_bn(cin, cout, 1, stride)) if stride != 1 or cin != cout else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet3d(nn.Module):
    """(N, 3, T, H, W) -> (N, num_classes) logits, for any clip that survives 5 halvings of H and W."""

    def __init__(self, block: type, layers: list[int], *, num_classes: int, pool: str, head_pool: str,
                 dropout: float) -> None:
        super().__init__()
        check_kind(pool, "pool")
        self.stem = nn.Sequential(
            Conv3d(3, 64, 7, stride=(1, 2, 2), padding=3, bias=False), nn.BatchNorm3d(64), nn.ReLU(inplace=True),
        )
        self.pool = pool3d(pool, 3, 2, 1)
        stages, cin = [], 64
        for index, (width, depth) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for b in range(depth):
                blocks.append(block(cin, width, 2 if index > 0 and b == 0 else 1))
                cin = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.head_pool = global_pool3d(head_pool)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.stem(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.dropout(self.head_pool(x).flatten(1)))


def r3d_10(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.0) -> ResNet3d:
    """3D ResNet-10 (basic blocks 1-1-1-1), Hara et al.'s lightest."""
    return ResNet3d(BasicBlock, [1, 1, 1, 1], num_classes=num_classes, pool=pool, head_pool=head_pool, dropout=dropout)


def r3d_18(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.0) -> ResNet3d:
    """3D ResNet-18 (basic blocks 2-2-2-2), Hara et al.'s layout; torchvision's R3D-18 is ``tv_r3d_18``."""
    return ResNet3d(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, pool=pool, head_pool=head_pool, dropout=dropout)


def r3d_34(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.0) -> ResNet3d:
    """3D ResNet-34 (basic blocks 3-4-6-3)."""
    return ResNet3d(BasicBlock, [3, 4, 6, 3], num_classes=num_classes, pool=pool, head_pool=head_pool, dropout=dropout)


def r3d_50(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.0) -> ResNet3d:
    """3D ResNet-50 (bottlenecks 3-4-6-3)."""
    return ResNet3d(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, pool=pool, head_pool=head_pool, dropout=dropout)


def r3d_101(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.0) -> ResNet3d:
    """3D ResNet-101 (bottlenecks 3-4-23-3)."""
    return ResNet3d(Bottleneck, [3, 4, 23, 3], num_classes=num_classes, pool=pool, head_pool=head_pool,
                    dropout=dropout)


def r3d_152(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.0) -> ResNet3d:
    """3D ResNet-152 (bottlenecks 3-8-36-3)."""
    return ResNet3d(Bottleneck, [3, 8, 36, 3], num_classes=num_classes, pool=pool, head_pool=head_pool,
                    dropout=dropout)


def r3d_200(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.0) -> ResNet3d:
    """3D ResNet-200 (bottlenecks 3-24-36-3)."""
    return ResNet3d(Bottleneck, [3, 24, 36, 3], num_classes=num_classes, pool=pool, head_pool=head_pool,
                    dropout=dropout)
