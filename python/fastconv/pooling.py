"""Max and average pooling and their gradients on NumPy arrays (channels first)."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np

from ._backend import (array_module, check_dy, empty, float_arrays, full_shape, index_array,
                       kernels)
from ._geometry import IntOrTuple, Padding, Window, make_window


def _pool_window(op: str, shape: Sequence[int], kernel_size: IntOrTuple,
                 stride: Optional[IntOrTuple], padding: Padding, ceil_mode: bool,
                 name: str = "x") -> Window:
    """Check shape (N, C, *spatial) and normalize the window (padding at most kernel//2)."""
    shape = tuple(shape)
    if len(shape) < 3:
        raise ValueError(f"{op}: {name} must be (N, C, *spatial) with at least one spatial dim, "
                         f"got shape {shape}")
    if 0 in shape:
        raise ValueError(f"{op}: {name} has a zero-size dim, shape {shape}")
    return make_window(op, shape[2:], kernel_size, stride, padding, 1, bool(ceil_mode),
                       pool=True)


def _geometry(win: Window) -> tuple:
    kernel, stride, pad_before, pad_after, _ = win.cpp_args()
    return kernel, stride, pad_before, pad_after


def max_pool(x: np.ndarray, kernel_size: IntOrTuple, *, stride: Optional[IntOrTuple] = None,
             padding: Padding = 0, ceil_mode: bool = False,
             return_indices: bool = False) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """N-D max pooling of x (N, C, *spatial).

    stride=None means stride = kernel_size; padding (int, tuple, (before, after) pairs,
    "valid" or "same") is at most kernel_size // 2 per side, and padded cells never win.
    Ties go to the first element in row-major scan order; a NaN wins (the first NaN).
    With return_indices, also returns int64 flat offsets of the maxima within each (n, c)
    input plane (as torch's max_pool*d).
    """
    (x,) = float_arrays("max_pool", x=x)
    win = _pool_window("max_pool", x.shape, kernel_size, stride, padding, ceil_mode)
    out_shape = x.shape[:2] + win.out_size
    y = empty(x, out_shape, x.dtype)
    indices = empty(x, out_shape, np.int64) if return_indices else None
    kernels(x).max_pool_forward(x, y, indices, *_geometry(win), bool(ceil_mode))
    return (y, indices) if return_indices else y


def avg_pool(x: np.ndarray, kernel_size: IntOrTuple, *, stride: Optional[IntOrTuple] = None,
             padding: Padding = 0, ceil_mode: bool = False,
             count_include_pad: bool = True) -> np.ndarray:
    """N-D average pooling of x (N, C, *spatial).

    count_include_pad=True divides by the window clipped to the padded extent (padding
    cells count, a ceil_mode overhang past them does not, as PyTorch); False divides by the
    number of input cells in the window.
    """
    (x,) = float_arrays("avg_pool", x=x)
    win = _pool_window("avg_pool", x.shape, kernel_size, stride, padding, ceil_mode)
    y = empty(x, x.shape[:2] + win.out_size, x.dtype)
    kernels(x).avg_pool_forward(x, y, *_geometry(win), bool(ceil_mode), bool(count_include_pad))
    return y


def max_pool_backward(dy: np.ndarray, indices: np.ndarray,
                      input_shape: Sequence[int]) -> np.ndarray:
    """Gradient of `max_pool` with respect to x.

    dy: (N, C, *out); indices: integer array of dy's shape, as `max_pool` returned them;
    input_shape: (N, C, *spatial). Returns dx of shape input_shape, dy added at indices.
    """
    op = "max_pool_backward"
    (dy,) = float_arrays(op, dy=dy)
    indices = index_array(op, "indices", indices, like=dy)
    if dy.ndim < 3:
        raise ValueError(f"{op}: dy must be (N, C, *spatial) with at least one spatial dim, "
                         f"got shape {dy.shape}")
    if dy.size == 0:
        raise ValueError(f"{op}: dy has a zero-size dim, shape {dy.shape}")
    if indices.shape != dy.shape:
        raise ValueError(f"{op}: indices has shape {indices.shape} but dy has shape {dy.shape}")
    shape = full_shape(op, "input_shape", input_shape, dy.ndim)
    if shape[:2] != dy.shape[:2]:
        raise ValueError(f"{op}: input_shape {shape} and dy shape {dy.shape} must agree in N "
                         "and C")
    xp = array_module(dy)
    indices = xp.ascontiguousarray(indices, dtype=np.int64)
    dx = empty(dy, shape, dy.dtype)
    kernels(dy).max_pool_backward(dy, indices, dx)
    return dx


def avg_pool_backward(dy: np.ndarray, input_shape: Sequence[int], kernel_size: IntOrTuple, *,
                      stride: Optional[IntOrTuple] = None, padding: Padding = 0,
                      ceil_mode: bool = False, count_include_pad: bool = True) -> np.ndarray:
    """Gradient of `avg_pool` with respect to x (its exact adjoint).

    dy: (N, C, *out); input_shape: (N, C, *spatial); the window arguments as for avg_pool.
    """
    op = "avg_pool_backward"
    (dy,) = float_arrays(op, dy=dy)
    if dy.ndim < 3:
        raise ValueError(f"{op}: dy must be (N, C, *spatial) with at least one spatial dim, "
                         f"got shape {dy.shape}")
    shape = full_shape(op, "input_shape", input_shape, dy.ndim)
    win = _pool_window(op, shape, kernel_size, stride, padding, ceil_mode, "input_shape")
    check_dy(op, dy, shape[:2] + win.out_size)
    dx = empty(dy, shape, dy.dtype)
    kernels(dy).avg_pool_backward(dy, dx, *_geometry(win), bool(ceil_mode), bool(count_include_pad))
    return dx
