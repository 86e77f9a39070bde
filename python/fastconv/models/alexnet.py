"""AlexNet (Krizhevsky et al. 2012) with torchvision's layout and parameter names."""

from __future__ import annotations

from .. import nn
from ..tensor import Tensor
from ._layers import flatten

__all__ = ["AlexNet", "alexnet"]


class AlexNet(nn.Module):
    """Input (N, in_channels, H, W), 224x224 nominal (anything from 63x63 up works: the
    adaptive pool makes 6x6) -> logits (N, num_classes).

    torchvision's single-tower variant (64/192/384/256/256 channels): 61,100,840 parameters
    with the defaults. lrn=True adds the paper's LocalResponseNorm(5, 1e-4, 0.75, 2) after
    the first two ReLUs; each ReLU then becomes Sequential(ReLU, LRN) at the same index, so
    the state-dict keys stay torchvision's and pretrained weights still load.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, lrn: bool = False,
                 in_channels: int = 3) -> None:
        super().__init__()

        def relu_norm() -> nn.Module:
            if not lrn:
                return nn.ReLU(inplace=True)
            return nn.Sequential(nn.ReLU(inplace=True),
                                 nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0))

        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 11, stride=4, padding=2), relu_norm(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), relu_norm(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(flatten(self.avgpool(self.features(x))))


def alexnet(num_classes: int = 1000, dropout: float = 0.5, lrn: bool = False,
            in_channels: int = 3) -> AlexNet:
    """AlexNet for (N, 3, 224, 224) input; see `AlexNet`."""
    return AlexNet(num_classes=num_classes, dropout=dropout, lrn=lrn, in_channels=in_channels)
