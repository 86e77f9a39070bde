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


def soft_nms(boxes: np.ndarray, scores: np.ndarray, sigma: float = 0.5,
             method: str = "gaussian", iou_threshold: float = 0.3,
             score_threshold: Optional[float] = 0.001,
             max_output: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Soft-NMS (Bodla et al. 2017, Algorithm 1), one Python iteration per kept box.

    Repeatedly keep the box of highest current score (equal scores: lower index first) and
    rescale the score of every remaining box b by a weight of its IoU with the kept one M:
    "linear": 1 - iou when iou >= iou_threshold, else 1; "gaussian": exp(-iou^2 / sigma).
    A box whose score is (or falls) below score_threshold is dropped (None keeps all).
    Thresholds are rounded to the dtype; weights are computed in float64 from the
    box-dtype IoU and each rescored score is rounded back to the scores' dtype, as the
    kernels do. Returns (int64 indices in the order kept, i.e. by decreasing rescored
    score; their rescored scores).
    """
    dtype = scores.dtype
    t = dtype.type
    s = scores.copy()
    alive = np.ones(len(s), dtype=bool)
    if score_threshold is not None:
        alive &= s >= dtype.type(score_threshold)
    cols = _box_cols(boxes)
    keep, kept_scores = [], []
    limit = len(s) if max_output is None else max_output
    while alive.any() and len(keep) < limit:
        candidates = np.flatnonzero(alive)
        m = candidates[np.argmax(s[candidates])]  # the first maximum: lowest index
        keep.append(m)
        kept_scores.append(s[m])
        alive[m] = False
        rest = np.flatnonzero(alive)
        iou = _pair_iou(tuple(c[m] for c in cols), tuple(c[rest] for c in cols))
        wide = iou.astype(np.float64)
        if method == "linear":
            weight = np.where(iou >= t(iou_threshold), 1.0 - wide, 1.0)
        else:
            weight = np.exp(-(wide * wide) / sigma)
        s[rest] = (s[rest].astype(np.float64) * weight).astype(dtype)
        if score_threshold is not None:
            alive[rest] = s[rest] >= dtype.type(score_threshold)
    return np.array(keep, dtype=np.int64), np.array(kept_scores, dtype=dtype)


# ----------------------------------------------------------------------------------------
# RoI align and RoI pool
# ----------------------------------------------------------------------------------------
#
# Both ops cut each roi into a grid of bins that is the product of independent 1-D
# partitions, so each is written per axis: RoI align as one (bins, size) matrix of summed
# bilinear sample weights per axis (the roi's output is the input contracted with them),
# RoI pool as the [start, end) cells of every bin per axis. A roi row is (batch index, x1,
# y1, x2, y2), or (batch index, x1, y1, z1, x2, y2, z2); spatial dim d of x (0 = the first)
# takes its low coordinate from column 1 + (dims - 1 - d).

def _roi_columns(dims: int, d: int) -> Tuple[int, int]:
    lo = 1 + (dims - 1 - d)
    return lo, lo + dims


def _align_axis(lo: float, hi: float, spatial_scale: float, sampling_ratio: int,
                aligned: bool, bins: int, size: int, dtype: np.dtype) -> Tuple[np.ndarray, int]:
    """The (bins, size) weights of one axis and its samples per bin, torchvision's rules:
    roi start lo * scale (- 0.5 if aligned), length at least 1 unless aligned, `grid`
    samples per bin at start + p * bin + (i + 0.5) * bin / grid; a sample outside
    [-1, size] reads nothing, else it is clamped to [0, size - 1] and splits its weight
    between floor(y) (1 - frac) and floor(y) + 1 (frac) -- the last cell alone, weight 1,
    when floor(y) >= size - 1. All arithmetic in the roi dtype."""
    t = dtype.type
    offset = t(0.5) if aligned else t(0)
    start = t(lo) * t(spatial_scale) - offset
    length = (t(hi) * t(spatial_scale) - offset) - start
    if not aligned:
        length = max(length, t(1))
    bin_size = length / t(bins)
    grid = sampling_ratio if sampling_ratio > 0 else int(np.ceil(bin_size))
    weights = np.zeros((bins, size), dtype=dtype)
    if grid == 0:
        return weights, grid
    p = np.arange(bins, dtype=dtype)[:, None]
    i = np.arange(grid, dtype=dtype)[None, :]
    y = (start + p * bin_size) + ((i + t(0.5)) * bin_size) / t(grid)
    valid = (y >= -1) & (y <= size)
    y = np.where(y <= 0, t(0), y)
    low = np.floor(np.where(valid, y, 0)).astype(np.int64)
    top = low >= size - 1
    low = np.where(top, size - 1, low)
    high = np.where(top, size - 1, low + 1)
    frac = np.where(top, t(0), y - low.astype(dtype))
    rows = np.broadcast_to(np.arange(bins)[:, None], y.shape)
    np.add.at(weights, (rows[valid], low[valid]), (t(1) - frac)[valid])
    np.add.at(weights, (rows[valid], high[valid]), frac[valid])
    return weights, grid


def _align_matrices(row: np.ndarray, dims: int, output_size: Ints, spatial_size: Ints,
                    spatial_scale: float, sampling_ratio: int, aligned: bool,
                    dtype: np.dtype) -> Tuple[list, np.ndarray]:
    """Per spatial dim the weight matrix of one roi row, and its sample count (>= 1)."""
    mats, count = [], 1
    for d in range(dims):
        lo, hi = _roi_columns(dims, d)
        m, grid = _align_axis(row[lo], row[hi], spatial_scale, sampling_ratio, aligned,
                              output_size[d], spatial_size[d], dtype)
        mats.append(m)
        count *= grid
    return mats, dtype.type(max(count, 1))


_AXES = "dhw"


def _support(mats: list) -> tuple:
    """Per axis the slice of cells with a nonzero weight (the roi's footprint), so that a
    roi's contraction touches its footprint only."""
    box = []
    for m in mats:
        cells = np.flatnonzero(m.any(axis=0))
        box.append(slice(cells[0], cells[-1] + 1) if cells.size else slice(0, 0))
    return tuple(box)


def roi_align(x: np.ndarray, rois: np.ndarray, output_size: Ints, spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> np.ndarray:
    """RoI align of x (N, C, *spatial) over rois (R, 1 + 2 dims): (R, C, *output_size).

    Each bin averages its grid of bilinear samples; with the per-axis weight matrices A_d of
    a roi this is x[n] contracted with every A_d, divided by the sample count."""
    dims = x.ndim - 2
    spec = _AXES[3 - dims:]
    outs = "pqr"[:dims]
    formula = ",".join(f"{o}{a}" for o, a in zip(outs, spec)) + f",c{spec}->c{outs}"
    y = np.zeros((len(rois), x.shape[1]) + tuple(output_size), dtype=x.dtype)
    for r, row in enumerate(rois):
        mats, count = _align_matrices(row, dims, output_size, x.shape[2:], spatial_scale,
                                      sampling_ratio, aligned, x.dtype)
        box = _support(mats)
        crop = x[int(row[0])][(slice(None),) + box]
        y[r] = np.einsum(formula, *(m[:, s] for m, s in zip(mats, box)), crop,
                         optimize=True) / count
    return y


def roi_align_backward(dy: np.ndarray, rois: np.ndarray, input_shape: Ints,
                       spatial_scale: float = 1.0, sampling_ratio: int = -1,
                       aligned: bool = False) -> np.ndarray:
    """The adjoint of `roi_align`: dy (R, C, *output_size) -> dx of input_shape."""
    dims = dy.ndim - 2
    spec = _AXES[3 - dims:]
    outs = "pqr"[:dims]
    formula = ",".join(f"{o}{a}" for o, a in zip(outs, spec)) + f",c{outs}->c{spec}"
    dx = np.zeros(tuple(input_shape), dtype=dy.dtype)
    for r, row in enumerate(rois):
        mats, count = _align_matrices(row, dims, dy.shape[2:], input_shape[2:], spatial_scale,
                                      sampling_ratio, aligned, dy.dtype)
        box = _support(mats)
        dx[(int(row[0]), slice(None)) + box] += np.einsum(
            formula, *(m[:, s] for m, s in zip(mats, box)), dy[r], optimize=True) / count
    return dx


def _round_half_away(v: np.generic) -> int:
    whole = np.trunc(v)
    return int(whole) + (int(np.sign(v)) if abs(v - whole) >= 0.5 else 0)


def _pool_edges(lo: float, hi: float, spatial_scale: float, bins: int, size: int,
                dtype: np.dtype) -> Tuple[np.ndarray, np.ndarray]:
    """[start, end) cells of every bin of one axis, torchvision's rules: the scaled roi
    rounded half away from zero, length max(end - start + 1, 1) cells, bin p covering
    [floor(p * bin), ceil((p + 1) * bin)) + start, clipped to [0, size)."""
    t = dtype.type
    start = _round_half_away(t(lo) * t(spatial_scale))
    end = _round_half_away(t(hi) * t(spatial_scale))
    bin_size = t(max(end - start + 1, 1)) / t(bins)
    p = np.arange(bins + 1, dtype=dtype)
    lower = np.floor(p[:-1] * bin_size).astype(np.int64) + start
    upper = np.ceil(p[1:] * bin_size).astype(np.int64) + start
    return np.clip(lower, 0, size), np.clip(upper, 0, size)


def roi_pool(x: np.ndarray, rois: np.ndarray, output_size: Ints,
             spatial_scale: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """RoI max pooling of x (N, C, *spatial): (values, int64 flat cells in the (n, c) plane).

    An empty bin gives 0 and index -1; otherwise the first cell in scan order holding the
    maximum of the values strictly above -FLT_MAX (float32's lowest), or -FLT_MAX and -1
    when there is none (NaN never wins), as torchvision."""
    dims = x.ndim - 2
    floor = x.dtype.type(-np.finfo(np.float32).max)
    size = x.shape[2:]
    channels = x.shape[1]
    y = np.zeros((len(rois), channels) + tuple(output_size), dtype=x.dtype)
    at = np.full(y.shape, -1, dtype=np.int64)
    for r, row in enumerate(rois):
        edges = [_pool_edges(row[lo], row[hi], spatial_scale, output_size[d], size[d],
                             x.dtype) for d, (lo, hi) in
                 enumerate(_roi_columns(dims, d) for d in range(dims))]
        image = x[int(row[0])]
        for b in np.ndindex(*output_size):
            box = tuple(slice(edges[d][0][b[d]], edges[d][1][b[d]]) for d in range(dims))
            if any(s.stop <= s.start for s in box):
                continue
            values = image[(slice(None),) + box].reshape(channels, -1)
            coords = np.indices(tuple(s.stop - s.start for s in box)).reshape(dims, -1)
            cells = np.ravel_multi_index(tuple(c + s.start for c, s in zip(coords, box)), size)
            wins = values > floor
            masked = np.where(wins, values, -np.inf)
            j = np.argmax(masked, axis=1)
            found = wins.any(axis=1)
            y[(r, slice(None)) + b] = np.where(found, values[np.arange(channels), j], floor)
            at[(r, slice(None)) + b] = np.where(found, cells[j], -1)
    return y, at


def roi_pool_backward(dy: np.ndarray, indices: np.ndarray, rois: np.ndarray,
                      input_shape: Ints) -> np.ndarray:
    """dy (R, C, *output_size) added at indices (-1: nothing) in each roi's image planes."""
    dx = np.zeros(tuple(input_shape), dtype=dy.dtype)
    planes = dx.reshape(input_shape[0], input_shape[1], -1)
    channels = np.broadcast_to(np.arange(dy.shape[1])[:, None], (dy.shape[1],
                                                                  int(np.prod(dy.shape[2:]))))
    for r, row in enumerate(rois):
        at = indices[r].reshape(dy.shape[1], -1)
        hit = at >= 0
        np.add.at(planes[int(row[0])], (channels[hit], at[hit]), dy[r].reshape(dy.shape[1], -1)[hit])
    return dx
