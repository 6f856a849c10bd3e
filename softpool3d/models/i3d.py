"""I3D ResNet-50: ResNet-50 inflated to 3D, as in the SlowFast/mmaction2 "I3D R50" recipe.

Stem: a 5x7x7 convolution with stride (1, 2, 2), then a 1x3x3 pool with stride (1, 2, 2). After res2
a 2x1x1 pool halves time (both pools are the ones ``pool`` selects). Bottlenecks put their temporal
kernel on the first 1x1 convolution: 3 in every res2 block, alternating 3/1 in res3 and res4, and
1/3/1 in res5; res3-res5 halve H and W. Head: global pool, dropout, linear classifier.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._conv import Conv3d
from ._pooling import check_kind, global_pool3d, pool3d

TEMPORAL_KERNELS = ([3, 3, 3], [3, 1, 3, 1], [3, 1, 3, 1, 3, 1], [1, 3, 1])


class InflatedBottleneck(nn.Module):
    def __init__(self, cin: int, width: int, temporal: int, stride: int) -> None:
        super().__init__()
        cout = width * 4
        self.body = nn.Sequential(
            Conv3d(cin, width, (temporal, 1, 1), padding=(temporal // 2, 0, 0), bias=False),
            nn.BatchNorm3d(width), nn.ReLU(inplace=True),
            Conv3d(width, width, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False),
            nn.BatchNorm3d(width), nn.ReLU(inplace=True),
            Conv3d(width, cout, 1, bias=False), nn.BatchNorm3d(cout),
        )
        self.shortcut = (nn.Sequential(Conv3d(cin, cout, 1, (1, stride, stride), bias=False), nn.BatchNorm3d(cout))
                         if stride != 1 or cin != cout else nn.Identity())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class I3D(nn.Module):
    """(N, 3, T, H, W) -> (N, num_classes)."""

    def __init__(self, *, num_classes: int, pool: str, head_pool: str, dropout: float) -> None:
        super().__init__()
        check_kind(pool, "pool")
        self.stem = nn.Sequential(
            Conv3d(3, 64, (5, 7, 7), (1, 2, 2), (2, 3, 3), bias=False), nn.BatchNorm3d(64), nn.ReLU(inplace=True),
        )
        self.pool1 = pool3d(pool, (1, 3, 3), (1, 2, 2), (0, 1, 1))
        stages, cin = [], 64
        for index, (width, kernels) in enumerate(zip((64, 128, 256, 512), TEMPORAL_KERNELS)):
            blocks = []
            for b, temporal in enumerate(kernels):
                blocks.append(InflatedBottleneck(cin, width, temporal, 2 if index > 0 and b == 0 else 1))
                cin = width * 4
            stages.append(nn.Sequential(*blocks))
        self.res2, self.res3, self.res4, self.res5 = stages
        self.pool2 = pool3d(pool, (2, 1, 1), (2, 1, 1))
        self.head_pool = global_pool3d(head_pool)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool2(self.res2(self.pool1(self.stem(x))))
        x = self.res5(self.res4(self.res3(x)))
        return self.fc(self.dropout(self.head_pool(x).flatten(1)))


def i3d_r50(*, num_classes: int = 400, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.5) -> I3D:
    """I3D ResNet-50."""
    return I3D(num_classes=num_classes, pool=pool, head_pool=head_pool, dropout=dropout)
