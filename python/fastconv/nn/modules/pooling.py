"""Pooling layers: max and average pooling over windows (1-D to 3-D), adaptive average
pooling to any output size, and RoI align / RoI pool over regions of interest."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np

from ..._backend import array_module, device_of
from ..._geometry import IntOrTuple, Padding
from ...ops.pool import pool_plan
from ...ops.roi import roi_plan
from ...tensor import Tensor
from .. import functional as F
from .module import Module, check_rank, runs_plain


def _pool(kind: str, x: Tensor, kernel_size: IntOrTuple, stride: Optional[IntOrTuple],
          padding: Padding, ceil_mode: bool, count_include_pad: bool = True) -> Tensor:
    """Pooling of `kind` through nn.functional, or, when nothing is recorded, straight
    through the family's plan (no argmax indices are made: no gradient will need them)."""
    if not runs_plain(x):
        if kind == "max":
            return F.max_pool(x, kernel_size, stride=stride, padding=padding,
                              ceil_mode=ceil_mode)
        return F.avg_pool(x, kernel_size, stride=stride, padding=padding,
                          ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    data = x.data
    plan = pool_plan(kind, data.shape, data.dtype, device_of(data), kernel_size=kernel_size,
                     stride=stride, padding=padding, ceil_mode=ceil_mode,
                     count_include_pad=count_include_pad)
    return Tensor(plan.forward(data))


class PoolNd(Module):
    """Max or average pooling over windows: x (N, C, *spatial) -> (N, C, *out); stride
    defaults to kernel_size. Subclasses set `kind` ("max" or "avg") and `ndim`."""

    kind = ""
    ndim = 0

    def __init__(self, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None,
                 padding: Padding = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad

    def forward(self, x: Tensor) -> Tensor:
        check_rank(x, (self.ndim + 2,), "(N, C, *spatial)")
        return _pool(self.kind, x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                     self.count_include_pad)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding!r}, ceil_mode={self.ceil_mode}")


class MaxPoolNd(PoolNd):
    """Max pooling: x (N, C, *spatial) -> (N, C, *out); padded cells never win. Options
    after padding are keyword-only because torch's fourth positional argument is dilation,
    which fastconv's pooling does not take."""

    kind = "max"

    def __init__(self, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None,
                 padding: Padding = 0, *, ceil_mode: bool = False) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)


class MaxPool1d(MaxPoolNd):
    """1-D max pooling: x (N, C, L) -> (N, C, L_out)."""

    ndim = 1


class MaxPool2d(MaxPoolNd):
    """2-D max pooling: x (N, C, H, W) -> (N, C, H_out, W_out)."""

    ndim = 2


class MaxPool3d(MaxPoolNd):
    """3-D max pooling: x (N, C, D, H, W) -> (N, C, D', H', W')."""

    ndim = 3


class AvgPoolNd(PoolNd):
    """Average pooling: x (N, C, *spatial) -> (N, C, *out); arguments as torch.nn.AvgPool*d
    (count_include_pad=False divides by the in-bounds cells only)."""

    kind = "avg"


class AvgPool1d(AvgPoolNd):
    """1-D average pooling: x (N, C, L) -> (N, C, L_out)."""

    ndim = 1


class AvgPool2d(AvgPoolNd):
    """2-D average pooling: x (N, C, H, W) -> (N, C, H_out, W_out)."""

    ndim = 2


class AvgPool3d(AvgPoolNd):
    """3-D average pooling: x (N, C, D, H, W) -> (N, C, D', H', W')."""

    ndim = 3


SizeArg = Union[int, Sequence[Optional[int]]]


def _pool_matrix(n: int, o: int, dtype: np.dtype) -> np.ndarray:
    """(n, o) matrix whose column j averages input cells [floor(j*n/o), ceil((j+1)*n/o)),
    torch's adaptive window, so pooling one axis is a matmul."""
    m = np.zeros((n, o), dtype=dtype)
    for j in range(o):
        start, end = (j * n) // o, -((-(j + 1) * n) // o)
        m[start:end, j] = 1.0 / (end - start)
    return m


class AdaptiveAvgPoolNd(Module):
    """x (N, C, *spatial) -> (N, C, *output_size), windows as torch.nn.AdaptiveAvgPoolNd for
    any sizes (also output larger than input). None in output_size keeps that dim."""

    ndim = 0

    def __init__(self, output_size: SizeArg) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        check_rank(x, (self.ndim + 2,), "(N, C, *spatial)")
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
            # Equal windows: the pooling kernel is faster than matmuls.
            kernel = tuple(n // o for n, o in zip(in_size, out))
            return _pool("avg", x, kernel, kernel, 0, False)
        # Uneven (overlapping) windows: average one axis at a time; the windows are
        # rectangles, so separable averaging is exact.
        for axis, (n, o) in enumerate(zip(in_size, out), start=2):
            if n == o:
                continue
            m = array_module(x.data).asarray(_pool_matrix(n, o, np.dtype(x.dtype)))
            x = (x.transpose(axis, -1) @ Tensor(m)).transpose(axis, -1)
        return x

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveAvgPool1d(AdaptiveAvgPoolNd):
    """x (N, C, L) -> (N, C, output_size)."""

    ndim = 1


class AdaptiveAvgPool2d(AdaptiveAvgPoolNd):
    """x (N, C, H, W) -> (N, C, *output_size), any sizes (torchvision's AlexNet/VGG heads on
    non-224 inputs included)."""

    ndim = 2


class AdaptiveAvgPool3d(AdaptiveAvgPoolNd):
    """x (N, C, D, H, W) -> (N, C, *output_size)."""

    ndim = 3


class RoIAlign(Module):
    """RoI align (torchvision.ops.RoIAlign): forward(input (N, C, *spatial), rois) ->
    (R, C, *output_size); rois (R, 1 + 2 dims) or a list of per-image boxes (see
    fastconv.roi_align)."""

    def __init__(self, output_size: SizeArg, spatial_scale: float = 1.0,
                 sampling_ratio: int = -1, aligned: bool = False) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: Tensor, rois: Any) -> Tensor:
        if not runs_plain(input):
            return F.roi_align(input, rois, self.output_size, self.spatial_scale,
                               self.sampling_ratio, self.aligned)
        data = input.data
        plan = roi_plan("align", data.shape, data.dtype, device_of(data),
                        output_size=self.output_size, spatial_scale=self.spatial_scale,
                        sampling_ratio=self.sampling_ratio, aligned=self.aligned)
        return Tensor(plan.forward(data, plan.rois(F.roi_arrays(rois))))

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")


class RoIPool(Module):
    """RoI max pooling (torchvision.ops.RoIPool): forward(input (N, C, *spatial), rois) ->
    (R, C, *output_size) (see fastconv.roi_pool)."""

    def __init__(self, output_size: SizeArg, spatial_scale: float = 1.0) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input: Tensor, rois: Any) -> Tensor:
        if not runs_plain(input):
            return F.roi_pool(input, rois, self.output_size, self.spatial_scale)
        data = input.data
        plan = roi_plan("pool", data.shape, data.dtype, device_of(data),
                        output_size=self.output_size, spatial_scale=self.spatial_scale)
        return Tensor(plan.forward(data, plan.rois(F.roi_arrays(rois))))

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"
