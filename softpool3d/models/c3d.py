"""C3D (Tran et al., "Learning Spatiotemporal Features with 3D Convolutional Networks", ICCV 2015).

Eight 3x3x3 convolutions and five pooling layers (the first 1x2x2, the others 2x2x2, the last with
spatial padding 1), then fc6/fc7 with 4096 units and the classifier. The pools use ceil_mode, which
keeps the original sizes at 16x112x112 (pool5 gives 1x4x4) and lets shorter clips through; an
adaptive pool of kind ``head_pool`` brings any other size to the 512x1x4x4 that fc6 expects (at
16x112x112 it is the identity). Convolutions get He initialisation and the fc layers N(0, 0.01), as
torchvision does for VGG, its closest relative without normalisation layers.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._conv import Conv3d
from ._pooling import check_kind, global_pool3d, pool3d


def _convs(cin: int, cout: int, count: int) -> list[nn.Module]:
    layers = []
    for i in range(count):
        layers += [Conv3d(cin if i == 0 else cout, cout, 3, padding=1), nn.ReLU(inplace=True)]
    return layers


class C3D(nn.Module):
    def __init__(self, *, num_classes: int, pool: str, head_pool: str, dropout: float) -> None:
        super().__init__()
        check_kind(pool, "pool")
        self.features = nn.Sequential(
            *_convs(3, 64, 1), pool3d(pool, (1, 2, 2), (1, 2, 2), ceil_mode=True),
            *_convs(64, 128, 1), pool3d(pool, 2, 2, ceil_mode=True),
            *_convs(128, 256, 2), pool3d(pool, 2, 2, ceil_mode=True),
            *_convs(256, 512, 2), pool3d(pool, 2, 2, ceil_mode=True),
            *_convs(512, 512, 2), pool3d(pool, 2, 2, (0, 1, 1), ceil_mode=True),
        )
        self.head_pool = global_pool3d(head_pool, (1, 4, 4))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 16, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, T, H, W) -> (N, num_classes)."""
        return self.classifier(self.head_pool(self.features(x)).flatten(1))


def c3d(*, num_classes: int = 101, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.5) -> C3D:
    """C3D with fc6/fc7 at 4096 (about 78M parameters with 101 classes)."""
    return C3D(num_classes=num_classes, pool=pool, head_pool=head_pool, dropout=dropout)
