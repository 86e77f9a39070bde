"""Pieces the models need that fastconv.nn does not provide: adaptive average pooling for
any input/output size and 1-D/3-D inputs, and torchvision's weight initializers."""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from .. import random as _random
from ..nn import functional as F
from ..nn.modules import Module, _BatchNorm
from ..tensor import Tensor, get_array_module

__all__ = ["AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "flatten"]

SizeArg = Union[int, Sequence[Optional[int]]]


def _pool_matrix(n: int, o: int, dtype: np.dtype) -> np.ndarray:
    """(n, o) matrix whose column j averages input cells [floor(j*n/o), ceil((j+1)*n/o)),
    torch's adaptive window, so pooling one axis is a matmul."""
    m = np.zeros((n, o), dtype=dtype)
    for j in range(o):
        start, end = (j * n) // o, -((-(j + 1) * n) // o)
        m[start:end, j] = 1.0 / (end - start)
    return m


class _AdaptiveAvgPoolNd(Module):
    """x (N, C, *spatial) -> (N, C, *output_size), windows as torch.nn.AdaptiveAvgPoolNd for
    any sizes (also output larger than input). None in output_size keeps that dim."""

    ndim = 0

    def __init__(self, output_size: SizeArg) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        if len(x.shape) != self.ndim + 2:
            raise ValueError(f"expected {self.ndim + 2}D input (N, C, *spatial), got shape "
                             f"{tuple(x.shape)}")
        wanted = ((self.output_size,) * self.ndim if isinstance(self.output_size, int)
                  else tuple(self.output_size))
        if len(wanted) != self.ndim:
            raise ValueError(f"output_size {self.output_size} needs {self.ndim} entries")
        in_size = tuple(int(n) for n in x.shape[2:])
        out = tuple(n if o is None else int(o) for n, o in zip(in_size, wanted))
        if any(o < 1 for o in out):
            raise ValueError(f"output size {out} must be positive")
        if out == in_size:
            return x
        if all(n % o == 0 for n, o in zip(in_size, out)):
            # Equal windows: the C++ pooling kernel is faster than matmuls.
            kernel = tuple(n // o for n, o in zip(in_size, out))
            return F.avg_pool(x, kernel, stride=kernel)
        # Uneven (overlapping) windows: average one axis at a time; the windows are
        # rectangles, so separable averaging is exact.
        for axis, (n, o) in enumerate(zip(in_size, out), start=2):
            if n == o:
                continue
            m = get_array_module(x.data).asarray(_pool_matrix(n, o, np.dtype(x.dtype)))
            x = (x.transpose(axis, -1) @ Tensor(m)).transpose(axis, -1)
        return x

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    """x (N, C, L) -> (N, C, output_size)."""

    ndim = 1


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    """x (N, C, H, W) -> (N, C, *output_size); unlike fastconv.nn.AdaptiveAvgPool2d also for
    sizes that do not divide (torchvision's AlexNet/VGG heads on non-224 inputs)."""

    ndim = 2


class AdaptiveAvgPool3d(_AdaptiveAvgPoolNd):
    """x (N, C, D, H, W) -> (N, C, *output_size)."""

    ndim = 3


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
        if isinstance(m, _BatchNorm) and m.affine:
            constant_(m.weight, 1.0)
            constant_(m.bias, 0.0)

