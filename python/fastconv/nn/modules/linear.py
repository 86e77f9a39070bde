"""Dense layers: Linear and Dropout."""

from __future__ import annotations

import math

from ... import random as _random
from ..._backend import matmul
from ...tensor import Tensor
from .. import functional as F
from .module import Module, runs_plain, uniform_parameter


class Linear(Module):
    """y = x @ weight.T + bias: x (*, in_features) -> (*, out_features).

    weight (out_features, in_features) and bias (out_features,) are initialized
    U(-1/sqrt(in_features), 1/sqrt(in_features)), as torch.nn.Linear.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        self.weight = uniform_parameter((out_features, in_features), bound)
        self.register_parameter("bias", uniform_parameter((out_features,), bound) if bias else None)

    def forward(self, x: Tensor) -> Tensor:
        if not x.shape or x.shape[-1] != self.in_features:
            raise ValueError(f"expected input (*, {self.in_features}), got shape "
                             f"{tuple(x.shape)}")
        weight, bias = self.weight, self.bias
        data, w = x.data, weight.data
        if (not runs_plain(x, weight, bias) or data.ndim != 2 or data.dtype != w.dtype
                or w.ndim != 2 or (bias is not None and (
                    bias.data.dtype != w.dtype or bias.data.shape != (w.shape[0],)))):
            return F.linear(x, weight, bias)
        # What F.linear computes, (x @ W.T) + b, without the Tensor steps in between.
        out = matmul(data, w.T)
        if bias is not None:
            out += bias.data
        return Tensor(out)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Dropout(Module):
    """In training, zero each element with probability p and scale the rest by 1/(1-p);
    in eval mode the identity. Any shape. `inplace` is accepted and ignored, as ReLU's."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training, generator=_random.generator())

    def extra_repr(self) -> str:
        return f"p={self.p}"
