"""X3D (Feichtenhofer, "X3D: Expanding Architectures for Efficient Video Recognition", CVPR 2020).

X3D-XS, -S and -M share one network (width 24, depth factor 2.2: stages of 3, 5, 11 and 7 blocks,
bottleneck expansion 2.25) and differ in the clip they are trained on: 4x160, 13x160 and 16x224.
Stem: a 1x3x3 convolution with stride (1, 2, 2), then a depthwise 5x1x1 temporal convolution. Blocks:
1x1x1, depthwise 3x3x3 (stride (1, 2, 2) in each stage's first block), squeeze-excitation in every
other block, swish, 1x1x1, residual. Head: 1x1x1 convolution to 432 channels, the global pool
``head_pool``, a 1x1x1 projection to 2048, dropout and the classifier. X3D has no pooling layer
outside the head, so ``pool`` changes nothing for it.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from ._conv import Conv3d
from ._pooling import check_kind, global_pool3d

STAGE_WIDTHS = (24, 48, 96, 192)
BASE_DEPTHS = (1, 2, 5, 3)


def _round_width(width: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(width + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * width else rounded


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, ratio: float = 0.0625) -> None:
        super().__init__()
        hidden = _round_width(channels * ratio)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool3d(1), Conv3d(channels, hidden, 1), nn.ReLU(inplace=True),
            Conv3d(hidden, channels, 1), nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


class X3DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, inner: int, stride: int, use_se: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(
            Conv3d(cin, inner, 1, bias=False), nn.BatchNorm3d(inner), nn.ReLU(inplace=True),
            Conv3d(inner, inner, 3, (1, stride, stride), 1, groups=inner, bias=False), nn.BatchNorm3d(inner),
            SqueezeExcite(inner) if use_se else nn.Identity(), nn.SiLU(),
            Conv3d(inner, cout, 1, bias=False), nn.BatchNorm3d(cout),
        )
        self.shortcut = (nn.Sequential(Conv3d(cin, cout, 1, (1, stride, stride), bias=False), nn.BatchNorm3d(cout))
                         if stride != 1 or cin != cout else nn.Identity())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class X3D(nn.Module):
    """(N, 3, T, H, W) -> (N, num_classes)."""

    def __init__(self, *, num_classes: int, pool: str, head_pool: str, dropout: float, depth_factor: float = 2.2,
                 expansion: float = 2.25) -> None:
        super().__init__()
        check_kind(pool, "pool")
        self.stem = nn.Sequential(
            Conv3d(3, 24, (1, 3, 3), (1, 2, 2), (0, 1, 1), bias=False),
            Conv3d(24, 24, (5, 1, 1), padding=(2, 0, 0), groups=24, bias=False),
            nn.BatchNorm3d(24), nn.ReLU(inplace=True),
        )
        stages, cin = [], 24
        for width, base in zip(STAGE_WIDTHS, BASE_DEPTHS):
            inner = int(expansion * width)
            blocks = [X3DBlock(cin if b == 0 else width, width, inner, 2 if b == 0 else 1, use_se=b % 2 == 0)
                      for b in range(int(math.ceil(depth_factor * base)))]
            stages.append(nn.Sequential(*blocks))
            cin = width
        self.stages = nn.Sequential(*stages)
        head_inner = int(expansion * cin)
        self.head_conv = nn.Sequential(Conv3d(cin, head_inner, 1, bias=False), nn.BatchNorm3d(head_inner),
                                       nn.ReLU(inplace=True))
        self.head_pool = global_pool3d(head_pool)
        self.head_proj = nn.Sequential(Conv3d(head_inner, 2048, 1, bias=False), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.head_pool(self.head_conv(self.stages(self.stem(x))))
        return self.fc(self.dropout(self.head_proj(x).flatten(1)))


def x3d_xs(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.5) -> X3D:
    """X3D-XS (trained on 4x160x160 clips)."""
    return X3D(num_classes=num_classes, pool=pool, head_pool=head_pool, dropout=dropout)


def x3d_s(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.5) -> X3D:
    """X3D-S (trained on 13x160x160 clips)."""
    return X3D(num_classes=num_classes, pool=pool, head_pool=head_pool, dropout=dropout)


def x3d_m(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.5) -> X3D:
    """X3D-M (trained on 16x224x224 clips)."""
    return X3D(num_classes=num_classes, pool=pool, head_pool=head_pool, dropout=dropout)
