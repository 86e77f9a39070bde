"""Convolution and its gradients on NumPy or CuPy arrays (channels first).

`conv_plan(x_shape, w_shape, dtype, device, **geometry)` validates the geometry once and
returns a `ConvPlan` with `forward`, `backward_input` and `backward_weight`; plans are
cached, so the public functions below, nn.functional.conv and the Conv layers share them.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from .._backend import (PlanBase, PlanCache, array_module, device_of, dtype_key, float_arrays,
                        full_shape)
from .._geometry import IntOrTuple, Padding, Window, as_int, as_tuple, make_window


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


class ConvPlan(PlanBase):
    """A validated convolution geometry: x (N, C, *spatial), w (K, C // groups, *kernel),
    y (N, K, *out) on one device in one dtype. Every method checks its arrays against the
    plan (shape, dtype, device) and allocates its output."""

    __slots__ = ("x_shape", "w_shape", "out_shape", "window", "groups", "_geometry")

    def __init__(self, x_shape: Sequence[int], w_shape: Sequence[int], dtype: Any, device: str,
                 stride: IntOrTuple, padding: Padding, dilation: IntOrTuple, groups: int,
                 op: str = "conv", x_name: str = "x") -> None:
        super().__init__(op, dtype, device)
        self.groups = _groups(op, groups)
        self.window = _conv_window(op, x_shape, w_shape, stride, padding, dilation,
                                   self.groups, x_name)
        self.x_shape = tuple(x_shape)
        self.w_shape = tuple(w_shape)
        self.out_shape = (self.x_shape[0], self.w_shape[0]) + self.window.out_size
        _, stride_, pad_before, pad_after, dilation_ = self.window.cpp_args()
        self._geometry = (stride_, pad_before, pad_after, dilation_, self.groups)

    def forward(self, x: Any, w: Any, bias: Optional[Any] = None,
                out: Optional[Any] = None) -> Any:
        """y = conv(x, w) + bias, bias (K,) or None; written into `out` when given (a
        C-contiguous array of the plan's output shape, dtype and device, e.g. a block's
        region of a larger result) and returned."""
        x = self.operand("x", x, self.x_shape, "conv")
        w = self.operand("w", w, self.w_shape, "conv")
        if bias is not None:
            if bias.shape != self.w_shape[:1]:
                raise ValueError(f"conv: bias must have shape ({self.w_shape[0]},) for w shape "
                                 f"{self.w_shape}, got {bias.shape}")
            bias = self.operand("bias", bias, self.w_shape[:1], "conv")
        if out is None:
            y = self.empty(self.out_shape)
        else:
            y = self.operand("out", out, self.out_shape, "conv")
            if y is not out:
                # operand() converted it: the result would not land in the caller's array.
                raise ValueError(f"conv: out must be a C-contiguous {self.dtype} array on the "
                                 f"device of x, got {type(out).__name__} {out.dtype} with "
                                 f"strides {out.strides}")
        self.kernels.conv_forward(x, w, bias, y, *self._geometry)
        return y

    def backward_input(self, dy: Any, w: Any) -> Any:
        """dx (N, C, *spatial) from dy (N, K, *out)."""
        op = "conv_backward_input"
        w = self.operand("w", w, self.w_shape, op)
        dy = self.operand("dy", dy, self.out_shape, op)
        dx = self.empty(self.x_shape)
        self.kernels.conv_backward_input(dy, w, dx, *self._geometry)
        return dx

    def backward_weight(self, x: Any, dy: Any) -> Any:
        """dw (K, C // groups, *kernel) from x and dy."""
        op = "conv_backward_weight"
        x = self.operand("x", x, self.x_shape, op)
        dy = self.operand("dy", dy, self.out_shape, op)
        dw = self.empty(self.w_shape)
        self.kernels.conv_backward_weight(x, dy, dw, *self._geometry)
        return dw


_PLANS = PlanCache()


def conv_plan(x_shape: Sequence[int], w_shape: Sequence[int], dtype: Any, device: str = "cpu",
              *, stride: IntOrTuple = 1, padding: Padding = 0, dilation: IntOrTuple = 1,
              groups: int = 1, op: str = "conv", x_name: str = "x") -> ConvPlan:
    """The (cached) plan of a convolution of x (N, C, *spatial) with w (K, C // groups,
    *kernel) in `dtype` on `device` ("cpu" or "cuda"); geometry arguments as `conv`.
    `op` and `x_name` only name things in error messages."""
    key = (tuple(x_shape), tuple(w_shape), dtype_key(dtype), device, stride, padding,
           dilation, groups)
    return _PLANS.get(key, lambda: ConvPlan(x_shape, w_shape, dtype, device, stride, padding,
                                            dilation, groups, op, x_name))


def flipped(w: Any) -> Any:
    """A C-contiguous copy of w reversed along its spatial dims (textbook convolution)."""
    xp = array_module(w)
    return xp.ascontiguousarray(xp.flip(w, axis=tuple(range(2, w.ndim))))


def conv(x: Any, w: Any, bias: Optional[Any] = None, *, stride: IntOrTuple = 1,
         padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
         flip: bool = False) -> Any:
    """N-D convolution (cross-correlation, as in deep learning).

    x: (N, C, *spatial); w: (K, C // groups, *kernel); bias: (K,) or None.
    Returns (N, K, *out) with out from `output_size`. `flip=True` flips the kernel along
    every spatial dim, giving the textbook convolution. padding: int, tuple, tuple of
    (before, after) pairs, "valid" or "same" (output ceil(n / stride), extra pad at the end).
    NumPy arrays run on the CPU, CuPy arrays on the GPU (the result is of the same kind).
    """
    groups = _groups("conv", groups)
    x, w, bias = float_arrays("conv", optional=("bias",), x=x, w=w, bias=bias)
    plan = conv_plan(x.shape, w.shape, x.dtype, device_of(x), stride=stride, padding=padding,
                     dilation=dilation, groups=groups)
    return plan.forward(x, flipped(w) if flip else w, bias)


def conv_backward_input(dy: Any, w: Any, input_shape: Sequence[int], *,
                        stride: IntOrTuple = 1, padding: Padding = 0, dilation: IntOrTuple = 1,
                        groups: int = 1) -> Any:
    """Gradient of `conv` with respect to x.

    dy: (N, K, *out); w: (K, C // groups, *kernel); input_shape: (N, C, *spatial).
    Returns dx with shape input_shape.
    """
    op = "conv_backward_input"
    groups = _groups(op, groups)
    dy, w = float_arrays(op, dy=dy, w=w)
    shape = full_shape(op, "input_shape", input_shape, w.ndim)
    plan = conv_plan(shape, w.shape, w.dtype, device_of(w), stride=stride, padding=padding,
                     dilation=dilation, groups=groups, op=op, x_name="input_shape")
    return plan.backward_input(dy, w)


def conv_backward_weight(x: Any, dy: Any, kernel_size: IntOrTuple, *,
                         stride: IntOrTuple = 1, padding: Padding = 0,
                         dilation: IntOrTuple = 1, groups: int = 1) -> Any:
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
    plan = conv_plan(x.shape, w_shape, x.dtype, device_of(x), stride=stride, padding=padding,
                     dilation=dilation, groups=groups, op=op)
    return plan.backward_weight(x, dy)
