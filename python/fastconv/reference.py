"""Plain NumPy versions of every fastconv kernel: the oracle of the tests and the
baseline of the benchmarks.

Clarity first. Every windowed op is built on one helper, `windows`, a
`numpy.lib.stride_tricks.sliding_window_view` over the padded input; gradients are
written as the adjoints of the forward ops. Arguments are explicit: spatial tuples
and (before, after) pad tuples, as `fastconv._geometry.make_window` produces them.
Python loops run over kernel offsets or boxes kept, never over pixels.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Ints = Tuple[int, ...]


# ----------------------------------------------------------------------------------------
# Windows, convolution, im2col / col2im
# ----------------------------------------------------------------------------------------

def pad(x: np.ndarray, before: Ints, after: Ints, value: float = 0.0) -> np.ndarray:
    """Pad the spatial dims (all but the first two) of x with `value`."""
    widths = [(0, 0), (0, 0)] + list(zip(before, after))
    return np.pad(x, widths, mode="constant", constant_values=value)


def windows(x: np.ndarray, kernel: Ints, stride: Ints, before: Ints, after: Ints,
            dilation: Ints, pad_value: float = 0.0,
            out_size: Optional[Ints] = None) -> np.ndarray:
    """All windows of x (N, C, *spatial) as a view (N, C, *out, *kernel).

    Window o covers padded positions o*stride + k*dilation. `out_size` trims the number of
    windows (pooling's ceil_mode may need fewer than fit, or more: extra end padding is
    added for those).
    """
    dims = len(kernel)
    if out_size is not None:
        # ceil_mode windows may overhang the end padding: pad further so they exist.
        need = [(o - 1) * s + d * (k - 1) + 1 for o, s, d, k in zip(out_size, stride, dilation,
                                                                     kernel)]
        have = [n + b + a for n, b, a in zip(x.shape[2:], before, after)]
        after = tuple(a + max(0, nd - hv) for a, nd, hv in zip(after, need, have))
    xp = pad(x, before, after, pad_value)
    span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    view = sliding_window_view(xp, span, axis=tuple(range(2, 2 + dims)))
    index = (slice(None), slice(None))
    index += tuple(slice(None, None, s) for s in stride)
    index += tuple(slice(None, None, d) for d in dilation)
    view = view[index]
    if out_size is not None:
        view = view[(slice(None), slice(None)) + tuple(slice(0, o) for o in out_size)]
    return view


def conv(x: np.ndarray, w: np.ndarray, bias: Optional[np.ndarray], stride: Ints, before: Ints,
         after: Ints, dilation: Ints, groups: int = 1) -> np.ndarray:
    """Cross-correlation: x (N, C, *spatial), w (K, C/groups, *kernel) -> (N, K, *out)."""
    dims = w.ndim - 2
    win = windows(x, w.shape[2:], stride, before, after, dilation)
    n, c = x.shape[:2]
    k = w.shape[0]
    cg, kg = c // groups, k // groups
    outs = []
    for g in range(groups):
        wg = win[:, g * cg:(g + 1) * cg]  # (N, Cg, *out, *kernel)
        # Sum over channel and kernel axes against w_g (Kg, Cg, *kernel).
        axes_x = [1] + list(range(2 + dims, 2 + 2 * dims))
        axes_w = list(range(1, 2 + dims))
        y = np.tensordot(wg, w[g * kg:(g + 1) * kg], axes=(axes_x, axes_w))  # (N, *out, Kg)
        outs.append(np.moveaxis(y, -1, 1))
    y = np.concatenate(outs, axis=1)
    if bias is not None:
        y = y + bias.reshape((1, k) + (1,) * dims)
    return y.astype(x.dtype, copy=False)


def im2col(x: np.ndarray, kernel: Ints, stride: Ints, before: Ints, after: Ints,
           dilation: Ints) -> np.ndarray:
    """(N, C, *spatial) -> (N, C*prod(kernel), L), rows channel-major then kernel offset."""
    dims = len(kernel)
    win = windows(x, kernel, stride, before, after, dilation)  # (N, C, *out, *kernel)
    n, c = x.shape[:2]
    # Bring kernel axes next to the channel axis, then flatten (C, *kernel) and (*out).
    order = [0, 1] + list(range(2 + dims, 2 + 2 * dims)) + list(range(2, 2 + dims))
    return np.ascontiguousarray(win.transpose(order)).reshape(n, c * int(np.prod(kernel)), -1)


def col2im(cols: np.ndarray, size: Ints, kernel: Ints, stride: Ints, before: Ints, after: Ints,
           dilation: Ints) -> np.ndarray:
    """Adjoint of im2col: (N, C*prod(kernel), L) -> (N, C, *size), overlaps summed."""
    n = cols.shape[0]
    c = cols.shape[1] // int(np.prod(kernel))
    out_size = tuple(
        (s + b + a - d * (k - 1) - 1) // st + 1
        for s, b, a, d, k, st in zip(size, before, after, dilation, kernel, stride))
    blocks = cols.reshape((n, c) + tuple(kernel) + out_size)
    padded = np.zeros((n, c) + tuple(s + b + a for s, b, a in zip(size, before, after)),
                      dtype=cols.dtype)
    for tap in np.ndindex(*kernel):
        target = tuple(slice(t * d, t * d + (o - 1) * st + 1, st)
                       for t, d, o, st in zip(tap, dilation, out_size, stride))
        padded[(slice(None), slice(None)) + target] += blocks[(slice(None), slice(None)) + tap]
    inner = tuple(slice(b, b + s) for b, s in zip(before, size))
    return padded[(slice(None), slice(None)) + inner]


def conv_backward_input(dy: np.ndarray, w: np.ndarray, input_shape: Ints, stride: Ints,
                        before: Ints, after: Ints, dilation: Ints, groups: int = 1) -> np.ndarray:
    """d(conv)/dx: col2im of W^T dy, per group."""
    n, c = input_shape[:2]
    k = w.shape[0]
    kg = k // groups
    kernel = w.shape[2:]
    dyf = dy.reshape(n, k, -1)
    parts = []
    for g in range(groups):
        wg = w[g * kg:(g + 1) * kg].reshape(kg, -1)  # (Kg, Cg*prod(kernel))
        cols = np.einsum("kr,nkl->nrl", wg, dyf[:, g * kg:(g + 1) * kg])
        parts.append(col2im(cols, input_shape[2:], kernel, stride, before, after, dilation))
    return np.concatenate(parts, axis=1)


def conv_backward_weight(x: np.ndarray, dy: np.ndarray, kernel: Ints, stride: Ints,
                         before: Ints, after: Ints, dilation: Ints,
                         groups: int = 1) -> np.ndarray:
    """d(conv)/dw: dy times im2col(x)^T, summed over the batch, per group."""
    n, c = x.shape[:2]
    k = dy.shape[1]
    cg, kg = c // groups, k // groups
    cols = im2col(x, kernel, stride, before, after, dilation)  # (N, C*prod(kernel), L)
    rows = cg * int(np.prod(kernel))
    dyf = dy.reshape(n, k, -1)
    parts = []
    for g in range(groups):
        dw = np.einsum("nkl,nrl->kr", dyf[:, g * kg:(g + 1) * kg],
                       cols[:, g * rows:(g + 1) * rows])
        parts.append(dw.reshape((kg, cg) + tuple(kernel)))
    return np.concatenate(parts, axis=0)


# ----------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------

def _pool_out_size(size: Ints, kernel: Ints, stride: Ints, before: Ints, after: Ints,
                   ceil_mode: bool) -> Ints:
    """The shared output-size formula (ceil_mode drops a window starting in the end pad)."""
    out = []
    for n, k, s, b, a in zip(size, kernel, stride, before, after):
        span = n + b + a - k
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= n + b:
            o -= 1
        out.append(o)
    return tuple(out)


def _kernel_axes(dims: int) -> Ints:
    return tuple(range(2 + dims, 2 + 2 * dims))


def _pool_counts(size: Ints, kernel: Ints, stride: Ints, before: Ints, after: Ints,
                 out_size: Ints, count_include_pad: bool) -> np.ndarray:
    """Divisor of every window (1, 1, *out): the cells it covers inside the padded extent
    (count_include_pad) or inside the input."""
    dims = len(kernel)
    ones = np.ones((1, 1) + tuple(size))
    ones_dims = (1,) * dims
    if count_include_pad:
        # Padding cells count; the ceil_mode overhang past them (zeros) does not.
        cells = windows(pad(ones, before, after, 1.0), kernel, stride, (0,) * dims,
                        (0,) * dims, ones_dims, out_size=out_size)
    else:
        cells = windows(ones, kernel, stride, before, after, ones_dims, out_size=out_size)
    return cells.sum(axis=_kernel_axes(dims))


def max_pool(x: np.ndarray, kernel: Ints, stride: Ints, before: Ints, after: Ints,
             ceil_mode: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Window maxima of x (N, C, *spatial) and their flat offsets in each (n, c) plane.

    Padded cells never win; ties go to the first cell in row-major scan order; a NaN wins
    (the first NaN).
    """
    dims = len(kernel)
    size = x.shape[2:]
    out_size = _pool_out_size(size, kernel, stride, before, after, ceil_mode)
    ones_dims = (1,) * dims
    win = windows(x, kernel, stride, before, after, ones_dims, -np.inf, out_size)
    real = windows(np.ones((1, 1) + size, dtype=bool), kernel, stride, before, after,
                   ones_dims, False, out_size)
    flat = win.reshape(win.shape[:2 + dims] + (-1,))
    real = real.reshape(real.shape[:2 + dims] + (-1,))
    y = flat.max(axis=-1)  # NaN propagates
    nan = np.isnan(flat)
    winner = np.where(nan.any(axis=-1, keepdims=True), nan, (flat == y[..., None]) & real)
    local = np.unravel_index(np.argmax(winner, axis=-1), kernel)  # first winner per window
    coords = []
    for d in range(dims):
        shape = [1] * (2 + dims)
        shape[2 + d] = out_size[d]
        start = (np.arange(out_size[d]) * stride[d] - before[d]).reshape(shape)
        coords.append(local[d] + start)
    indices = np.ravel_multi_index(tuple(coords), size).astype(np.int64)
    return y, indices


def avg_pool(x: np.ndarray, kernel: Ints, stride: Ints, before: Ints, after: Ints,
             ceil_mode: bool, count_include_pad: bool) -> np.ndarray:
    """Window means of x (N, C, *spatial); the divisor follows `count_include_pad`."""
    dims = len(kernel)
    out_size = _pool_out_size(x.shape[2:], kernel, stride, before, after, ceil_mode)
    win = windows(x, kernel, stride, before, after, (1,) * dims, 0.0, out_size)
    counts = _pool_counts(x.shape[2:], kernel, stride, before, after, out_size,
                          count_include_pad)
    return (win.sum(axis=_kernel_axes(dims)) / counts).astype(x.dtype, copy=False)


def max_pool_backward(dy: np.ndarray, indices: np.ndarray, input_shape: Ints) -> np.ndarray:
    """dy added into zeros of input_shape at the flat per-plane offsets `indices`."""
    n, c = input_shape[:2]
    planes = n * c
    dx = np.zeros((planes, int(np.prod(input_shape[2:]))), dtype=dy.dtype)
    rows = np.arange(planes)[:, None]
    np.add.at(dx, (rows, indices.reshape(planes, -1)), dy.reshape(planes, -1))
    return dx.reshape(input_shape)


def avg_pool_backward(dy: np.ndarray, input_shape: Ints, kernel: Ints, stride: Ints,
                      before: Ints, after: Ints, ceil_mode: bool,
                      count_include_pad: bool) -> np.ndarray:
    """Adjoint of avg_pool: dy / count spread over every window, padding cropped away."""
    size = tuple(input_shape[2:])
    out_size = _pool_out_size(size, kernel, stride, before, after, ceil_mode)
    share = dy / _pool_counts(size, kernel, stride, before, after, out_size, count_include_pad)
    # Room for the ceil_mode overhang past the end padding.
    extent = tuple(max(n + b + a, (o - 1) * s + k)
                   for n, b, a, o, s, k in zip(size, before, after, out_size, stride, kernel))
    padded = np.zeros(tuple(input_shape[:2]) + extent, dtype=share.dtype)
    for tap in np.ndindex(*kernel):
        target = tuple(slice(t, t + (o - 1) * s + 1, s)
                       for t, o, s in zip(tap, out_size, stride))
        padded[(slice(None), slice(None)) + target] += share
    inner = tuple(slice(b, b + n) for b, n in zip(before, size))
    return padded[(slice(None), slice(None)) + inner].astype(dy.dtype, copy=False)


# ----------------------------------------------------------------------------------------
# Boxes
# ----------------------------------------------------------------------------------------

def _box_cols(boxes: np.ndarray):
    """Columns x1, y1, x2, y2 and areas of boxes (N, 4)."""
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    with np.errstate(over="ignore"):  # float32 areas of huge boxes are inf, as in C++
        area = (x2 - x1) * (y2 - y1)
    return x1, y1, x2, y2, area


def _pair_iou(a, b) -> np.ndarray:
    """IoU of column tuples a and b (broadcasting), in the contract's order of operations.

    Each step is one IEEE operation in the box dtype, as in the C++ kernel, so results match
    bit for bit. Overflow (float32 areas of huge boxes) gives inf/NaN unions, which count
    as IoU 0, hence the silenced warnings.
    """
    ax1, ay1, ax2, ay2, area_a = a
    bx1, by1, bx2, by2, area_b = b
    with np.errstate(all="ignore"):
        w = np.maximum(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0)
        h = np.maximum(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0)
        inter = w * h
        union = area_a + area_b - inter
        out = np.zeros(np.broadcast(inter, union).shape, dtype=inter.dtype)
        np.divide(inter, union, out=out, where=union > 0)
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a (N, 4) and b (M, 4), xyxy: (N, M); two empty boxes give 0."""
    ca = tuple(c[:, None] for c in _box_cols(a))
    return _pair_iou(ca, _box_cols(b))


def box_convert(boxes: np.ndarray, in_fmt: str, out_fmt: str) -> np.ndarray:
    """Convert (N, 4) boxes between "xyxy", "xywh" and "cxcywh", always through xyxy."""
    a, b, c, d = (boxes[:, k] for k in range(4))
    half = boxes.dtype.type(0.5)
    if in_fmt == "xyxy":
        x1, y1, x2, y2 = a, b, c, d
    elif in_fmt == "xywh":
        x1, y1, x2, y2 = a, b, a + c, b + d
    else:  # cxcywh
        x1, y1, x2, y2 = a - half * c, b - half * d, a + half * c, b + half * d
    if out_fmt == "xyxy":
        cols = (x1, y1, x2, y2)
    elif out_fmt == "xywh":
        cols = (x1, y1, x2 - x1, y2 - y1)
    else:  # cxcywh
        cols = ((x1 + x2) * half, (y1 + y2) * half, x2 - x1, y2 - y1)
    return np.stack(cols, axis=1).astype(boxes.dtype, copy=False)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
        score_threshold: Optional[float] = None,
        max_output: Optional[int] = None) -> np.ndarray:
    """Greedy NMS: int64 indices by decreasing score, equal scores lower index first.

    Thresholds are rounded to the box dtype first (as the kernel does). One Python
    iteration per kept box; the suppression test runs vectorized over the rest.
    """
    t = boxes.dtype.type
    thr = t(iou_threshold)
    index = np.arange(len(boxes), dtype=np.int64)
    if score_threshold is not None:
        index = index[~(scores <= t(score_threshold))]
    # Stable sort of an ascending index list: ties keep the lower index first.
    order = index[np.argsort(-scores[index], kind="stable")]
    cols = _box_cols(boxes)
    keep = []
    limit = len(order) if max_output is None else max_output
    while order.size and len(keep) < limit:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iou = _pair_iou(tuple(c[i] for c in cols), tuple(c[rest] for c in cols))
        order = rest[~(iou >= thr)]
    return np.array(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                iou_threshold: float, score_threshold: Optional[float] = None,
                max_output: Optional[int] = None) -> np.ndarray:
    """`nms` per label, merged by decreasing score (ties: lower index first), truncated."""
    labels = np.asarray(labels).astype(np.int64)
    kept = [np.zeros(0, dtype=np.int64)]
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        sub = nms(boxes[members], scores[members], iou_threshold, score_threshold, max_output)
        kept.append(members[sub])
    kept = np.concatenate(kept)
    kept = kept[np.lexsort((kept, -scores[kept]))]
    return kept if max_output is None else kept[:max_output]
