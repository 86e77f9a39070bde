"""Pieces the models share that fastconv.nn does not provide: `flatten` as torchvision's
forward passes call it, and torchvision's weight initializers."""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from .. import random as _random
from ..nn import functional as F
from ..nn.modules import BatchNormNd, Module
from ..tensor import Tensor

__all__ = ["flatten"]

def flatten(x: Tensor) -> Tensor:
    """(N, *) -> (N, prod(*)), torch.flatten(x, 1)."""
    return F.flatten(x, 1)


# -- initializers (in place, NumPy, float32; drawn from fastconv's seeded generator) --------


def _fan(shape: Tuple[int, ...], mode: str) -> int:
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return (shape[0] if mode == "fan_out" else shape[1]) * receptive


def kaiming_normal_(param: Tensor, mode: str = "fan_out") -> None:
    """N(0, 2 / fan) for ReLU networks (torch.nn.init.kaiming_normal_, nonlinearity relu)."""
    normal_(param, math.sqrt(2.0 / _fan(tuple(param.data.shape), mode)))


def normal_(param: Tensor, std: float) -> None:
    """N(0, std); drawn in float32 because VGG's 100M-weight fc6 takes seconds in float64."""
    values = _random.generator().standard_normal(param.data.shape, dtype=np.float32)
    values *= np.float32(std)
    param.data[...] = values


def uniform_(param: Tensor, bound: float) -> None:
    """U(-bound, bound) (torch.nn.init.uniform_(-bound, bound))."""
    values = _random.generator().uniform(-bound, bound, param.data.shape)
    param.data[...] = values


def trunc_normal_(param: Tensor, std: float, a: float = -2.0, b: float = 2.0) -> None:
    """N(0, std) redrawn outside [a, b] (absolute bounds, as torch's; with std 0.01 they
    never bind, but keep the definition honest)."""
    gen = _random.generator()
    values = gen.normal(0.0, std, param.data.shape)
    bad = (values < a) | (values > b)
    while bad.any():
        values[bad] = gen.normal(0.0, std, int(bad.sum()))
        bad = (values < a) | (values > b)
    param.data[...] = values


def constant_(param: Optional[Tensor], value: float) -> None:
    if param is not None:
        param.data[...] = value


def init_batch_norms(model: Module) -> None:
    """weight 1, bias 0 for every BatchNorm (already nn's default; explicit as torchvision)."""
    for m in model.modules():
        if isinstance(m, BatchNormNd) and m.affine:
            constant_(m.weight, 1.0)
            constant_(m.bias, 0.0)

