"""ResNet-18/34/50/101/152 (He et al. 2015) as torchvision's v1.5: in Bottleneck the
stride sits on the 3x3 conv. Module and parameter names are torchvision's. Each batch norm
runs with what follows it (residual add, ReLU) through BatchNorm.forward_then: one pass
over the activation in inference, the separate ops when training."""

from __future__ import annotations

from typing import List, Optional, Sequence, Type, Union

from .. import nn
from ..tensor import Tensor
from ._layers import constant_, flatten, init_batch_norms, kaiming_normal_

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50",
           "resnet101", "resnet152"]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs plus the identity (or a 1x1 projection): (N, inplanes, H, W) ->
    (N, planes, H / stride, W / stride)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        if downsample is not None:
            self.downsample = downsample
        else:
            # Registered as None, as torchvision: no state-dict entries either way.
            self.add_module("downsample", None)
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn1.forward_then(self.conv1(x), activation=self.relu)
        return self.bn2.forward_then(self.conv2(out), identity, self.relu)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand to planes * 4, plus the shortcut:
    (N, inplanes, H, W) -> (N, 4 * planes, H / stride, W / stride)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        if downsample is not None:
            self.downsample = downsample
        else:
            self.add_module("downsample", None)
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn1.forward_then(self.conv1(x), activation=self.relu)
        out = self.bn2.forward_then(self.conv2(out), activation=self.relu)
        return self.bn3.forward_then(self.conv3(out), identity, self.relu)


Block = Union[Type[BasicBlock], Type[Bottleneck]]


class ResNet(nn.Module):
    """Input (N, in_channels, H, W), 224x224 nominal (any size from 32x32 works: global
    average pooling before fc) -> logits (N, num_classes)."""

    def __init__(self, block: Block, layers: Sequence[int], num_classes: int = 1000,
                 in_channels: int = 3, zero_init_residual: bool = False) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv):
                kaiming_normal_(m.weight, "fan_out")
        init_batch_norms(self)
        if zero_init_residual:
            # Each block then starts as the identity (Goyal et al. 2017), as torchvision's.
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    constant_(m.bn3.weight, 0.0)
                elif isinstance(m, BasicBlock):
                    constant_(m.bn2.weight, 0.0)

    def _make_layer(self, block: Block, planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers: List[nn.Module] = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.bn1.forward_then(self.conv1(x), activation=self.relu))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(flatten(self.avgpool(x)))


def resnet18(num_classes: int = 1000, in_channels: int = 3,
             zero_init_residual: bool = False) -> ResNet:
    """ResNet-18 for (N, 3, 224, 224): 11,689,512 parameters."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, zero_init_residual)


def resnet34(num_classes: int = 1000, in_channels: int = 3,
             zero_init_residual: bool = False) -> ResNet:
    """ResNet-34 for (N, 3, 224, 224): 21,797,672 parameters."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, zero_init_residual)


def resnet50(num_classes: int = 1000, in_channels: int = 3,
             zero_init_residual: bool = False) -> ResNet:
    """ResNet-50 for (N, 3, 224, 224): 25,557,032 parameters."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, zero_init_residual)


def resnet101(num_classes: int = 1000, in_channels: int = 3,
              zero_init_residual: bool = False) -> ResNet:
    """ResNet-101 for (N, 3, 224, 224): 44,549,160 parameters."""
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes, in_channels, zero_init_residual)


def resnet152(num_classes: int = 1000, in_channels: int = 3,
              zero_init_residual: bool = False) -> ResNet:
    """ResNet-152 for (N, 3, 224, 224): 60,192,808 parameters."""
    return ResNet(Bottleneck, [3, 8, 36, 3], num_classes, in_channels, zero_init_residual)
