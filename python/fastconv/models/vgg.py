"""VGG-16 and VGG-19 (Simonyan & Zisserman 2014) with torchvision's layout and names."""

from __future__ import annotations

from typing import List, Sequence, Union

from .. import nn
from ..tensor import Tensor
from ._layers import constant_, flatten, kaiming_normal_, normal_

__all__ = ["VGG", "vgg16", "vgg19"]

# Output channels per 3x3 conv, "M" a 2x2 max pool: torchvision's configurations D and E.
CONFIGS = {
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
         512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"],
}


def make_layers(config: Sequence[Union[int, str]], batch_norm: bool = False,
                in_channels: int = 3) -> nn.Sequential:
    """features as torchvision builds it, so Sequential indices (state-dict keys) agree."""
    layers: List[nn.Module] = []
    channels = in_channels
    for v in config:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        layers.append(nn.Conv2d(channels, int(v), 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(v)))
        layers.append(nn.ReLU(inplace=True))
        channels = int(v)
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """Input (N, in_channels, H, W), 224x224 nominal (any size from 32x32: the adaptive
    pool makes 7x7) -> logits (N, num_classes)."""

    def __init__(self, features: nn.Sequential, num_classes: int = 1000,
                 dropout: float = 0.5, init_weights: bool = True) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        if init_weights:
            # torchvision's scheme: nn's default uniform init stalls a 16+ layer plain net.
            for m in self.modules():
                if isinstance(m, nn.Conv):
                    kaiming_normal_(m.weight, "fan_out")
                    constant_(m.bias, 0.0)
                elif isinstance(m, nn.Linear):
                    normal_(m.weight, 0.01)
                    constant_(m.bias, 0.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(flatten(self.avgpool(self.features(x))))


def vgg16(num_classes: int = 1000, batch_norm: bool = False, dropout: float = 0.5,
          in_channels: int = 3) -> VGG:
    """VGG-16 (configuration D) for (N, 3, 224, 224): 138,357,544 parameters; batch_norm=True
    gives torchvision's vgg16_bn."""
    return VGG(make_layers(CONFIGS[16], batch_norm, in_channels), num_classes, dropout)


def vgg19(num_classes: int = 1000, batch_norm: bool = False, dropout: float = 0.5,
          in_channels: int = 3) -> VGG:
    """VGG-19 (configuration E) for (N, 3, 224, 224): 143,667,240 parameters; batch_norm=True
    gives torchvision's vgg19_bn."""
    return VGG(make_layers(CONFIGS[19], batch_norm, in_channels), num_classes, dropout)
