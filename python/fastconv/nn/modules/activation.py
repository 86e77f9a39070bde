"""Elementwise activation layers: ReLU, ReLU6, LeakyReLU, Sigmoid, Tanh, Softmax."""

from __future__ import annotations

from ...tensor import Tensor
from .. import functional as F
from .module import Module


class ReLU(Module):
    """max(x, 0) elementwise, any shape. With `inplace=True` the input is overwritten when
    nothing is recorded for backward (inference); while recording, a new tensor is made,
    since fastconv's autograd keeps the input."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x, inplace=self.inplace)


class ReLU6(Module):
    """min(max(x, 0), 6) elementwise, any shape (MobileNet's and EfficientNet-Lite's
    activation); `inplace` as in ReLU."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu6(x, inplace=self.inplace)


class LeakyReLU(Module):
    """x where x > 0, negative_slope * x elsewhere, any shape (torch.nn.LeakyReLU; the
    activation of the YOLO networks); `inplace` as in ReLU."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)
        self.inplace = bool(inplace)

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope, inplace=self.inplace)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Module):
    """1 / (1 + exp(-x)) elementwise, any shape."""

    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


class Tanh(Module):
    """tanh(x) elementwise, any shape."""

    def forward(self, x: Tensor) -> Tensor:
        return F.tanh(x)


class Softmax(Module):
    """Softmax along `dim` (default the last); output has the input's shape."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return F.softmax(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
