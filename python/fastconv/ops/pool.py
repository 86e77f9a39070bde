"""Max and average pooling and their gradients on NumPy or CuPy arrays (channels first).

`pool_plan(kind, x_shape, dtype, device, **window)` validates one pooling window once
("max" or "avg"); its `forward` and `backward` run the kernels. `max_pool_backward` needs
no geometry (the indices say where each gradient goes) and so has no plan.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from .._backend import (ANY_SPATIAL_RANK, PlanBase, PlanCache, array_module, check_dy,
                        checked_shape, device_of, dtype_key, empty_like, float_arrays,
                        full_shape, index_array, kernels)
from .._geometry import IntOrTuple, Padding, make_window

KINDS = ("max", "avg")


class PoolPlan(PlanBase):
    """A validated pooling window on x (N, C, *spatial) -> y (N, C, *out)."""

    __slots__ = ("kind", "x_shape", "out_shape", "window", "ceil_mode", "count_include_pad",
                 "_geometry")

    def __init__(self, kind: str, x_shape: Sequence[int], dtype: Any, device: str,
                 kernel_size: IntOrTuple, stride: Optional[IntOrTuple], padding: Padding,
                 ceil_mode: bool, count_include_pad: bool, op: str,
                 x_name: str = "x") -> None:
        super().__init__(op, dtype, device)
        if kind not in KINDS:
            raise ValueError(f"{op}: kind must be 'max' or 'avg', got {kind!r}")
        shape = checked_shape(op, x_name, x_shape, ANY_SPATIAL_RANK)
        self.kind = kind
        self.x_shape = shape
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self.window = make_window(op, shape[2:], kernel_size, stride, padding, 1, self.ceil_mode,
                                  pool=True)
        self.out_shape = shape[:2] + self.window.out_size
        self._geometry = self.window.cpp_args()[:4]

    def forward(self, x: Any, return_indices: bool = False) -> Union[Any, Tuple[Any, Any]]:
        """y (N, C, *out); max pooling with `return_indices` also gives the int64 flat
        offsets of the maxima within each (n, c) input plane."""
        x = self.operand("x", x, self.x_shape, f"{self.kind}_pool")
        y = self.empty(self.out_shape)
        if self.kind == "avg":
            self.kernels.avg_pool_forward(x, y, *self._geometry, self.ceil_mode,
                                          self.count_include_pad)
            return y
        indices = self.empty(self.out_shape, np.int64) if return_indices else None
        self.kernels.max_pool_forward(x, y, indices, *self._geometry, self.ceil_mode)
        return (y, indices) if return_indices else y

    def backward(self, dy: Any, indices: Optional[Any] = None) -> Any:
        """dx (N, C, *spatial) from dy (N, C, *out): average pooling's exact adjoint, or
        for max pooling dy added at `indices` (as forward returned them)."""
        if self.kind == "max":
            if indices is None:
                raise TypeError("max_pool backward needs the indices of the forward pass")
            return max_pool_backward(dy, indices, self.x_shape)
        dy = self.operand("dy", dy, self.out_shape, "avg_pool_backward")
        dx = self.empty(self.x_shape)
        self.kernels.avg_pool_backward(dy, dx, *self._geometry, self.ceil_mode,
                                       self.count_include_pad)
        return dx


_PLANS = PlanCache()


def pool_plan(kind: str, x_shape: Sequence[int], dtype: Any, device: str = "cpu", *,
              kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None,
              padding: Padding = 0, ceil_mode: bool = False, count_include_pad: bool = True,
              op: Optional[str] = None, x_name: str = "x") -> PoolPlan:
    """The (cached) plan of `kind` ("max" or "avg") pooling over x (N, C, *spatial);
    window arguments as `max_pool` / `avg_pool`. `op` and `x_name` name things in errors."""
    ceil_mode, count_include_pad = bool(ceil_mode), bool(count_include_pad)
    # Flags enter the key as ints: bools are not plain (True == 1).
    key = (kind, tuple(x_shape), dtype_key(dtype), device, kernel_size, stride, padding,
           int(ceil_mode), int(count_include_pad))
    return _PLANS.get(key, lambda: PoolPlan(kind, x_shape, dtype, device, kernel_size, stride,
                                            padding, ceil_mode, count_include_pad,
                                            op or f"{kind}_pool", x_name))


def max_pool(x: Any, kernel_size: IntOrTuple, *, stride: Optional[IntOrTuple] = None,
             padding: Padding = 0, ceil_mode: bool = False,
             return_indices: bool = False) -> Union[Any, Tuple[Any, Any]]:
    """N-D max pooling of x (N, C, *spatial).

    stride=None means stride = kernel_size; padding (int, tuple, (before, after) pairs,
    "valid" or "same") is at most kernel_size // 2 per side, and padded cells never win.
    Ties go to the first element in row-major scan order; a NaN wins (the first NaN).
    With return_indices, also returns int64 flat offsets of the maxima within each (n, c)
    input plane (as torch's max_pool*d).
    """
    (x,) = float_arrays("max_pool", x=x)
    plan = pool_plan("max", x.shape, x.dtype, device_of(x), kernel_size=kernel_size,
                     stride=stride, padding=padding, ceil_mode=ceil_mode)
    return plan.forward(x, return_indices)


def avg_pool(x: Any, kernel_size: IntOrTuple, *, stride: Optional[IntOrTuple] = None,
             padding: Padding = 0, ceil_mode: bool = False,
             count_include_pad: bool = True) -> Any:
    """N-D average pooling of x (N, C, *spatial).

    count_include_pad=True divides by the window clipped to the padded extent (padding
    cells count, a ceil_mode overhang past them does not, as PyTorch); False divides by the
    number of input cells in the window.
    """
    (x,) = float_arrays("avg_pool", x=x)
    plan = pool_plan("avg", x.shape, x.dtype, device_of(x), kernel_size=kernel_size,
                     stride=stride, padding=padding, ceil_mode=ceil_mode,
                     count_include_pad=count_include_pad)
    return plan.forward(x)


def max_pool_backward(dy: Any, indices: Any, input_shape: Sequence[int]) -> Any:
    """Gradient of `max_pool` with respect to x.

    dy: (N, C, *out); indices: integer array of dy's shape, as `max_pool` returned them;
    input_shape: (N, C, *spatial). Returns dx of shape input_shape, dy added at indices.
    """
    op = "max_pool_backward"
    (dy,) = float_arrays(op, dy=dy)
    indices = index_array(op, "indices", indices, like=dy)
    checked_shape(op, "dy", dy.shape, ANY_SPATIAL_RANK)
    if indices.shape != dy.shape:
        raise ValueError(f"{op}: indices has shape {indices.shape} but dy has shape {dy.shape}")
    shape = full_shape(op, "input_shape", input_shape, dy.ndim)
    if shape[:2] != dy.shape[:2]:
        raise ValueError(f"{op}: input_shape {shape} and dy shape {dy.shape} must agree in N "
                         "and C")
    xp = array_module(dy)
    indices = xp.ascontiguousarray(indices, dtype=np.int64)
    dx = empty_like(dy, shape, dy.dtype)
    kernels(device_of(dy)).max_pool_backward(dy, indices, dx)
    return dx


def avg_pool_backward(dy: Any, input_shape: Sequence[int], kernel_size: IntOrTuple, *,
                      stride: Optional[IntOrTuple] = None, padding: Padding = 0,
                      ceil_mode: bool = False, count_include_pad: bool = True) -> Any:
    """Gradient of `avg_pool` with respect to x (its exact adjoint).

    dy: (N, C, *out); input_shape: (N, C, *spatial); the window arguments as for avg_pool.
    """
    op = "avg_pool_backward"
    (dy,) = float_arrays(op, dy=dy)
    if dy.ndim < 3:
        raise ValueError(f"{op}: dy must be (N, C, *spatial) with at least one spatial dim, "
                         f"got shape {dy.shape}")
    shape = full_shape(op, "input_shape", input_shape, dy.ndim)
    plan = pool_plan("avg", shape, dy.dtype, device_of(dy), kernel_size=kernel_size,
                     stride=stride, padding=padding, ceil_mode=ceil_mode,
                     count_include_pad=count_include_pad, op=op, x_name="input_shape")
    check_dy(op, dy, plan.out_shape)
    return plan.backward(dy)
