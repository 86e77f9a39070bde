"""GoogLeNet / Inception v1 (Szegedy et al. 2014) as torchvision's GoogLeNet without the
auxiliary heads: batch-normalized convs, the "5x5" branch as a 3x3 (torchvision's known
deviation, kept so its weights load), ceil_mode max pools."""

from __future__ import annotations

from typing import Any

from .. import nn
from ..nn import functional as F
from ..tensor import Tensor
from ._layers import flatten, init_batch_norms, trunc_normal_

__all__ = ["BasicConv2d", "GoogLeNet", "Inception", "googlenet"]


class BasicConv2d(nn.Module):
    """conv (no bias: the BatchNorm's shift replaces it) -> BatchNorm(eps=0.001) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    """Four parallel branches concatenated on channels: (N, in_channels, H, W) ->
    (N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W)."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int,
                 ch5x5red: int, ch5x5: int, pool_proj: int) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(in_channels, ch3x3red, kernel_size=1),
                                     BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(in_channels, ch5x5red, kernel_size=1),
                                     BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                     BasicConv2d(in_channels, pool_proj, kernel_size=1))

    def forward(self, x: Tensor) -> Tensor:
        return F.concat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    """Input (N, in_channels, H, W), 224x224 nominal (any size from 32x32 works: global
    average pooling before fc) -> logits (N, num_classes). 6,624,904 parameters with the
    defaults. Expects inputs normalized as torchvision's (transform_input=False)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, in_channels: int = 3,
                 init_weights: bool = True) -> None:
        super().__init__()
        self.conv1 = BasicConv2d(in_channels, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)

        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)

        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)

        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1024, num_classes)

        if init_weights:
            # torchvision's init: N(0, 0.01) truncated at +-2 for conv and fc.
            for m in self.modules():
                if isinstance(m, (nn.Conv, nn.Linear)):
                    trunc_normal_(m.weight, std=0.01)
            init_batch_norms(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        for block in (self.inception4a, self.inception4b, self.inception4c, self.inception4d,
                      self.inception4e):
            x = block(x)
        x = self.inception5b(self.inception5a(self.maxpool4(x)))
        return self.fc(self.dropout(flatten(self.avgpool(x))))


def googlenet(num_classes: int = 1000, dropout: float = 0.2, in_channels: int = 3) -> GoogLeNet:
    """GoogLeNet (Inception v1) for (N, 3, 224, 224): 6,624,904 parameters."""
    return GoogLeNet(num_classes=num_classes, dropout=dropout, in_channels=in_channels)
