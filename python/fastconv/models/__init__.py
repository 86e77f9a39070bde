"""fastconv.models: classic ConvNets built from fastconv.nn.

The ImageNet models (alexnet, vgg16/19, resnet18..152, googlenet) have torchvision's module
trees, parameter names and shapes, so a torchvision state dict (e.g. loaded with
`fastconv.nn.load`) loads as is. efficientnet_lite0 has the names of the PyTorch port of
the TensorFlow checkpoint and loads real ImageNet weights offline (weights="imagenet",
the `pretrained` extra); `preprocess` prepares images for it and `imagenet_classes` names
its 1000 outputs. lenet5 is the classic 32x32 one; nin, convnet1d and convnet3d are small
nets for CIFAR-sized images, signals and volumes.
"""

from __future__ import annotations

from ..nn import AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveAvgPool3d
from .alexnet import AlexNet, alexnet
from .efficientnet import (EfficientNetLite, MBConvBlock, efficientnet_lite0, imagenet_classes,
                           preprocess, resize)
from .googlenet import BasicConv2d, GoogLeNet, Inception, googlenet
from .lenet import LeNet5, lenet5
from .resnet import (BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50,
                     resnet101, resnet152)
from .small import NIN, ConvNet1d, ConvNet3d, convnet1d, convnet3d, nin
from .vgg import VGG, vgg16, vgg19

__all__ = [
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AlexNet", "BasicBlock",
    "BasicConv2d", "Bottleneck", "ConvNet1d", "ConvNet3d", "EfficientNetLite", "GoogLeNet",
    "Inception", "LeNet5", "MBConvBlock", "NIN", "ResNet", "VGG", "alexnet", "convnet1d",
    "convnet3d", "efficientnet_lite0", "googlenet", "imagenet_classes", "lenet5", "nin",
    "preprocess", "resize", "resnet101", "resnet152", "resnet18", "resnet34", "resnet50", "vgg16",
    "vgg19",
]
