"""Plain torch.nn transcriptions of torchvision's architectures (and of fastconv's own small
nets), with torchvision's module names, so that a fastconv model's state_dict loads into its
twin strictly. Used by the tests and by `python -m fastconv bench --models` to compare
outputs and timings; importing this module requires torch (torchvision is not needed).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch
from torch import nn as tnn

class TorchLeNet5(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = tnn.Sequential(
            tnn.Conv2d(1, 6, 5), tnn.Tanh(), tnn.AvgPool2d(2),
            tnn.Conv2d(6, 16, 5), tnn.Tanh(), tnn.AvgPool2d(2),
            tnn.Conv2d(16, 120, 5), tnn.Tanh())
        self.classifier = tnn.Sequential(tnn.Linear(120, 84), tnn.Tanh(), tnn.Linear(84, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class TorchAlexNet(tnn.Module):
    def __init__(self, lrn: bool = False) -> None:
        super().__init__()

        def relu():
            if not lrn:
                return tnn.ReLU(inplace=True)
            return tnn.Sequential(tnn.ReLU(inplace=True),
                                  tnn.LocalResponseNorm(5, 1e-4, 0.75, 2.0))

        self.features = tnn.Sequential(
            tnn.Conv2d(3, 64, 11, 4, 2), relu(), tnn.MaxPool2d(3, 2),
            tnn.Conv2d(64, 192, 5, padding=2), relu(), tnn.MaxPool2d(3, 2),
            tnn.Conv2d(192, 384, 3, padding=1), tnn.ReLU(inplace=True),
            tnn.Conv2d(384, 256, 3, padding=1), tnn.ReLU(inplace=True),
            tnn.Conv2d(256, 256, 3, padding=1), tnn.ReLU(inplace=True), tnn.MaxPool2d(3, 2))
        self.avgpool = tnn.AdaptiveAvgPool2d((6, 6))
        self.classifier = tnn.Sequential(
            tnn.Dropout(0.5), tnn.Linear(9216, 4096), tnn.ReLU(inplace=True),
            tnn.Dropout(0.5), tnn.Linear(4096, 4096), tnn.ReLU(inplace=True),
            tnn.Linear(4096, 1000))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class TorchVGG(tnn.Module):
    def __init__(self, cfg: List) -> None:
        super().__init__()
        layers: List[tnn.Module] = []
        c = 3
        for v in cfg:
            if v == "M":
                layers.append(tnn.MaxPool2d(2, 2))
            else:
                layers += [tnn.Conv2d(c, v, 3, padding=1), tnn.ReLU(inplace=True)]
                c = v
        self.features = tnn.Sequential(*layers)
        self.avgpool = tnn.AdaptiveAvgPool2d((7, 7))
        self.classifier = tnn.Sequential(
            tnn.Linear(25088, 4096), tnn.ReLU(True), tnn.Dropout(0.5),
            tnn.Linear(4096, 4096), tnn.ReLU(True), tnn.Dropout(0.5), tnn.Linear(4096, 1000))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class TorchBasicBlock(tnn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.relu = tnn.ReLU(inplace=True)
        self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class TorchBottleneck(tnn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(planes * 4)
        self.relu = tnn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class TorchResNet(tnn.Module):
    def __init__(self, block, layers):
        super().__init__()
        self.inplanes = 64
        self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(64)
        self.relu = tnn.ReLU(inplace=True)
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
        self.fc = tnn.Linear(512 * block.expansion, 1000)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = tnn.Sequential(
                tnn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                tnn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return tnn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TorchBasicConv2d(tnn.Module):
    def __init__(self, in_channels, out_channels, **kwargs):
        super().__init__()
        self.conv = tnn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = tnn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class TorchInception(tnn.Module):
    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        super().__init__()
        self.branch1 = TorchBasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = tnn.Sequential(TorchBasicConv2d(in_channels, ch3x3red, kernel_size=1),
                                      TorchBasicConv2d(ch3x3red, ch3x3, kernel_size=3,
                                                       padding=1))
        self.branch3 = tnn.Sequential(TorchBasicConv2d(in_channels, ch5x5red, kernel_size=1),
                                      TorchBasicConv2d(ch5x5red, ch5x5, kernel_size=3,
                                                       padding=1))
        self.branch4 = tnn.Sequential(tnn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                      TorchBasicConv2d(in_channels, pool_proj, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x),
                          self.branch4(x)], 1)


class TorchGoogLeNet(tnn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = TorchBasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = tnn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = TorchBasicConv2d(64, 64, kernel_size=1)
        self.conv3 = TorchBasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = tnn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception3a = TorchInception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = TorchInception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = tnn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception4a = TorchInception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = TorchInception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = TorchInception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = TorchInception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = TorchInception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = tnn.MaxPool2d(2, 2, ceil_mode=True)
        self.inception5a = TorchInception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = TorchInception(832, 384, 192, 384, 48, 128, 128)
        self.aux1 = None  # torchvision with aux_logits=False
        self.aux2 = None
        self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
        self.dropout = tnn.Dropout(0.2)
        self.fc = tnn.Linear(1024, 1000)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def torch_nin() -> "torch.nn.Module":
    def mlp(c_in, chans, k, p):
        layers = [tnn.Conv2d(c_in, chans[0], k, padding=p), tnn.ReLU()]
        for a, b in zip(chans, chans[1:]):
            layers += [tnn.Conv2d(a, b, 1), tnn.ReLU()]
        return layers

    class NIN(tnn.Module):
        def __init__(self):
            super().__init__()
            self.features = tnn.Sequential(
                *mlp(3, (192, 160, 96), 5, 2), tnn.MaxPool2d(3, 2, 1), tnn.Dropout(0.5),
                *mlp(96, (192, 192, 192), 5, 2), tnn.AvgPool2d(3, 2, 1), tnn.Dropout(0.5),
                *mlp(192, (192, 192, 10), 3, 1))
            self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))

        def forward(self, x):
            return torch.flatten(self.avgpool(self.features(x)), 1)

    return NIN()


def _torch_blocks(ndim: int, specs) -> "torch.nn.Sequential":
    conv = {1: tnn.Conv1d, 3: tnn.Conv3d}[ndim]
    norm = {1: tnn.BatchNorm1d, 3: tnn.BatchNorm3d}[ndim]
    pool = {1: tnn.MaxPool1d, 3: tnn.MaxPool3d}[ndim]
    layers = []
    for c_in, c_out, k in specs:
        layers += [conv(c_in, c_out, k, padding=k // 2, bias=False), norm(c_out), tnn.ReLU(),
                   pool(2)]
    return tnn.Sequential(*layers)


class TorchConvNet1d(tnn.Module):
    def __init__(self, length: Optional[int]):
        super().__init__()
        self.features = _torch_blocks(1, ((1, 16, 7), (16, 32, 5), (32, 64, 3), (64, 128, 3)))
        self.pool = tnn.AdaptiveAvgPool1d(1) if length is None else tnn.Identity()
        flat = 128 if length is None else 128 * (length // 16)
        self.classifier = tnn.Sequential(tnn.Linear(flat, 64), tnn.ReLU(), tnn.Dropout(0.5),
                                         tnn.Linear(64, 5))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class TorchConvNet3d(tnn.Module):
    def __init__(self):
        super().__init__()
        self.features = _torch_blocks(3, ((1, 16, 3), (16, 32, 3), (32, 64, 3)))
        self.avgpool = tnn.AdaptiveAvgPool3d(1)
        self.dropout = tnn.Dropout(0.5)
        self.fc = tnn.Linear(64, 2)

    def forward(self, x):
        return self.fc(self.dropout(torch.flatten(self.avgpool(self.features(x)), 1)))


class TorchSameConv2d(tnn.Conv2d):
    """Bias-free Conv2d padded as TensorFlow's SAME (fastconv's padding="same"): output
    ceil(n / stride), the odd pixel of padding after the image. Stride 1 with an odd kernel
    is symmetric and uses the conv's own padding; a stride pads explicitly first."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1):
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         kernel_size // 2 if stride == 1 else 0, groups=groups, bias=False)

    def forward(self, x):
        if self.stride == (1, 1):
            return super().forward(x)
        pads = []
        for n, k, s in zip(reversed(x.shape[2:]), reversed(self.kernel_size),
                           reversed(self.stride)):
            total = max((-(-n // s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(torch.nn.functional.pad(x, pads))


class TorchMBConvBlock(tnn.Module):
    def __init__(self, c_in, c_out, kernel, stride, expand):
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = TorchSameConv2d(c_in, mid, 1)
            self._bn0 = tnn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
        self._depthwise_conv = TorchSameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = tnn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
        self._project_conv = TorchSameConv2d(mid, c_out, 1)
        self._bn2 = tnn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01)
        self._relu6 = tnn.ReLU6(inplace=True)
        self.expand = expand != 1
        self.id_skip = stride == 1 and c_in == c_out

    def forward(self, x):
        out = self._relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        out = self._relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.id_skip else out


class TorchEfficientNetLite0(tnn.Module):
    # (repeats, kernel, stride, expand ratio, in channels, out channels) per stage
    STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
              (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
              (1, 3, 1, 6, 192, 320))

    def __init__(self):
        super().__init__()
        self._conv_stem = TorchSameConv2d(3, 32, 3, 2)
        self._bn0 = tnn.BatchNorm2d(32, eps=1e-3, momentum=0.01)
        self._blocks = tnn.ModuleList(
            TorchMBConvBlock(c_in if i == 0 else c_out, c_out, k, s if i == 0 else 1, e)
            for r, k, s, e, c_in, c_out in self.STAGES for i in range(r))
        self._conv_head = TorchSameConv2d(320, 1280, 1)
        self._bn1 = tnn.BatchNorm2d(1280, eps=1e-3, momentum=0.01)
        self._relu6 = tnn.ReLU6(inplace=True)
        self._avg_pooling = tnn.AdaptiveAvgPool2d(1)
        self._dropout = tnn.Dropout(0.2)
        self._fc = tnn.Linear(1280, 1000)

    def forward(self, x):
        x = self._relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._relu6(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(torch.flatten(self._avg_pooling(x), 1)))


VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
         "M"]


# name -> factory of the twin of fastconv.models.<name>() with default arguments.
TWINS: Dict[str, Callable[[], tnn.Module]] = {
    "lenet5": TorchLeNet5,
    "alexnet": TorchAlexNet,
    "vgg16": lambda: TorchVGG(VGG16),
    "resnet18": lambda: TorchResNet(TorchBasicBlock, [2, 2, 2, 2]),
    "resnet50": lambda: TorchResNet(TorchBottleneck, [3, 4, 6, 3]),
    "googlenet": TorchGoogLeNet,
    "nin": torch_nin,
    "convnet1d": lambda: TorchConvNet1d(187),
    "convnet3d": TorchConvNet3d,
    "efficientnet_lite0": TorchEfficientNetLite0,
}
