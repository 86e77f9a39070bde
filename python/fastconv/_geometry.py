"""Argument normalization shared by every sliding-window op.

Ints, tuples, (before, after) pairs, "valid" and "same" become one frozen `Window` of
explicit per-dim integers. Every ValueError/TypeError about geometry is raised here,
naming the argument and the shapes; the C++ side (cpp/geometry.cpp) re-checks the same
rules with the same output-size formula, and tests/test_geometry.py checks they agree.
"""

from __future__ import annotations

import numbers
import operator
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np

IntTuple = Tuple[int, ...]
IntOrTuple = Union[int, Sequence[int]]
Padding = Union[int, str, Sequence[int], Sequence[Sequence[int]]]

# Mirrors kMaxExtent in cpp/include/fastconv/geometry.hpp.
MAX_EXTENT = 1 << 60


def as_int(value: object, name: str) -> int:
    """`value` as a Python int (NumPy integers included); bools and non-integers raise
    TypeError naming `name`."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got bool {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r}") from None


def as_real(op: str, name: str, value: object) -> float:
    """`value` as a Python float (NumPy scalars included); bools and non-numbers raise
    TypeError naming `op` and `name`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {value!r}")
    return float(value)


def check_extents(op: str, name: str, values: Tuple[int, ...]) -> None:
    """Every entry of `values` (sizes, kernel, strides ...) in [1, 2**60], or a ValueError
    naming `name` that says which bound was crossed."""
    if any(v < 1 for v in values):
        raise ValueError(f"{op}: {name} {values} must be positive in every dim")
    if any(v > MAX_EXTENT for v in values):
        raise ValueError(f"{op}: {name} {values} exceeds the largest supported extent, "
                         f"2**60, in some dim")


def as_tuple(value: IntOrTuple, dims: int, name: str) -> IntTuple:
    """An int repeated `dims` times, or a sequence of exactly `dims` ints."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be an int or a tuple of ints, got {value!r}")
    if isinstance(value, Sequence) or hasattr(value, "__len__"):
        items = tuple(as_int(v, name) for v in value)  # type: ignore[union-attr]
        if len(items) != dims:
            raise ValueError(
                f"{name} {items} has {len(items)} entries but the input has {dims} spatial dims"
            )
        return items
    return (as_int(value, name),) * dims


def output_length(n: int, kernel: int, stride: int, pad_before: int, pad_after: int,
                  dilation: int, ceil_mode: bool) -> int:
    """floor((n + p_before + p_after - d*(f-1) - 1) / s) + 1; ceil_mode rounds up and drops a
    last window that would start inside the end padding. < 1 when the kernel does not fit."""
    span = n + pad_before + pad_after - dilation * (kernel - 1) - 1
    if span < 0:
        return 0
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= n + pad_before:
        out -= 1
    return out


def _same_padding(n: int, kernel: int, stride: int, dilation: int) -> Tuple[int, int]:
    total = max((-(-n // stride) - 1) * stride + dilation * (kernel - 1) + 1 - n, 0)
    return total // 2, total - total // 2


def normalize_padding(padding: Padding, in_size: IntTuple, kernel: IntTuple,
                      stride: IntTuple, dilation: IntTuple) -> Tuple[IntTuple, IntTuple]:
    """Explicit (pad_before, pad_after) tuples from any accepted `padding` form."""
    dims = len(in_size)
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * dims, (0,) * dims
        if padding == "same":
            pairs = [_same_padding(*args) for args in zip(in_size, kernel, stride, dilation)]
            return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
        raise ValueError(f"padding must be an int, a tuple, 'valid' or 'same', got {padding!r}")
    if isinstance(padding, Sequence) and any(isinstance(p, Sequence) for p in padding):
        if len(padding) != dims or not all(isinstance(p, Sequence) and len(p) == 2
                                           for p in padding):
            raise ValueError(
                f"padding {tuple(padding)!r} must hold one (before, after) pair per spatial dim "
                f"({dims} dims, input spatial size {in_size})"
            )
        before = tuple(as_int(p[0], "padding") for p in padding)
        after = tuple(as_int(p[1], "padding") for p in padding)
        return before, after
    sym = as_tuple(padding, dims, "padding")  # type: ignore[arg-type]
    return sym, sym


@dataclass(frozen=True)
class Window:
    """Explicit geometry of one sliding-window op; every tuple has one entry per dim."""

    in_size: IntTuple
    kernel: IntTuple
    stride: IntTuple
    pad_before: IntTuple
    pad_after: IntTuple
    dilation: IntTuple
    out_size: IntTuple

    def cpp_args(self) -> tuple:
        """The geometry as the C++ bindings take it (after the arrays): kernel, stride,
        pad_before, pad_after, dilation."""
        return (self.kernel, self.stride, self.pad_before, self.pad_after, self.dilation)


def make_window(op: str, in_size: Sequence[int], kernel_size: IntOrTuple,
                stride: Optional[IntOrTuple], padding: Padding, dilation: IntOrTuple = 1,
                ceil_mode: bool = False, pool: bool = False,
                size_name: str = "input spatial size") -> Window:
    """Validate and normalize the geometry of `op` on an input of spatial size `in_size`
    (`size_name` is how messages call it: the argument it came from).

    `pool` selects the pooling padding limit (kernel_size // 2 per side) instead of the
    convolution one (dilation * (kernel_size - 1) per side) and lets stride=None mean
    kernel_size, as torch's pooling does (a convolution's stride has no such default).
    Callers keep the result in their op family's plan (see _backend.PlanCache), so this
    runs once per geometry, not once per call.
    """
    in_size = tuple(as_int(n, size_name) for n in in_size)
    dims = len(in_size)
    if dims < 1:
        raise ValueError(f"{op}: need at least one spatial dim, got {size_name} {in_size}")
    kernel = as_tuple(kernel_size, dims, "kernel_size")
    if stride is None and not pool:
        raise TypeError(f"{op}: stride must be an int or a tuple of ints, got None")
    strides = kernel if stride is None else as_tuple(stride, dims, "stride")
    dil = as_tuple(dilation, dims, "dilation")
    for name, values in ((size_name, in_size), ("kernel_size", kernel),
                         ("stride", strides), ("dilation", dil)):
        check_extents(op, name, values)
    before, after = normalize_padding(padding, in_size, kernel, strides, dil)
    if any(p < 0 for p in before + after):
        raise ValueError(
            f"{op}: padding {before} / {after} (before / after) must not be negative"
        )
    out = []
    for d in range(dims):
        reach = dil[d] * (kernel[d] - 1)
        if reach > MAX_EXTENT:
            raise ValueError(f"{op}: dilation {dil} * (kernel_size {kernel} - 1) exceeds "
                             f"{MAX_EXTENT}")
        limit = kernel[d] // 2 if pool else reach
        rule = "kernel_size//2" if pool else "dilation*(kernel_size-1)"
        if before[d] > limit or after[d] > limit:
            raise ValueError(
                f"{op}: padding {before} / {after} (before / after) exceeds the limit of "
                f"{limit} in dim {d} for kernel_size {kernel} (at most {rule} per side)"
            )
        if in_size[d] + before[d] + after[d] < reach + 1:
            raise ValueError(
                f"{op}: kernel_size {kernel} with dilation {dil} is larger than the padded "
                f"input (spatial size {in_size}, padding {before} / {after})"
            )
        out.append(output_length(in_size[d], kernel[d], strides[d], before[d], after[d],
                                 dil[d], ceil_mode))
    return Window(in_size, kernel, strides, before, after, dil, tuple(out))


def output_size(input_size: IntOrTuple, kernel_size: IntOrTuple, *, stride: IntOrTuple = 1,
                padding: Padding = 0, dilation: IntOrTuple = 1,
                ceil_mode: bool = False) -> IntTuple:
    """Output spatial size of a convolution or pooling window.

    `input_size` is the spatial size (a tuple, or an int for one dim); the result has one
    entry per dim: floor((n + pad_before + pad_after - dilation*(kernel-1) - 1) / stride) + 1,
    rounded up with `ceil_mode` (dropping a window that would start in the end padding).
    """
    sizes = (input_size,) if not isinstance(input_size, Sequence) else tuple(input_size)
    return make_window("output_size", sizes, kernel_size, stride, padding, dilation,
                       ceil_mode).out_size
