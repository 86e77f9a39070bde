"""The convolutional implementation of sliding windows: `convolutionalize(model,
input_shape)` turns a classifier of one window into a network that scores every window of
a larger image in one pass (the fully connected layers become convolutions that share
their weights), and `LinearAsConv`, the layer a Linear becomes."""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import numpy as np

from .._backend import device_of
from ..ops.conv import conv_plan
from ..tensor import Tensor, no_grad
from . import functional as F
from .modules import (AdaptiveAvgPoolNd, Dropout, Flatten, Identity, LeakyReLU, Linear, Module,
                      ReLU, ReLU6, Sequential, Sigmoid, Softmax, Tanh)
from .modules.module import check_rank, runs_plain

__all__ = ["LinearAsConv", "convolutionalize"]

OP = "convolutionalize"

# Layers that act on each position alone, so they slide unchanged over a grid of windows.
POINTWISE = (ReLU, ReLU6, LeakyReLU, Sigmoid, Tanh, Dropout, Identity)


class LinearAsConv(Module):
    """A Linear layer applied as a convolution: x (N, C, *spatial) -> (N, out_features,
    *out) with the kernel `kernel_size` (stride 1), where the Linear saw one window of
    shape (C, *kernel_size) flattened (in_features = C * prod(kernel_size)).

    The Linear's weight and bias are this layer's own, the same Parameter objects: training
    either model trains both, and the state dict holds "weight" (out_features,
    in_features) and "bias" as the Linear's. The kernel is the weight reshaped to (out, C,
    *kernel_size), which puts each input feature where Flatten took it from.
    """

    def __init__(self, linear: Linear, in_shape: Sequence[int]) -> None:
        super().__init__()
        in_shape = tuple(int(n) for n in in_shape)
        if len(in_shape) < 2 or math.prod(in_shape) != linear.in_features:
            raise ValueError(f"LinearAsConv: in_shape {in_shape} (C, *kernel) must hold the "
                             f"Linear's {linear.in_features} input features")
        self.in_channels = in_shape[0]
        self.kernel_size = in_shape[1:]
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight = linear.weight
        self.register_parameter("bias", linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        check_rank(x, (len(self.kernel_size) + 2,), "(N, C, *spatial)")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got input shape "
                             f"{tuple(x.shape)}")
        kernel_shape = (self.out_features, self.in_channels) + self.kernel_size
        weight, bias = self.weight, self.bias
        if not runs_plain(x, weight, bias):
            return F.conv(x, weight.reshape(kernel_shape), bias)
        data = x.data
        plan = conv_plan(data.shape, kernel_shape, data.dtype, device_of(data))
        return Tensor(plan.forward(data, weight.data.reshape(kernel_shape),
                                   None if bias is None else bias.data))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_features}, kernel_size={self.kernel_size} "
                f"(Linear {self.in_features} -> {self.out_features})")


def _layers(module: Module, path: str, root: bool) -> List[Tuple[str, Module]]:
    """The layers the model runs, in order: the root's children and every Sequential
    opened up; any other module with children is one layer (a residual block, say)."""
    children = list(module.named_children())
    if not children or not (root or isinstance(module, Sequential)):
        return [(path or type(module).__name__, module)]
    out: List[Tuple[str, Module]] = []
    for name, child in children:
        out += _layers(child, f"{path}.{name}" if path else name, False)
    return out


def _shape(input_shape: Sequence[int]) -> Tuple[int, ...]:
    try:
        shape = tuple(int(n) for n in input_shape)
        if any(isinstance(n, bool) or int(n) != n for n in input_shape):
            raise TypeError
    except (TypeError, ValueError):
        raise TypeError(f"{OP}: input_shape must be a sequence of ints (C, *spatial), got "
                        f"{input_shape!r}") from None
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"{OP}: input_shape must be one window's (C, *spatial) with "
                         f"positive sizes, without the batch dim, got {shape}")
    return shape


def convolutionalize(model: Module, input_shape: Sequence[int]) -> Module:
    """The same network as `model`, a classifier of one window of `input_shape` = (C,
    *spatial) (no batch dim, as nn.summary takes it), made to slide: returns a Sequential
    whose output is (N, outputs, *grid), one score vector per window.

    The model's layers (its children in registration order, Sequentials opened up) are
    kept up to the spatial part's end (a Flatten, or the first Linear, which then flattens
    implicitly); there the first Linear becomes a `LinearAsConv` with the kernel of the
    remaining spatial size and every later Linear a 1x1 one, all sharing the Linears'
    parameters. Flatten is dropped, Dropout and the pointwise activations are kept,
    Softmax over the features becomes Softmax(dim=1), an adaptive average pool that is the
    identity at input_shape is dropped. Any other layer after the spatial part, or an
    adaptive pool that changes the size, cannot slide: ValueError.

    On an input of input_shape the result gives (N, outputs, 1, ..., 1), the model's output;
    on a larger image, the scores of every window at a stride of the product of the
    spatial layers' strides (the seed's 14x14 classifier gives 2x2 scores on 16x16, 8x8 on
    28x28). The network is checked once on a random window against `model` (eval mode): a
    model whose forward does not run its layers in that order raises ValueError.

    A window of a larger image equals the crop through `model` where the spatial layers
    have no padding; a padded layer sees zeros at the crop's border but the neighbouring
    pixels inside the image (the usual reason the sliding scores differ slightly from
    crops).
    """
    if not isinstance(model, Module):
        raise TypeError(f"{OP}: model must be a fastconv.nn.Module, got "
                        f"{type(model).__name__}")
    shape = _shape(input_shape)
    params = list(model.parameters())
    dtype = params[0].data.dtype if params else np.dtype(np.float32)
    # A private generator: building the network must not shift fastconv.manual_seed's draws.
    window = Tensor(np.random.default_rng(0).standard_normal((1,) + shape).astype(dtype))
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        with no_grad():
            network = Sequential(*_sliding_layers(model, window))
            expected = model(window).numpy()
            got = network(window).numpy()
    finally:
        for module, mode in modes:
            object.__setattr__(module, "training", mode)
    if got.size != expected.size or not np.allclose(
            got.reshape(expected.shape), expected, rtol=1e-3,
            atol=1e-3 * max(1.0, float(np.abs(expected).max(initial=0.0)))):
        raise ValueError(f"{OP}: the sliding network does not reproduce {type(model).__name__} "
                         f"on a window of {shape} (output {got.shape} vs {expected.shape}): "
                         "its forward must run its layers in registration order")
    return network


def _sliding_layers(model: Module, window: Tensor) -> List[Module]:
    """The layers of the sliding network, found by running `model`'s layers one by one on
    `window` (1, C, *spatial) to see each one's input shape."""
    shape = window.shape[1:]
    ndim = len(shape) - 1
    kept: List[Module] = []
    x = window
    features = None  # (C, *spatial) where the spatial part ended

    def run(layer: Module, x: Tensor) -> Tensor:
        try:
            return layer(x)
        except ValueError as error:
            raise ValueError(f"{OP}: the model does not run on a window of input_shape "
                             f"{shape}: {error}") from None

    for name, layer in _layers(model, "", True):
        where = f"{OP}: layer {name} ({type(layer).__name__})"
        if features is None:
            if isinstance(layer, AdaptiveAvgPoolNd):
                y = run(layer, x)
                if y.shape != x.shape:
                    raise ValueError(f"{where} maps {x.shape[1:]} to {y.shape[1:]} at "
                                     f"input_shape {shape}: only an adaptive pool that is the "
                                     "identity there can slide")
                continue
            if not (isinstance(layer, Flatten) or isinstance(layer, Linear) and x.ndim > 2):
                kept.append(layer)
                x = run(layer, x)
                continue
            if x.ndim != ndim + 2:
                raise ValueError(f"{where} sees shape {x.shape[1:]}, not the {ndim}-D feature "
                                 f"map of input_shape {shape}")
            features = x.shape[1:]
            x = x.reshape(1, -1)
            if isinstance(layer, Flatten):
                continue
        if isinstance(layer, Linear):
            first = not any(isinstance(k, LinearAsConv) for k in kept)
            in_shape = features if first else (x.shape[1],) + (1,) * ndim
            if math.prod(in_shape) != layer.in_features:
                raise ValueError(f"{where} takes {layer.in_features} features, the layer "
                                 f"before gives {math.prod(in_shape)}")
            kept.append(LinearAsConv(layer, in_shape))
        elif isinstance(layer, POINTWISE):
            kept.append(layer)
        elif isinstance(layer, Softmax) and layer.dim in (1, -1):
            kept.append(Softmax(dim=1))
        elif not (isinstance(layer, Flatten) and x.ndim == 2):
            raise ValueError(f"{where} comes after the spatial part and cannot slide over "
                             "windows (only Linear, Flatten, Dropout, pointwise activations "
                             "and Softmax over the features can)")
        x = run(layer, x)
    return kept
