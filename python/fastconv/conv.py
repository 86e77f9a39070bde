"""Convolution, its gradients, and im2col/col2im on NumPy arrays (channels first)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ._backend import (array_module, check_dy, check_nonempty, empty, float_arrays, full_shape,
                       kernels)
from ._geometry import IntOrTuple, Padding, Window, as_int, as_tuple, make_window


def _groups(op: str, groups: int) -> int:
    groups = as_int(groups, f"{op}: groups")
    if groups < 1:
        raise ValueError(f"{op}: groups must be positive, got {groups}")
    return groups


def _conv_window(op: str, x_shape: Sequence[int], w_shape: Sequence[int], stride: IntOrTuple,
                 padding: Padding, dilation: IntOrTuple, groups: int,
                 x_name: str = "x") -> Window:
    """Check input shape (N, C, *spatial) against weight shape (K, C/groups, *kernel)."""
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    if len(w_shape) < 3:
        raise ValueError(f"{op}: w must be (K, C/groups, *kernel) with at least one spatial "
                         f"dim, got shape {w_shape}")
    if len(x_shape) != len(w_shape):
        raise ValueError(f"{op}: {x_name} shape {x_shape} must have {len(w_shape)} dims "
                         f"(N, C, *spatial) to match w shape {w_shape}")
    if 0 in x_shape or 0 in w_shape:
        raise ValueError(f"{op}: zero-size dim in {x_name} shape {x_shape} or w shape {w_shape}")
    channels, out_channels = x_shape[1], w_shape[0]
    if channels % groups or out_channels % groups:
        raise ValueError(f"{op}: groups={groups} must divide the input channels ({x_name} shape "
                         f"{x_shape}) and the output channels (w shape {w_shape})")
    if w_shape[1] != channels // groups:
        raise ValueError(f"{op}: w shape {w_shape} needs C/groups = {channels // groups} in dim 1 "
                         f"for {x_name} shape {x_shape} and groups={groups}")
    return make_window(op, x_shape[2:], w_shape[2:], stride, padding, dilation)


def conv(x: np.ndarray, w: np.ndarray, bias: Optional[np.ndarray] = None, *,
         stride: IntOrTuple = 1, padding: Padding = 0, dilation: IntOrTuple = 1,
         groups: int = 1, flip: bool = False) -> np.ndarray:
    """N-D convolution (cross-correlation, as in deep learning).

    x: (N, C, *spatial); w: (K, C // groups, *kernel); bias: (K,) or None.
    Returns (N, K, *out) with out from `output_size`. `flip=True` flips the kernel along
    every spatial dim, giving the textbook convolution. padding: int, tuple, tuple of
    (before, after) pairs, "valid" or "same" (output ceil(n / stride), extra pad at the end).
    """
    groups = _groups("conv", groups)
    x, w, bias = float_arrays("conv", x=x, w=w, bias=bias)
    win = _conv_window("conv", x.shape, w.shape, stride, padding, dilation, groups)
    if bias is not None and bias.shape != (w.shape[0],):
        raise ValueError(f"conv: bias must have shape ({w.shape[0]},) for w shape {w.shape}, "
                         f"got {bias.shape}")
    if flip:
        xp = array_module(w)
        w = xp.ascontiguousarray(xp.flip(w, axis=tuple(range(2, w.ndim))))
    out = empty(x, (x.shape[0], w.shape[0]) + win.out_size, x.dtype)
    _, stride_, pad_before, pad_after, dilation_ = win.cpp_args()
    kernels(x).conv_forward(x, w, bias, out, stride_, pad_before, pad_after, dilation_, groups)
    return out


def conv_backward_input(dy: np.ndarray, w: np.ndarray, input_shape: Sequence[int], *,
                        stride: IntOrTuple = 1, padding: Padding = 0, dilation: IntOrTuple = 1,
                        groups: int = 1) -> np.ndarray:
    """Gradient of `conv` with respect to x.

    dy: (N, K, *out); w: (K, C // groups, *kernel); input_shape: (N, C, *spatial).
    Returns dx with shape input_shape.
    """
    op = "conv_backward_input"
    groups = _groups(op, groups)
    dy, w = float_arrays(op, dy=dy, w=w)
    shape = full_shape(op, "input_shape", input_shape, w.ndim)
    win = _conv_window(op, shape, w.shape, stride, padding, dilation, groups, "input_shape")
    check_dy(op, dy, (shape[0], w.shape[0]) + win.out_size)
    dx = empty(dy, shape, dy.dtype)
    _, stride_, pad_before, pad_after, dilation_ = win.cpp_args()
    kernels(dy).conv_backward_input(dy, w, dx, stride_, pad_before, pad_after, dilation_, groups)
    return dx


def conv_backward_weight(x: np.ndarray, dy: np.ndarray, kernel_size: IntOrTuple, *,
                         stride: IntOrTuple = 1, padding: Padding = 0,
                         dilation: IntOrTuple = 1, groups: int = 1) -> np.ndarray:
    """Gradient of `conv` with respect to w.

    x: (N, C, *spatial); dy: (N, K, *out); kernel_size: the spatial kernel size.
    Returns dw of shape (K, C // groups, *kernel). (The bias gradient is dy summed over
    N and the spatial dims.)
    """
    op = "conv_backward_weight"
    groups = _groups(op, groups)
    x, dy = float_arrays(op, x=x, dy=dy)
    if x.ndim < 3 or dy.ndim != x.ndim:
        raise ValueError(f"{op}: x shape {x.shape} and dy shape {dy.shape} must both be "
                         "(N, C, *spatial) with the same number of dims")
    kernel = as_tuple(kernel_size, x.ndim - 2, "kernel_size")
    if x.shape[1] % groups:
        raise ValueError(f"{op}: groups={groups} must divide the input channels "
                         f"(x shape {x.shape})")
    w_shape = (dy.shape[1], x.shape[1] // groups) + kernel
    win = _conv_window(op, x.shape, w_shape, stride, padding, dilation, groups)
    check_dy(op, dy, (x.shape[0], dy.shape[1]) + win.out_size)
    dw = empty(x, w_shape, x.dtype)
    _, stride_, pad_before, pad_after, dilation_ = win.cpp_args()
    kernels(x).conv_backward_weight(x, dy, dw, stride_, pad_before, pad_after, dilation_, groups)
    return dw


def im2col(x: np.ndarray, kernel_size: IntOrTuple, *, stride: IntOrTuple = 1,
           padding: Padding = 0, dilation: IntOrTuple = 1) -> np.ndarray:
    """Sliding windows of x (N, C, *spatial) as columns: (N, C * prod(kernel), L).

    Rows are ordered channel-major, then kernel offsets in row-major order; L is the
    number of output positions, row-major over the output spatial dims (as torch unfold).
    """
    (x,) = float_arrays("im2col", x=x)
    if x.ndim < 3:
        raise ValueError(f"im2col: x must be (N, C, *spatial), got shape {x.shape}")
    check_nonempty("im2col", "x", x)
    win = make_window("im2col", x.shape[2:], kernel_size, stride, padding, dilation)
    rows = x.shape[1] * int(np.prod(win.kernel))
    cols = empty(x, (x.shape[0], rows, int(np.prod(win.out_size))), x.dtype)
    kernels(x).im2col(x, cols, *win.cpp_args())
    return cols


def col2im(cols: np.ndarray, output_size: IntOrTuple, kernel_size: IntOrTuple, *,
           stride: IntOrTuple = 1, padding: Padding = 0, dilation: IntOrTuple = 1) -> np.ndarray:
    """Adjoint of `im2col`: sums columns (N, C * prod(kernel), L) back into (N, C, *output_size).

    `output_size` is the spatial size of the image; overlapping contributions are summed.
    """
    (cols,) = float_arrays("col2im", cols=cols)
    if cols.ndim != 3:
        raise ValueError(f"col2im: cols must be (N, C*prod(kernel), L), got shape {cols.shape}")
    check_nonempty("col2im", "cols", cols)
    dims = len(output_size) if isinstance(output_size, Sequence) else 1
    size = as_tuple(output_size, dims, "output_size")
    win = make_window("col2im", size, kernel_size, stride, padding, dilation)
    kvol = int(np.prod(win.kernel))
    positions = int(np.prod(win.out_size))
    if cols.shape[1] % kvol or cols.shape[2] != positions:
        raise ValueError(f"col2im: cols shape {cols.shape} does not fit kernel_size {win.kernel}"
                         f" on output_size {size}: need (N, C*{kvol}, {positions})")
    image = empty(cols, (cols.shape[0], cols.shape[1] // kvol) + size, cols.dtype)
    kernels(cols).col2im(cols, image, *win.cpp_args())
    return image
