"""im2col and its adjoint col2im on NumPy or CuPy arrays (channels first).

`unfold_plan(x_shape, dtype, device, **geometry)` validates the window once; its
`forward` is im2col and its `backward` col2im (the adjoint: overlapping windows sum).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from .._backend import (ANY_SPATIAL_RANK, PlanBase, PlanCache, checked_shape, device_of,
                        dtype_key, float_arrays)
from .._geometry import IntOrTuple, Padding, as_tuple, make_window


class UnfoldPlan(PlanBase):
    """A validated sliding-window geometry for images x (N, C, *spatial) and their columns
    (N, C * prod(kernel), L), L = prod(output spatial)."""

    __slots__ = ("x_shape", "cols_shape", "window", "_geometry")

    def __init__(self, x_shape: Sequence[int], dtype: Any, device: str,
                 kernel_size: IntOrTuple, stride: IntOrTuple, padding: Padding,
                 dilation: IntOrTuple, op: str = "im2col") -> None:
        super().__init__(op, dtype, device)
        self.x_shape = tuple(x_shape)
        self.window = make_window(op, self.x_shape[2:], kernel_size, stride, padding, dilation)
        rows = self.x_shape[1] * math.prod(self.window.kernel)
        self.cols_shape = (self.x_shape[0], rows, math.prod(self.window.out_size))
        self._geometry = self.window.cpp_args()

    def forward(self, x: Any) -> Any:
        """im2col: x (N, C, *spatial) -> columns (N, C * prod(kernel), L)."""
        x = self.operand("x", x, self.x_shape, "im2col")
        cols = self.empty(self.cols_shape)
        self.kernels.im2col(x, cols, *self._geometry)
        return cols

    def backward(self, cols: Any) -> Any:
        """col2im: columns (N, C * prod(kernel), L) summed back into (N, C, *spatial)."""
        cols = self.operand("cols", cols, self.cols_shape, "col2im")
        image = self.empty(self.x_shape)
        self.kernels.col2im(cols, image, *self._geometry)
        return image


_PLANS = PlanCache()


def unfold_plan(x_shape: Sequence[int], dtype: Any, device: str = "cpu", *,
                kernel_size: IntOrTuple, stride: IntOrTuple = 1, padding: Padding = 0,
                dilation: IntOrTuple = 1, op: str = "im2col") -> UnfoldPlan:
    """The (cached) plan of im2col/col2im on images of shape x_shape (N, C, *spatial)."""
    key = (tuple(x_shape), dtype_key(dtype), device, kernel_size, stride, padding, dilation)
    return _PLANS.get(key, lambda: UnfoldPlan(x_shape, dtype, device, kernel_size, stride,
                                              padding, dilation, op))


def im2col(x: Any, kernel_size: IntOrTuple, *, stride: IntOrTuple = 1,
           padding: Padding = 0, dilation: IntOrTuple = 1) -> Any:
    """Sliding windows of x (N, C, *spatial) as columns: (N, C * prod(kernel), L).

    Rows are ordered channel-major, then kernel offsets in row-major order; L is the
    number of output positions, row-major over the output spatial dims (as torch unfold).
    """
    (x,) = float_arrays("im2col", x=x)
    checked_shape("im2col", "x", x.shape, ANY_SPATIAL_RANK)
    plan = unfold_plan(x.shape, x.dtype, device_of(x), kernel_size=kernel_size, stride=stride,
                       padding=padding, dilation=dilation)
    return plan.forward(x)


def col2im(cols: Any, output_size: IntOrTuple, kernel_size: IntOrTuple, *,
           stride: IntOrTuple = 1, padding: Padding = 0, dilation: IntOrTuple = 1) -> Any:
    """Adjoint of `im2col`: sums columns (N, C * prod(kernel), L) back into (N, C, *output_size).

    `output_size` is the spatial size of the image; overlapping contributions are summed.
    """
    (cols,) = float_arrays("col2im", cols=cols)
    checked_shape("col2im", "cols", cols.shape, (3,), "(N, C*prod(kernel), L)")
    dims = len(output_size) if isinstance(output_size, Sequence) else 1
    size = as_tuple(output_size, dims, "output_size")
    win = make_window("col2im", size, kernel_size, stride, padding, dilation,
                      size_name="output_size")
    kvol = math.prod(win.kernel)
    positions = math.prod(win.out_size)
    if cols.shape[1] % kvol or cols.shape[2] != positions:
        raise ValueError(f"col2im: cols shape {cols.shape} does not fit kernel_size {win.kernel}"
                         f" on output_size {size}: need (N, C*{kvol}, {positions})")
    plan = unfold_plan((cols.shape[0], cols.shape[1] // kvol) + size, cols.dtype,
                       device_of(cols), kernel_size=kernel_size, stride=stride,
                       padding=padding, dilation=dilation, op="col2im")
    return plan.backward(cols)
