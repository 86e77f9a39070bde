"""PyTorch-shaped layers, one module per layer kind: `Module`, `Sequential` and the layers
of DESIGN.md section 3b. Inputs are channels-first (N, C, *spatial) Tensors."""

from .activation import ReLU, ReLU6, Sigmoid, Softmax, Tanh
from .conv import Conv, Conv1d, Conv2d, Conv3d
from .linear import Dropout, Linear
from .module import Flatten, Identity, IncompatibleKeys, Module, Parameter, Sequential
from .normalization import BatchNorm1d, BatchNorm2d, BatchNorm3d, BatchNormNd, LocalResponseNorm
from .pooling import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveAvgPool3d,
                      AdaptiveAvgPoolNd, AvgPool1d, AvgPool2d, AvgPool3d, AvgPoolNd, MaxPool1d,
                      MaxPool2d, MaxPool3d, MaxPoolNd, PoolNd, RoIAlign, RoIPool)

__all__ = [
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AdaptiveAvgPoolNd",
    "AvgPool1d", "AvgPool2d", "AvgPool3d", "AvgPoolNd", "BatchNorm1d", "BatchNorm2d",
    "BatchNorm3d", "BatchNormNd", "Conv", "Conv1d", "Conv2d", "Conv3d", "Dropout", "Flatten",
    "Identity", "IncompatibleKeys", "Linear", "LocalResponseNorm", "MaxPool1d", "MaxPool2d",
    "MaxPool3d", "MaxPoolNd", "Module", "Parameter", "PoolNd", "ReLU", "ReLU6", "Sequential",
    "RoIAlign", "RoIPool", "Sigmoid", "Softmax", "Tanh",
]
