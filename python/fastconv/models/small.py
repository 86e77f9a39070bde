"""Small ConvNets for the other input ranks and for CIFAR-sized images: Network in
Network (2-D, 32x32), a 1-D net for signals such as single-lead EKG beats, and a 3-D net
for volumes."""

from __future__ import annotations

from typing import List, Optional, Sequence

from .. import nn
from ..tensor import Tensor
from ._layers import flatten

__all__ = ["NIN", "ConvNet1d", "ConvNet3d", "nin", "convnet1d", "convnet3d"]


def _mlpconv(in_channels: int, channels: Sequence[int], kernel_size: int,
             padding: int) -> List[nn.Module]:
    """One spatial conv followed by 1x1 convs: the per-pixel MLP of Lin et al."""
    layers: List[nn.Module] = [nn.Conv2d(in_channels, channels[0], kernel_size,
                                         padding=padding), nn.ReLU(inplace=True)]
    for c_in, c_out in zip(channels, channels[1:]):
        layers += [nn.Conv2d(c_in, c_out, 1), nn.ReLU(inplace=True)]
    return layers


class NIN(nn.Module):
    """Network in Network (Lin, Chen & Yan 2013), CIFAR configuration: input
    (N, in_channels, 32, 32) -> logits (N, num_classes).

    Three mlpconv blocks (5x5/192-160-96, 5x5/192-192-192, 3x3/192-192-num_classes), the
    last 1x1 conv producing one map per class, then global average pooling instead of
    dense layers (so the head has no parameters and any input size >= 8x8 works).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_mlpconv(in_channels, (192, 160, 96), 5, 2),
            nn.MaxPool2d(3, 2, 1), nn.Dropout(dropout),
            *_mlpconv(96, (192, 192, 192), 5, 2),
            nn.AvgPool2d(3, 2, 1), nn.Dropout(dropout),
            *_mlpconv(192, (192, 192, num_classes), 3, 1),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return flatten(self.avgpool(self.features(x)))


def _block(ndim: int, in_channels: int, out_channels: int, kernel_size: int) -> List[nn.Module]:
    """conv (no bias: BatchNorm follows) -> BatchNorm -> ReLU -> max pool 2."""
    norm = {1: nn.BatchNorm1d, 3: nn.BatchNorm3d}[ndim]
    pool = {1: nn.MaxPool1d, 3: nn.MaxPool3d}[ndim]
    return [nn.Conv(ndim, in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                    bias=False),
            norm(out_channels), nn.ReLU(inplace=True), pool(2)]


class ConvNet1d(nn.Module):
    """1-D ConvNet for signals: input (N, in_channels, length) -> logits (N, num_classes).

    Four conv(k)-BN-ReLU-maxpool(2) blocks with 16/32/64/128 channels (wide kernels first:
    a QRS complex spans ~10 samples at 125 Hz). The defaults fit the MIT-BIH heartbeat
    set (187 samples, 5 classes). With `length` given, the head flattens the
    (128, length // 16) map so the position within the beat counts; length=None uses
    global average pooling instead and takes any length >= 16.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 5,
                 length: Optional[int] = 187, dropout: float = 0.5) -> None:
        super().__init__()
        if length is not None and length < 16:
            raise ValueError(f"length must be at least 16 (four halvings), got {length}")
        self.length = length
        layers: List[nn.Module] = []
        for c_in, c_out, k in ((in_channels, 16, 7), (16, 32, 5), (32, 64, 3), (64, 128, 3)):
            layers += _block(1, c_in, c_out, k)
        self.features = nn.Sequential(*layers)
        if length is None:
            self.pool: nn.Module = nn.AdaptiveAvgPool1d(1)
            flat = 128
        else:
            self.pool = nn.Identity()
            steps = length
            for _ in range(4):
                steps //= 2
            flat = 128 * steps
        self.classifier = nn.Sequential(nn.Linear(flat, 64), nn.ReLU(inplace=True),
                                        nn.Dropout(dropout), nn.Linear(64, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        if self.length is not None and (len(x.shape) != 3 or x.shape[-1] != self.length):
            raise ValueError(f"expected input (N, C, {self.length}), got shape "
                             f"{tuple(x.shape)}; build with length=None for any length")
        return self.classifier(flatten(self.pool(self.features(x))))


class ConvNet3d(nn.Module):
    """3-D ConvNet for volumes (CT/MRI patches, video clips): input
    (N, in_channels, D, H, W), each side >= 8 (32^3 nominal) -> logits (N, num_classes).

    Three conv3x3x3-BN-ReLU-maxpool(2) blocks with `width`, 2x and 4x channels, global
    average pooling, dropout, linear.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, width: int = 16,
                 dropout: float = 0.5) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        for c_in, c_out in ((in_channels, width), (width, 2 * width), (2 * width, 4 * width)):
            layers += _block(3, c_in, c_out, 3)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(flatten(self.avgpool(self.features(x)))))


def nin(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.5) -> NIN:
    """Network in Network for (N, 3, 32, 32) (CIFAR)."""
    return NIN(num_classes=num_classes, in_channels=in_channels, dropout=dropout)


def convnet1d(in_channels: int = 1, num_classes: int = 5, length: Optional[int] = 187,
              dropout: float = 0.5) -> ConvNet1d:
    """1-D ConvNet for (N, in_channels, length) signals; see `ConvNet1d`."""
    return ConvNet1d(in_channels=in_channels, num_classes=num_classes, length=length,
                     dropout=dropout)


def convnet3d(in_channels: int = 1, num_classes: int = 2, width: int = 16,
              dropout: float = 0.5) -> ConvNet3d:
    """3-D ConvNet for (N, in_channels, D, H, W) volumes; see `ConvNet3d`."""
    return ConvNet3d(in_channels=in_channels, num_classes=num_classes, width=width,
                     dropout=dropout)
