"""PyTorch-shaped layers, one module per layer kind: `Module`, `Sequential` and the layers
of DESIGN.md section 3b, and the losses and Siamese layers of fastconv.face (3c). Inputs
are channels-first (N, C, *spatial) Tensors."""

from .activation import LeakyReLU, ReLU, ReLU6, Sigmoid, Softmax, Tanh
from .conv import Conv, Conv1d, Conv2d, Conv3d
from .linear import Dropout, Linear
from .losses import BatchTripletLoss, BCEWithLogitsLoss, TripletLoss
from .module import Flatten, Identity, IncompatibleKeys, Module, Parameter, Sequential
from .normalization import BatchNorm1d, BatchNorm2d, BatchNorm3d, BatchNormNd, LocalResponseNorm
from .pooling import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveAvgPool3d,
                      AdaptiveAvgPoolNd, AvgPool1d, AvgPool2d, AvgPool3d, AvgPoolNd, MaxPool1d,
                      MaxPool2d, MaxPool3d, MaxPoolNd, PoolNd, RoIAlign, RoIPool)
from .siamese import Normalize, SiameseClassifier

__all__ = [
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AdaptiveAvgPoolNd",
    "AvgPool1d", "AvgPool2d", "AvgPool3d", "AvgPoolNd", "BatchNorm1d", "BatchNorm2d",
    "BatchNorm3d", "BatchNormNd", "BatchTripletLoss", "BCEWithLogitsLoss", "Conv", "Conv1d",
    "Conv2d", "Conv3d", "Dropout", "Flatten", "Identity", "IncompatibleKeys", "LeakyReLU",
    "Linear", "LocalResponseNorm", "MaxPool1d", "MaxPool2d", "MaxPool3d", "MaxPoolNd", "Module",
    "Normalize", "Parameter", "PoolNd", "ReLU", "ReLU6", "RoIAlign", "RoIPool",
    "Sequential", "SiameseClassifier", "Sigmoid", "Softmax", "Tanh", "TripletLoss",
]
