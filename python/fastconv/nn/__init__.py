"""fastconv.nn: network building blocks on fastconv.Tensor."""

from . import functional
from . import functional as F
from .modules import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveAvgPool3d, AvgPool1d,
                      AvgPool2d, AvgPool3d, BatchNorm1d, BatchNorm2d, BatchNorm3d, Conv, Conv1d,
                      Conv2d, Conv3d, Dropout, Flatten, Identity, IncompatibleKeys, Linear,
                      LocalResponseNorm, MaxPool1d, MaxPool2d, MaxPool3d, Module, Parameter,
                      ReLU, ReLU6, Sequential, Sigmoid, Softmax, Tanh)
from .features import get_layer, layer_outputs
from .serialization import load, save
from .summary import LayerRow, Summary, summary
from .torch_format import load_torch

__all__ = [
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AvgPool1d", "AvgPool2d",
    "AvgPool3d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "Conv", "Conv1d", "Conv2d",
    "Conv3d", "Dropout", "F", "Flatten", "Identity", "IncompatibleKeys", "LayerRow", "Linear",
    "LocalResponseNorm", "MaxPool1d", "MaxPool2d", "MaxPool3d", "Module", "Parameter", "ReLU",
    "ReLU6", "Sequential", "Sigmoid", "Softmax", "Summary", "Tanh", "functional", "get_layer",
    "layer_outputs", "load", "load_torch", "save", "summary",
]
