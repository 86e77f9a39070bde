"""Sliding-window ops (conv, its input gradient, max_pool, avg_pool) on Dask arrays,
block by block.

One mechanism serves every op: the geometry is normalized once on the whole array
(`make_window`), the outputs of each spatial dim are cut where the input's chunks are cut
(output j belongs to the input chunk holding cell j * stride, so with stride-aligned input
chunks the output chunks are the input chunks divided by the stride, and "same" padding
at stride 1 keeps the chunks as they are), and each output block runs the in-memory op on
exactly the input cells its windows read: its own cells plus a halo of pad_before cells
before and dilation*(f-1) - pad_before - (stride-1) after, gathered from as many
neighbouring blocks as that takes, so chunks smaller than the halo need no rechunk. The
block's padding is the op's padding where the block touches the true edge of the array
and zero inside, so every output value is computed by the same kernel from the same cells
in the same order as the in-memory op computes it: the results are equal bitwise.
"""

from __future__ import annotations

import itertools
import operator
import uuid
from dataclasses import dataclass
from typing import (Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence,
                    Tuple)

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from .._backend import empty_like
from .._geometry import Window


class AxisBlock(NamedTuple):
    """One output block along one spatial dim: its outputs [out_start, out_stop), the cells
    of the operand it reads [read_start, read_stop), the padding of its in-memory call
    and, for the transposed op (conv_backward_input), the cells [span_start, span_stop)
    that call covers."""

    out_start: int
    out_stop: int
    read_start: int
    read_stop: int
    pad_before: int
    pad_after: int
    span_start: int = 0
    span_stop: int = 0


@dataclass(frozen=True)
class AxisPlan:
    """How one spatial dim is cut into output blocks."""

    blocks: Tuple[AxisBlock, ...]

    @property
    def chunks(self) -> Tuple[int, ...]:
        return tuple(b.out_stop - b.out_start for b in self.blocks)


def axis_plan(n: int, input_chunks: Sequence[int], kernel: int, stride: int, pad_before: int,
              pad_after: int, dilation: int, out_len: int, ceil_mode: bool) -> AxisPlan:
    """Output blocks of one spatial dim and the input range and padding each one needs.

    Output j reads padded cells [j*stride, j*stride + dilation*(kernel-1)], i.e. input
    cells from j*stride - pad_before; it belongs to the input chunk holding cell j*stride.
    Chunks that would own no output are merged into their neighbour. Every block but the
    last spans a whole number of strides, so ceil_mode changes nothing there and the
    blocks may all run with the array's ceil_mode.
    """
    reach = dilation * (kernel - 1)
    bounds = np.cumsum((0,) + tuple(input_chunks))
    cuts = sorted({0, out_len} | {min(-(-int(b) // stride), out_len) for b in bounds[1:-1]})
    # A ceil_mode block must still hold one whole window (the in-memory op's rule), not
    # only the overhanging last one: merge it into its neighbour until it does.
    while (ceil_mode and len(cuts) > 2
           and n - cuts[-2] * stride + pad_before + pad_after <= reach):
        del cuts[-2]
    blocks = []
    for o0, o1 in zip(cuts[:-1], cuts[1:]):
        start = o0 * stride - pad_before
        stop = (o1 - 1) * stride - pad_before + reach + 1
        last = o1 == out_len
        lo = max(0, start)
        if last and ceil_mode:
            # The ceil_mode overhang is decided on the block as on the whole array: from the
            # true end of the input and the true end padding.
            blocks.append(AxisBlock(o0, o1, lo, n, lo - start, pad_after))
        else:
            hi = min(n, stop)
            blocks.append(AxisBlock(o0, o1, lo, hi, lo - start, stop - hi))
    return AxisPlan(tuple(blocks))


def transposed_axis_plan(n: int, output_chunks: Sequence[int], kernel: int, stride: int,
                         pad_before: int, pad_after: int, dilation: int) -> AxisPlan:
    """Blocks of the input gradient along one spatial dim of length n, from the chunks of
    the output gradient (boundaries times the stride).

    Input cell i receives from every output whose window covers it; a block [lo, hi)
    reads those outputs [j0, j1), runs the in-memory conv_backward_input on the cells
    their windows span (padded where that passes the array's edges) and keeps [lo, hi)
    of it; cells no window covers (stride > dilation*(f-1) + 1) are zero.
    """
    reach = dilation * (kernel - 1)
    m = int(sum(output_chunks))
    bounds = np.cumsum((0,) + tuple(output_chunks))
    cuts = sorted({0, n} | {min(int(b) * stride, n) for b in bounds[1:-1]})
    blocks = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        j0 = min(max(0, -(-(lo + pad_before - reach) // stride)), m - 1)
        j1 = max(min(m, (hi - 1 + pad_before) // stride + 1), j0 + 1)
        start = j0 * stride - pad_before
        stop = (j1 - 1) * stride - pad_before + reach + 1
        first, last = max(0, start), min(n, stop)
        blocks.append(AxisBlock(lo, hi, j0, j1, first - start, stop - last, first, last))
    return AxisPlan(tuple(blocks))


def spatial_plans(window: Window, input_chunks: Sequence[Sequence[int]],
                  ceil_mode: bool = False) -> List[AxisPlan]:
    """One AxisPlan per spatial dim of `window` (the whole array's normalized geometry)."""
    return [axis_plan(n, chunks, k, s, pb, pa, d, m, ceil_mode)
            for n, chunks, k, s, pb, pa, d, m in zip(
                window.in_size, input_chunks, window.kernel, window.stride, window.pad_before,
                window.pad_after, window.dilation, window.out_size)]


def _pieces(chunks: Sequence[int], lo: int, hi: int) -> List[Tuple[int, slice]]:
    """(block index, slice inside that block) covering cells [lo, hi) of one axis."""
    bounds = np.cumsum((0,) + tuple(chunks))
    first = int(np.searchsorted(bounds, lo, side="right")) - 1
    out = []
    for index in range(first, len(chunks)):
        start, end = int(bounds[index]), int(bounds[index + 1])
        if start >= hi:
            break
        if end > lo:
            out.append((index, slice(max(lo, start) - start, min(hi, end) - start)))
    return out


def _leaves(node: Any, path: Tuple[int, ...] = ()) -> Iterator[Tuple[Tuple[int, ...], Any]]:
    if isinstance(node, list):
        for i, child in enumerate(node):
            yield from _leaves(child, path + (i,))
    else:
        yield path, node


def _gather(pieces: Any) -> Any:
    """The nested list of input pieces (one nesting level per dim) as one array, NumPy or
    CuPy alike; a single piece as it is, NumPy pieces that tile one C-contiguous region of
    one array as a view of it (`_tiled_view`). Otherwise the array comes from the
    backend's allocator (fastconv's cache of released host blocks, CuPy's pool), so that
    gathering block after block does not page-fault fresh memory each time."""
    items = list(_leaves(pieces))
    if len(items) == 1:
        return items[0][1]
    first = items[0][1]
    sizes: List[Dict[int, int]] = [{} for _ in range(first.ndim)]
    for path, piece in items:
        for d, i in enumerate(path):
            sizes[d][i] = piece.shape[d]
    offsets = [np.cumsum([0] + [axis[i] for i in range(len(axis))]) for axis in sizes]
    shape = tuple(int(o[-1]) for o in offsets)
    view = _tiled_view(items, offsets, shape)
    if view is not None:
        return view
    out = empty_like(first, shape, first.dtype)
    for path, piece in items:
        out[tuple(slice(o[i], o[i + 1]) for o, i in zip(offsets, path))] = piece
    return out


def _tiled_view(items: List[Tuple[Tuple[int, ...], Any]], offsets: List[Any],
                shape: Tuple[int, ...]) -> Optional[np.ndarray]:
    """The gathered block as one C-contiguous view, without a copy, when the NumPy pieces
    are views that tile a region of one array (the blocks of an in-memory array read as
    views, e.g. chunked along its first spatial dim only): each piece starts at the
    address its offsets give and shares the strides of its dims longer than 1; else None.
    Every cell of the view lies in some piece, so the view reads only memory the pieces
    hold alive during the call."""
    if not all(type(piece) is np.ndarray for _, piece in items):
        return None
    first = items[0][1]
    strides = []
    for d in range(first.ndim):
        long = [p.strides[d] for _, p in items if p.shape[d] > 1]
        if long:
            strides.append(long[0])
            continue
        # Every piece is one cell thick here: the step between the first two pieces.
        nxt = [p for path, p in items
               if path[d] == 1 and all(i == 0 for e, i in enumerate(path) if e != d)]
        strides.append(_address(nxt[0]) - _address(first) if nxt else 0)
    origin = _address(first)
    for path, piece in items:
        if piece.dtype != first.dtype:
            return None
        start = origin + sum(int(o[i]) * s for o, i, s in zip(offsets, path, strides))
        if _address(piece) != start or any(
                n > 1 and piece.strides[d] != strides[d] for d, n in enumerate(piece.shape)):
            return None
    view = np.lib.stride_tricks.as_strided(first, shape, tuple(strides), writeable=False)
    # A strided view would be copied by the kernel's call into fresh memory: gathering
    # into a cached block is cheaper then.
    return view if view.flags.c_contiguous else None


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _run(block_op: Callable[..., Any], pieces: Any, *args: Any) -> Any:
    return block_op(_gather(pieces), *args)


def _run_into(block_op: Callable[..., Any], pieces: Any, region: Any, *args: Any) -> Any:
    """The block computed into `region` (its part of the caller's result): straight by the
    kernel where the region is C-contiguous, else computed and copied in."""
    if region.flags.c_contiguous:
        return block_op(_gather(pieces), *args, out=region)
    region[...] = block_op(_gather(pieces), *args)
    return region


def paddings(blocks: Sequence[AxisBlock]) -> tuple:
    """((pad_before, pad_after), ...) of a block's in-memory call."""
    return tuple((b.pad_before, b.pad_after) for b in blocks)


def windowed(x: da.Array, name: str, plans: Sequence[AxisPlan], block_op: Callable[..., Any],
             out_channels: Optional[int], meta: Any, extra: Sequence[Any] = (),
             aligned: Optional[da.Array] = None, partials: bool = False,
             out: Optional[Any] = None) -> da.Array:
    """The Dask array of `block_op(block, axis_blocks, *extra)` over output blocks.

    x: (N, C, *spatial) Dask array; plans: one AxisPlan per spatial dim. With
    `out_channels` given (a convolution) each block gathers every channel and the output
    has one channel chunk of that size; with None (pooling) the channel chunks of x carry
    over. `extra` are Dask collections (weights, bias) passed whole to every block.
    `block_op` gets the gathered block and its AxisBlock in every spatial dim, then the
    block of `aligned` (a Dask array chunked as the output, one channel chunk) at the
    output block's index if given, then the extras. With `partials`, each block yields
    (1, out_channels, 1, ...) (one partial result per block, e.g. of a reduction).
    With `out` (an in-memory array of the whole output's shape and dtype), each block is
    computed into its region of `out` (`block_op(..., out=region)` where the region is
    C-contiguous) and the blocks of the Dask array returned are those regions.
    """
    # A result written into `out` is a new computation each call (and tokenizing `out`
    # would hash its whole content).
    written = None if out is None else uuid.uuid4().hex
    token = tokenize(x, name, plans, block_op, out_channels, aligned, partials, written,
                     *extra)
    out_name = f"{name}-{token}"
    piece_name = f"{name}-halo-{token}"
    batch_chunks, channel_chunks = x.chunks[0], x.chunks[1]
    if out_channels is None:
        channel_groups = [[(c, slice(None))] for c in range(len(channel_chunks))]
        out_channel_chunks = channel_chunks
    else:
        channel_groups = [[(c, slice(None)) for c in range(len(channel_chunks))]]
        out_channel_chunks = (out_channels,)
    extra_keys = []
    for e in extra:
        # Small arrays, one block each (the caller rechunks them).
        extra_keys.append((e.name,) + (0,) * e.ndim)
    dsk: Dict[Any, Any] = {}
    batch_bounds = np.cumsum((0,) + batch_chunks)
    for n_block in range(len(batch_chunks)):
        for c_out, channel_pieces in enumerate(channel_groups):
            for spatial in itertools.product(*(range(len(p.blocks)) for p in plans)):
                blocks = [p.blocks[i] for p, i in zip(plans, spatial)]
                per_axis = [[(n_block, slice(None))], channel_pieces]
                per_axis += [_pieces(chunks, b.read_start, b.read_stop)
                             for chunks, b in zip(x.chunks[2:], blocks)]
                out_key = (out_name, n_block, c_out) + spatial

                def nest(level: int, prefix: Tuple[Tuple[int, slice], ...]) -> Any:
                    if level == len(per_axis):
                        index = tuple(i for i, _ in prefix)
                        slices = tuple(s for _, s in prefix)
                        key = (piece_name,) + out_key[1:] + index
                        if all(s == slice(None) for s in slices):
                            return (x.name,) + index
                        dsk[key] = (operator.getitem, (x.name,) + index, slices)
                        return key
                    return [nest(level + 1, prefix + (p,)) for p in per_axis[level]]

                pair = [] if aligned is None else [(aligned.name, n_block, 0) + spatial]
                if out is None:
                    dsk[out_key] = (_run, block_op, nest(0, ()), tuple(blocks), *pair,
                                    *extra_keys)
                else:
                    region = out[(slice(int(batch_bounds[n_block]),
                                        int(batch_bounds[n_block + 1])), slice(None))
                                 + tuple(slice(b.out_start, b.out_stop) for b in blocks)]
                    dsk[out_key] = (_run_into, block_op, nest(0, ()), region, tuple(blocks),
                                    *pair, *extra_keys)
    chunks = (batch_chunks, out_channel_chunks) + tuple(p.chunks for p in plans)
    if partials:
        chunks = tuple((1,) * len(c) if d != 1 else c for d, c in enumerate(chunks))
    inputs = [x, *extra] + ([] if aligned is None else [aligned])
    graph = HighLevelGraph.from_collections(out_name, dsk, dependencies=inputs)
    return da.Array(graph, out_name, chunks, meta=meta)
