"""conv, conv_backward_input, max_pool and avg_pool on Dask arrays of NumPy or CuPy
chunks (the mechanism is in windows.py)."""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import dask.array as da
import numpy as np
from dask.array.utils import meta_from_array

from .._backend import FLOAT_DTYPES, array_module, device_of, full_shape
from .._geometry import IntOrTuple, Padding, as_int, as_tuple
from ..ops.conv import conv_backward_input as conv_backward_input_in_memory
from ..ops.conv import conv_backward_weight as conv_backward_weight_in_memory
from ..ops.conv import conv_plan, flipped
from ..ops.pool import avg_pool as avg_pool_in_memory
from ..ops.pool import max_pool as max_pool_in_memory
from ..ops.pool import pool_plan
from .windows import paddings, spatial_plans, transposed_axis_plan, windowed


def dask_input(op: str, x: Any, name: str = "x") -> da.Array:
    """x as a Dask array of float32/float64 with at least one spatial dim, or a clear
    TypeError/ValueError naming it (as `name`)."""
    if not isinstance(x, da.Array):
        raise TypeError(f"{op}: {name} must be a dask.array.Array (wrap an in-memory array with "
                        f"dask.array.from_array), got {type(x).__name__}")
    if np.dtype(x.dtype) not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must be float32 or float64, got {x.dtype} "
                        f"(shape {x.shape})")
    if x.ndim < 3:
        raise ValueError(f"{op}: {name} must be (N, C, *spatial) with at least one spatial "
                         f"dim, got shape {x.shape}")
    if any(np.isnan(s) for s in x.shape):
        raise ValueError(f"{op}: {name} has unknown chunk sizes (shape {x.shape}); call "
                         "x.compute_chunk_sizes() first")
    return x


def _operand(op: str, name: str, a: Any, dtype: Any) -> Any:
    """An in-memory (NumPy or CuPy) operand of the Dask array's dtype, or TypeError
    naming it."""
    if isinstance(a, da.Array) or not isinstance(a, np.ndarray) and device_of(a) == "cpu":
        raise TypeError(f"{op}: {name} must be a NumPy or CuPy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{op}: {name} has dtype {a.dtype} but the Dask array has "
                        f"{np.dtype(dtype)}; pass one dtype")
    return a


def _small(a: Optional[Any]) -> Optional[da.Array]:
    """An in-memory operand as a one-block Dask array, so the graph holds it once."""
    return None if a is None else da.from_array(a, chunks=a.shape)


def _conv_block(block: Any, blocks: tuple, w: Any, bias: Optional[Any] = None, *,
                stride: tuple, dilation: tuple, groups: int, out: Optional[Any] = None) -> Any:
    # The weights follow the chunk to its device (NumPy weights with CuPy chunks).
    xp = array_module(block)
    w = xp.asarray(w)
    bias = None if bias is None else xp.asarray(bias)
    plan = conv_plan(block.shape, w.shape, block.dtype, device_of(block), stride=stride,
                     padding=paddings(blocks), dilation=dilation, groups=groups)
    return plan.forward(block, w, bias, out=out)


def conv(x: da.Array, w: Any, bias: Optional[Any] = None, *, stride: IntOrTuple = 1,
         padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1,
         flip: bool = False, out: Optional[Any] = None) -> da.Array:
    """`fastconv.conv` of a Dask array, block by block, equal to the in-memory op bitwise.

    x: Dask array (N, C, *spatial) of NumPy or CuPy chunks, chunked in any way along every
    dim; w: (K, C // groups, *kernel) and bias: (K,) or None, NumPy or CuPy arrays (moved
    to each chunk's device). Returns a Dask array (N, K, *out) whose batch chunks are x's,
    with one channel chunk (each block gathers every input channel, so channel chunks of
    x need no rechunk), and spatial chunks cut where x's are (divided by the stride).
    Arguments and semantics as `fastconv.conv`.

    out: None, or a NumPy/CuPy array (N, K, *out) of x's dtype to hold the result (e.g.
    preallocated once): each block's kernel then writes straight into its region of
    `out` (C-contiguous regions, e.g. when only the batch or the first spatial dim is
    chunked; other regions get a copy), with no block allocated and no copy by
    dask.array.store. The blocks of the array returned are those regions: run it with
    `.persist()` (or dask.compute of its blocks), not `.compute()`, which would
    concatenate them into a copy. For schedulers that share this process's memory
    (threads, synchronous), not a cluster of processes.
    """
    x = dask_input("conv", x)
    # The geometry and dtypes are checked here against the whole array; the kernels run
    # on the workers (which may hold the GPUs this process lacks).
    w = _operand("conv", "w", w, x.dtype)
    bias = None if bias is None else _operand("conv", "bias", bias, x.dtype)
    plan = conv_plan(x.shape, w.shape, x.dtype, "cpu", stride=stride, padding=padding,
                     dilation=dilation, groups=groups)
    if bias is not None and tuple(bias.shape) != plan.w_shape[:1]:
        raise ValueError(f"conv: bias must have shape ({plan.w_shape[0]},) for w shape "
                         f"{plan.w_shape}, got {tuple(bias.shape)}")
    if out is not None:
        out = _operand("conv", "out", out, x.dtype)
        if tuple(out.shape) != plan.out_shape:
            raise ValueError(f"conv: out must have the output's shape {plan.out_shape} (x "
                             f"shape {x.shape}, w shape {plan.w_shape}), got {out.shape}")
    window = plan.window
    block_op = functools.partial(_conv_block, stride=window.stride, dilation=window.dilation,
                                 groups=plan.groups)
    extra = [e for e in (_small(flipped(w) if flip else w), _small(bias)) if e is not None]
    return windowed(x, "fastconv-conv", spatial_plans(window, x.chunks[2:]), block_op,
                    plan.w_shape[0], meta_from_array(x._meta, x.ndim, x.dtype), extra,
                    out=out)


def _backward_input_block(dy: Any, blocks: tuple, w: Any, *, channels: int, stride: tuple,
                          dilation: tuple, groups: int) -> Any:
    xp = array_module(dy)
    w = xp.asarray(w)
    span = tuple(b.span_stop - b.span_start for b in blocks)
    local = conv_backward_input_in_memory(dy, w, dy.shape[:1] + (channels,) + span,
                                          stride=stride, padding=paddings(blocks),
                                          dilation=dilation, groups=groups)
    if all(b.span_start == b.out_start and b.span_stop == b.out_stop for b in blocks):
        return local
    # The block's cells that windows cover come from the call; the rest are zero.
    dx = xp.zeros(dy.shape[:1] + (channels,) + tuple(b.out_stop - b.out_start for b in blocks),
                  dy.dtype)
    keep = [(max(b.span_start, b.out_start), min(b.span_stop, b.out_stop), b) for b in blocks]
    if all(lo < hi for lo, hi, _ in keep):
        dst = tuple(slice(lo - b.out_start, hi - b.out_start) for lo, hi, b in keep)
        src = tuple(slice(lo - b.span_start, hi - b.span_start) for lo, hi, b in keep)
        dx[(Ellipsis,) + dst] = local[(Ellipsis,) + src]
    return dx


def conv_backward_input(dy: da.Array, w: Any, input_shape: Sequence[int], *,
                        stride: IntOrTuple = 1, padding: Padding = 0,
                        dilation: IntOrTuple = 1, groups: int = 1) -> da.Array:
    """`fastconv.conv_backward_input` of a Dask array dy (N, K, *out), block by block,
    equal to the in-memory op bitwise: dx (N, C, *spatial) of shape input_shape, with dy's
    batch chunks, one channel chunk, and spatial chunks at dy's boundaries times the
    stride. Each dx block runs the in-memory op on the dy cells whose windows reach it.
    w: (K, C // groups, *kernel), NumPy or CuPy."""
    op = "conv_backward_input"
    dy = dask_input(op, dy, "dy")
    w = _operand(op, "w", w, dy.dtype)
    shape = full_shape(op, "input_shape", input_shape, w.ndim)
    plan = conv_plan(shape, w.shape, dy.dtype, "cpu", stride=stride, padding=padding,
                     dilation=dilation, groups=groups, op=op, x_name="input_shape")
    if dy.shape != plan.out_shape:
        raise ValueError(f"{op}: dy has shape {dy.shape}, expected {plan.out_shape} for "
                         f"input_shape {shape} and w shape {w.shape}")
    win = plan.window
    plans = [transposed_axis_plan(n, chunks, k, s, pb, pa, d)
             for n, chunks, k, s, pb, pa, d in zip(win.in_size, dy.chunks[2:], win.kernel,
                                                   win.stride, win.pad_before, win.pad_after,
                                                   win.dilation)]
    block_op = functools.partial(_backward_input_block, channels=shape[1], stride=win.stride,
                                 dilation=win.dilation, groups=plan.groups)
    return windowed(dy, "fastconv-conv-backward-input", plans, block_op, shape[1],
                    meta_from_array(dy._meta, dy.ndim, dy.dtype), [_small(w)])


def _backward_weight_block(x: Any, blocks: tuple, dy: Any, *, kernel: tuple, stride: tuple,
                           dilation: tuple, groups: int) -> Any:
    dw = conv_backward_weight_in_memory(x, dy, kernel, stride=stride, padding=paddings(blocks),
                                        dilation=dilation, groups=groups)
    return dw.reshape((1, -1) + (1,) * len(kernel))


def conv_backward_weight(x: da.Array, dy: da.Array, kernel_size: IntOrTuple, *,
                         stride: IntOrTuple = 1, padding: Padding = 0,
                         dilation: IntOrTuple = 1, groups: int = 1) -> da.Array:
    """`fastconv.conv_backward_weight` of Dask arrays x (N, C, *spatial) and dy
    (N, K, *out): the in-memory op on each output block (with its input halo), summed over
    the blocks by Dask's tree reduction. Returns a one-chunk Dask array dw
    (K, C // groups, *kernel), equal to the in-memory op up to float rounding (the sum
    runs in another order). dy is rechunked to the blocks of `conv(x)` where it differs.
    """
    op = "conv_backward_weight"
    x = dask_input(op, x)
    dy = dask_input(op, dy, "dy")
    if dy.dtype != x.dtype:
        raise TypeError(f"{op}: dy has dtype {dy.dtype} but x has {x.dtype}; pass one dtype")
    if dy.ndim != x.ndim:
        raise ValueError(f"{op}: x shape {x.shape} and dy shape {dy.shape} must both be "
                         "(N, C, *spatial) with the same number of dims")
    kernel = as_tuple(kernel_size, x.ndim - 2, "kernel_size")
    groups = as_int(groups, f"{op}: groups")
    if groups < 1 or x.shape[1] % groups:
        raise ValueError(f"{op}: groups={groups} must be positive and divide the input "
                         f"channels (x shape {x.shape})")
    w_shape = (dy.shape[1], x.shape[1] // groups) + kernel
    plan = conv_plan(x.shape, w_shape, x.dtype, "cpu", stride=stride, padding=padding,
                     dilation=dilation, groups=groups, op=op)
    if dy.shape != plan.out_shape:
        raise ValueError(f"{op}: dy has shape {dy.shape}, expected {plan.out_shape} for x "
                         f"shape {x.shape} and kernel_size {kernel}")
    plans = spatial_plans(plan.window, x.chunks[2:])
    dy = dy.rechunk((x.chunks[0], -1) + tuple(p.chunks for p in plans))
    block_op = functools.partial(_backward_weight_block, kernel=kernel,
                                 stride=plan.window.stride, dilation=plan.window.dilation,
                                 groups=plan.groups)
    parts = windowed(x, "fastconv-conv-backward-weight", plans, block_op,
                     int(np.prod(w_shape)), meta_from_array(x._meta, x.ndim, x.dtype),
                     aligned=dy, partials=True)
    axes = (0,) + tuple(range(2, x.ndim))
    return parts.sum(axis=axes, dtype=x.dtype).reshape(w_shape).rechunk(-1)


def _pool_block(block: Any, blocks: tuple, *, kind: str, kernel: tuple, stride: tuple,
                ceil_mode: bool, count_include_pad: bool) -> Any:
    pads = paddings(blocks)
    if kind == "max":
        return max_pool_in_memory(block, kernel, stride=stride, padding=pads,
                                  ceil_mode=ceil_mode)
    return avg_pool_in_memory(block, kernel, stride=stride, padding=pads, ceil_mode=ceil_mode,
                              count_include_pad=count_include_pad)


def _pool(kind: str, x: da.Array, kernel_size: IntOrTuple, stride: Optional[IntOrTuple],
          padding: Padding, ceil_mode: bool, count_include_pad: bool) -> da.Array:
    op = f"{kind}_pool"
    x = dask_input(op, x)
    plan = pool_plan(kind, x.shape, x.dtype, "cpu", kernel_size=kernel_size, stride=stride,
                     padding=padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    window = plan.window
    block_op = functools.partial(_pool_block, kind=kind, kernel=window.kernel,
                                 stride=window.stride, ceil_mode=plan.ceil_mode,
                                 count_include_pad=plan.count_include_pad)
    return windowed(x, f"fastconv-{op}", spatial_plans(window, x.chunks[2:], plan.ceil_mode),
                    block_op, None, meta_from_array(x._meta, x.ndim, x.dtype))


def max_pool(x: da.Array, kernel_size: IntOrTuple, *, stride: Optional[IntOrTuple] = None,
             padding: Padding = 0, ceil_mode: bool = False) -> da.Array:
    """`fastconv.max_pool` of a Dask array (N, C, *spatial), block by block, equal to the
    in-memory op bitwise; batch and channel chunks carry over, spatial chunks are cut where
    x's are (divided by the stride). Arguments as `fastconv.max_pool` (no return_indices:
    the flat offsets are per whole plane, which no block sees)."""
    return _pool("max", x, kernel_size, stride, padding, ceil_mode, True)


def avg_pool(x: da.Array, kernel_size: IntOrTuple, *, stride: Optional[IntOrTuple] = None,
             padding: Padding = 0, ceil_mode: bool = False,
             count_include_pad: bool = True) -> da.Array:
    """`fastconv.avg_pool` of a Dask array (N, C, *spatial), block by block, equal to the
    in-memory op bitwise; chunks as for `max_pool`, arguments as `fastconv.avg_pool`."""
    return _pool("avg", x, kernel_size, stride, padding, ceil_mode, count_include_pad)
