"""Convolution layers: Conv (any number of spatial dims), Conv1d, Conv2d, Conv3d."""

from __future__ import annotations

import math

from ..._backend import device_of
from ..._geometry import IntOrTuple, Padding, as_tuple
from ...ops.conv import conv_plan
from ...tensor import Tensor
from .. import functional as F
from .module import Module, check_rank, runs_plain, uniform_parameter


class Conv(Module):
    """N-D convolution layer: x (N, C_in, *spatial) -> (N, C_out, *out).

    weight (C_out, C_in // groups, *kernel), bias (C_out,), both initialized
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = C_in // groups * prod(kernel), which is
    torch's Kaiming-uniform with a=sqrt(5). padding: int, tuple, (before, after) pairs,
    "valid" or "same", as `fastconv.conv`.
    """

    def __init__(self, ndim: int, in_channels: int, out_channels: int, kernel_size: IntOrTuple,
                 stride: IntOrTuple = 1, padding: Padding = 0, dilation: IntOrTuple = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must be divisible by groups ({groups})")
        self.ndim = ndim
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = as_tuple(kernel_size, ndim, "kernel_size")
        self.stride = as_tuple(stride, ndim, "stride")
        self.padding = padding
        self.dilation = as_tuple(dilation, ndim, "dilation")
        self.groups = groups
        fan_in = in_channels // groups * math.prod(self.kernel_size)
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        self.weight = uniform_parameter((out_channels, in_channels // groups) + self.kernel_size, bound)
        self.register_parameter("bias", uniform_parameter((out_channels,), bound) if bias else None)

    def forward(self, x: Tensor) -> Tensor:
        check_rank(x, (self.ndim + 2,), "(N, C, *spatial)")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got input shape "
                             f"{tuple(x.shape)}")
        weight, bias = self.weight, self.bias
        if not runs_plain(x, weight, bias):
            return F.conv(x, weight, bias, stride=self.stride, padding=self.padding,
                          dilation=self.dilation, groups=self.groups)
        data = x.data
        plan = conv_plan(data.shape, weight.data.shape, data.dtype, device_of(data),
                         stride=self.stride, padding=self.padding, dilation=self.dilation,
                         groups=self.groups)
        return Tensor(plan.forward(data, weight.data, None if bias is None else bias.data))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r}")


class Conv1d(Conv):
    """1-D convolution: x (N, C_in, L) -> (N, C_out, L_out); arguments as torch.nn.Conv1d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrTuple,
                 stride: IntOrTuple = 1, padding: Padding = 0, dilation: IntOrTuple = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__(1, in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias)


class Conv2d(Conv):
    """2-D convolution: x (N, C_in, H, W) -> (N, C_out, H_out, W_out); as torch.nn.Conv2d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrTuple,
                 stride: IntOrTuple = 1, padding: Padding = 0, dilation: IntOrTuple = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__(2, in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias)


class Conv3d(Conv):
    """3-D convolution: x (N, C_in, D, H, W) -> (N, C_out, D', H', W'); as torch.nn.Conv3d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrTuple,
                 stride: IntOrTuple = 1, padding: Padding = 0, dilation: IntOrTuple = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__(3, in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias)
