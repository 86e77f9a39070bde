"""fastconv.models: classic ConvNets built from fastconv.nn.

The ImageNet models (alexnet, vgg16/19, resnet18..152, googlenet) have torchvision's module
trees, parameter names and shapes, so a torchvision state dict (e.g. loaded with
`fastconv.nn.load`) loads as is. lenet5 is the classic 32x32 one; nin, convnet1d and
convnet3d are small nets for CIFAR-sized images, signals and volumes.
"""

from __future__ import annotations

from ..nn import AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveAvgPool3d
from .alexnet import AlexNet, alexnet
from .googlenet import BasicConv2d, GoogLeNet, Inception, googlenet
from .lenet import LeNet5, lenet5
from .resnet import (BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50,
                     resnet101, resnet152)
from .small import NIN, ConvNet1d, ConvNet3d, convnet1d, convnet3d, nin
from .vgg import VGG, vgg16, vgg19

__all__ = [
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AlexNet", "BasicBlock",
    "BasicConv2d", "Bottleneck", "ConvNet1d", "ConvNet3d", "GoogLeNet", "Inception",
    "LeNet5", "NIN", "ResNet", "VGG", "alexnet", "convnet1d", "convnet3d", "googlenet",
    "lenet5", "nin", "resnet101", "resnet152", "resnet18", "resnet34", "resnet50", "vgg16",
    "vgg19",
]
