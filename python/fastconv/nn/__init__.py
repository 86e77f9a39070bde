"""fastconv.nn: network building blocks on fastconv.Tensor."""

from . import functional
from . import functional as F
from .modules import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveAvgPool3d, AvgPool1d,
                      AvgPool2d, AvgPool3d, BatchNorm1d, BatchNorm2d, BatchNorm3d,
                      BatchTripletLoss, BCEWithLogitsLoss, Conv, Conv1d, Conv2d, Conv3d,
                      Dropout, Flatten, Identity, IncompatibleKeys, LeakyReLU, Linear,
                      LocalResponseNorm, MaxPool1d, MaxPool2d, MaxPool3d, Module, Normalize,
                      Parameter, ReLU, ReLU6, RoIAlign, RoIPool, Sequential,
                      SiameseClassifier, Sigmoid, Softmax, Tanh, TripletLoss)
from .convolutionalize import LinearAsConv, convolutionalize
from .features import get_layer, layer_outputs
from .serialization import load, save
from .summary import LayerRow, Summary, summary
from .torch_format import load_torch

__all__ = [
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AvgPool1d", "AvgPool2d",
    "AvgPool3d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "BatchTripletLoss",
    "BCEWithLogitsLoss", "Conv", "Conv1d", "Conv2d", "Conv3d", "convolutionalize",
    "Dropout", "F", "Flatten", "functional", "get_layer", "Identity", "IncompatibleKeys",
    "layer_outputs", "LayerRow", "LeakyReLU", "Linear", "LinearAsConv", "load", "load_torch",
    "LocalResponseNorm", "MaxPool1d", "MaxPool2d", "MaxPool3d", "Module", "Normalize",
    "Parameter", "ReLU", "ReLU6", "RoIAlign", "RoIPool", "save", "Sequential",
    "SiameseClassifier", "Sigmoid", "Softmax", "Summary", "summary", "Tanh", "TripletLoss",
]
