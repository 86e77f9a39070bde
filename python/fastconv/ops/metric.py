"""Metric-learning kernels on NumPy or CuPy arrays: Euclidean distance blocks and the batch
triplet loss with its gradient (the array level under fastconv.face).

`batch_triplet` never builds the (anchor, positive, negative) triplets: it walks the anchors
in blocks of B rows, computes that block's (B, N) distances from the Gram matrix, mines
inside the block and turns the block's loss terms into the embedding gradient at once, so
its memory is O(B N + N K) (K: the largest class size), below the contract's O(N^2), while
pytorch-metric-learning's miners index every triplet (O(N^3), PML#688/#645).

Mining "all" is exact without visiting the N K N triplets (K: positives per anchor): with
t_s = d(a, p_s) + margin for anchor a's positives, negative j is inside the margin of
above_j = #{s: t_s > d_aj} triplets (one search into the anchor's K sorted thresholds:
d_aj's gradient coefficient is -above_j) and positive s of below_s = #{j: d_aj < t_s}
(a cumulated histogram of those ranks); the loss sum is sum_s below_s t_s -
sum_j above_j d_aj. "semihard" sorts each anchor's negatives once and finds the closest
one beyond d(a, p) by binary search. Cost O(N^2 (D + log N)) at most.

Everything is array code shared by NumPy and CuPy (`array_module`); the products go
through `_backend.matmul` (fastconv's GEMM on the CPU).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np

from .._backend import array_module, matmul
from .._geometry import as_real

MINING = ("all", "hard", "semihard")

# Gram-form distances that cancel away more bits than this are recomputed from differences.
REFINE_BITS = 10
REFINE_ELEMENTS = 1 << 20

# Elements of one (B, N) block: 4 Mi keeps each block temporary at 16 MiB (float32) while
# the block's matrix products stay large enough to run at full speed.
BLOCK_ELEMENTS = 1 << 22


def check_margin(op: str, margin: Any) -> float:
    """The triplet margin (the course's alpha) as a float, or a clear error: a finite
    number >= 0 (a negative margin would reward triplets the wrong way round)."""
    value = as_real(op, "margin", margin)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{op}: margin must be a finite number >= 0 (the course's alpha), "
                         f"got {margin!r}")
    return value


def check_mining(op: str, mining: Any) -> str:
    """`mining` if it is one of MINING, else a ValueError listing them."""
    if not isinstance(mining, str) or mining not in MINING:
        raise ValueError(f"{op}: mining must be one of {', '.join(map(repr, MINING))}, got "
                         f"{mining!r}")
    return mining


def centered(x: Any) -> Any:
    """x minus its first row: distances do not change, every norm becomes at most the
    diameter of the point set (so the Gram form |a|^2 + |b|^2 - 2 a.b loses little to
    cancellation even when the points sit far from the origin, e.g. collapsed embeddings),
    and points on a grid (integers) stay exact, so exact ties stay ties."""
    return x - x[:1]


def squared_block(xc_rows: Any, sq_rows: Any, xc: Any, sq: Any) -> Any:
    """Squared distances (B, N) between the rows `xc_rows` (B, D) and `xc` (N, D), given
    their squared norms.

    From the Gram matrix, |a|^2 + |b|^2 - 2 a.b, except where that cancels away more than
    REFINE_BITS bits (d^2 <= 2^-REFINE_BITS (|a|^2 + |b|^2): duplicates, near-duplicates,
    each row with itself), which are recomputed as sum((a - b)^2): so equal rows are
    exactly 0 apart and the square root of a tiny distance is not rounding noise."""
    xp = array_module(xc)
    norms = sq_rows[:, None] + sq[None, :]
    d2 = norms - 2 * matmul(xc_rows, xc.T)
    xp.maximum(d2, 0, out=d2)
    rows, cols = xp.nonzero(d2 <= norms * xc.dtype.type(2.0 ** -REFINE_BITS))
    step = max(1, REFINE_ELEMENTS // max(xc.shape[1], 1))
    for start in range(0, len(rows), step):
        i, j = rows[start:start + step], cols[start:start + step]
        diff = xc_rows[i] - xc[j]
        d2[i, j] = (diff * diff).sum(axis=1)
    return d2


def pairwise_squared(x: Any) -> Any:
    """All squared Euclidean distances (N, N) of the rows of x (N, D), in x's dtype, with an
    exact zero diagonal."""
    xc = centered(x)
    sq = (xc * xc).sum(axis=1)
    return squared_block(xc, sq, xc, sq)


def cross_squared(q: Any, g: Any) -> Any:
    """Squared Euclidean distances (Q, M) from the rows of q (Q, D) to those of g (M, D)."""
    qc, gc = q - g[:1], g - g[:1]
    return squared_block(qc, (qc * qc).sum(axis=1), gc, (gc * gc).sum(axis=1))


def rows_searchsorted(sorted_rows: Any, queries: Any, side: str) -> Any:
    """numpy.searchsorted row by row: for sorted_rows (B, M) (each row ascending) and
    queries (B, Q), the int64 insertion points (B, Q), i.e. the number of entries of the row
    below the query ("left") or at most the query ("right").

    Short rows are counted in M compare passes; longer ones by a branchless binary search
    (M's bit length gather-and-compare passes over the rows padded with +inf to a power of
    two minus one), as NumPy's searchsorted takes one row at a time."""
    xp = array_module(queries)
    width = sorted_rows.shape[1]
    steps = int(width).bit_length()
    counts = xp.zeros(queries.shape, dtype=np.int64)
    if width <= 3 * steps:
        for j in range(width):
            column = sorted_rows[:, j:j + 1]
            counts += (column < queries) if side == "left" else (column <= queries)
        return counts
    pad = xp.full((len(sorted_rows), (1 << steps) - 1 - width), np.inf, sorted_rows.dtype)
    padded = xp.concatenate([sorted_rows, pad], axis=1)
    for step in (1 << k for k in reversed(range(steps))):
        value = xp.take_along_axis(padded, counts + (step - 1), axis=1)
        counts += step * ((value < queries) if side == "left" else (value <= queries))
    # An infinite query counts the padding too ("right"); no row has more than M entries.
    return xp.minimum(counts, width, out=counts)


def positive_table(labels: Any) -> Tuple[Any, Any, Any]:
    """For labels (N,), N >= 1: (index (N, K) int64, valid (N, K) bool, has_negative (N,) bool).

    Row a lists the other samples of a's class (K = the largest class size - 1; unused slots
    are invalid and point at a itself); has_negative says whether any sample has another
    label."""
    xp = array_module(labels)
    n = len(labels)
    order = xp.argsort(labels, kind="stable")
    ordered = labels[order]
    starts_here = xp.ones(n, dtype=bool)
    starts_here[1:] = ordered[1:] != ordered[:-1]
    group = xp.cumsum(starts_here) - 1
    starts = xp.nonzero(starts_here)[0]
    sizes = xp.diff(xp.concatenate([starts, xp.asarray([n], dtype=starts.dtype)]))
    width = int(sizes.max()) - 1
    position = xp.arange(n)
    first, size = starts[group], sizes[group]
    slot = xp.arange(width)[None, :]
    own = (position - first)[:, None]
    valid = slot < (size - 1)[:, None]
    # Skip the anchor's own place: slots at or after it shift one further.
    candidate = first[:, None] + slot + (slot >= own)
    candidate = xp.where(valid, candidate, position[:, None])
    index = xp.empty((n, width), dtype=np.int64)
    index[order] = order[candidate]
    valid_out = xp.empty((n, width), dtype=bool)
    valid_out[order] = valid
    has_negative = xp.empty(n, dtype=bool)
    has_negative[order] = size < n
    return index, valid_out, has_negative


def batch_triplet(x: Any, labels: Any, margin: float, mining: str, squared: bool,
                  need_grad: bool, block_elements: int = BLOCK_ELEMENTS,
                  ) -> Tuple[float, Optional[Any], int]:
    """Batch triplet loss of embeddings x (N, D) with integer labels (N,) of the same array
    kind: (loss, d loss / d x (N, D) in x's dtype or None, number of terms averaged).

    Terms and their mean, as fastconv.face.batch_triplet_loss documents: "all" averages
    max(d_ap - d_an + margin, 0) over the triplets where it is positive; "hard" averages
    it over the anchors that have a positive and a negative, with the farthest positive and
    the closest negative (the first one among ties); "semihard" averages it over the
    (anchor, positive) pairs where it is positive, with the closest negative farther than
    the positive, else the farthest negative. No term: loss 0 and a zero gradient.
    """
    xp = array_module(x)
    n = len(x)
    dtype = x.dtype
    grad = xp.zeros(x.shape, dtype=dtype) if need_grad else None
    if n == 0:
        return 0.0, grad, 0
    mine = {"all": _mine_all, "hard": _mine_hard, "semihard": _mine_semihard}[mining]
    xc = centered(x)
    sq = (xc * xc).sum(axis=1)
    pos_index, pos_valid, has_negative = positive_table(labels)
    if not bool((pos_valid & has_negative[:, None]).any()):
        return 0.0, grad, 0
    total = 0.0
    count = 0
    block = max(1, min(n, block_elements // max(n, 1)))
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        d = squared_block(xc[r0:r1], sq[r0:r1], xc, sq)
        if not squared:
            d = xp.sqrt(d, out=d)
        negative = labels[r0:r1, None] != labels[None, :]
        ok = pos_valid[r0:r1] & has_negative[r0:r1, None]
        block_total, block_count, coef = mine(d, negative, pos_index[r0:r1], ok, margin,
                                              need_grad)
        total += block_total
        count += block_count
        if coef is None:
            continue
        if not squared:
            # d sqrt(s) / ds = 1 / (2 sqrt(s)), taken as 0 at s = 0 (the safe gradient).
            safe = xp.where(d > 0, d, 1)
            coef = xp.where(d > 0, coef / (2 * safe), 0).astype(dtype, copy=False)
        # d |x_a - x_j|^2 = 2 (x_a - x_j) . (dx_a - dx_j), summed over the block's entries.
        grad[r0:r1] += 2 * (coef.sum(axis=1)[:, None] * xc[r0:r1] - matmul(coef, xc))
        grad += 2 * (coef.sum(axis=0)[:, None] * xc - matmul(coef.T, xc[r0:r1]))
    if count == 0:
        return 0.0, grad, 0
    if grad is not None:
        grad /= dtype.type(count)
    return total / count, grad, count


def _mine_all(d: Any, negative: Any, pos_index: Any, ok: Any, margin: float,
              need_grad: bool) -> Tuple[float, int, Optional[Any]]:
    xp = array_module(d)
    inf = xp.asarray(np.inf, dtype=d.dtype)
    slots = pos_index.shape[1]
    threshold = xp.where(ok, xp.take_along_axis(d, pos_index, axis=1) + d.dtype.type(margin),
                         -inf)
    sorted_threshold = xp.sort(threshold, axis=1)
    # rank[a, j]: how many of a's thresholds are <= d_aj (every one for non-negatives), so
    # negative j is inside the margin of the other slots - rank of a's positives.
    rank = rows_searchsorted(sorted_threshold, xp.where(negative, d, inf), "right")
    above = slots - rank
    # Positive slot s counts the negatives below t_s: those whose rank is at most the
    # number of thresholds strictly below t_s (cumulated histogram of the ranks).
    base = (xp.arange(len(d)) * (slots + 1))[:, None]
    histogram = xp.bincount((base + rank).ravel(), minlength=len(d) * (slots + 1))
    at_most = xp.cumsum(histogram.reshape(len(d), slots + 1), axis=1)
    below = xp.take_along_axis(at_most, rows_searchsorted(sorted_threshold, threshold, "left"),
                               axis=1)
    below = xp.where(ok, below, 0)
    # Sum over the active triplets of t_s - d_aj, gathered per slot and per negative.
    total = float((below * xp.where(ok, threshold, 0)).sum(dtype=np.float64)
                  - (above * d).sum(dtype=np.float64))
    count = int(below.sum())
    if not need_grad:
        return total, count, None
    coef = (-above).astype(d.dtype)
    rows = xp.arange(len(d))[:, None]
    # Invalid slots point at the anchor itself, whose coefficient is 0 anyway.
    coef[rows, pos_index] = below.astype(d.dtype)
    return total, count, coef


def _mine_hard(d: Any, negative: Any, pos_index: Any, ok: Any, margin: float,
               need_grad: bool) -> Tuple[float, int, Optional[Any]]:
    xp = array_module(d)
    inf = xp.asarray(np.inf, dtype=d.dtype)
    rows = xp.arange(len(d))
    # Slots list a class in index order, so argmax's first maximum is the lowest index.
    slot = xp.argmax(xp.where(ok, xp.take_along_axis(d, pos_index, axis=1), -inf), axis=1)
    hardest_pos = pos_index[rows, slot]
    hardest_neg = xp.argmin(xp.where(negative, d, inf), axis=1)
    valid = ok.any(axis=1)
    term = d[rows, hardest_pos] - d[rows, hardest_neg] + d.dtype.type(margin)
    active = valid & (term > 0)
    total = float(xp.where(active, term, 0).sum(dtype=np.float64))
    count = int(valid.sum())
    if not need_grad:
        return total, count, None
    coef = xp.zeros(d.shape, dtype=d.dtype)
    coef[rows, hardest_pos] = active
    coef[rows, hardest_neg] = -active.astype(d.dtype)
    return total, count, coef


def _mine_semihard(d: Any, negative: Any, pos_index: Any, ok: Any, margin: float,
                   need_grad: bool) -> Tuple[float, int, Optional[Any]]:
    xp = array_module(d)
    inf = xp.asarray(np.inf, dtype=d.dtype)
    neg_d = xp.where(negative, d, inf)
    order = xp.argsort(neg_d, axis=1)
    sorted_neg = xp.take_along_axis(neg_d, order, axis=1)
    n_neg = negative.sum(axis=1)[:, None]
    d_ap = xp.take_along_axis(d, pos_index, axis=1)
    farther = rows_searchsorted(sorted_neg, d_ap, "right")
    pick = xp.maximum(xp.where(farther < n_neg, farther, n_neg - 1), 0)
    d_an = xp.take_along_axis(sorted_neg, pick, axis=1)
    term = d_ap - d_an + d.dtype.type(margin)
    active = ok & (term > 0)
    total = float(xp.where(active, term, 0).sum(dtype=np.float64))
    count = int(active.sum())
    if not need_grad:
        return total, count, None
    width = d.shape[1]
    base = (xp.arange(len(d)) * width)[:, None]
    negative_col = xp.take_along_axis(order, pick, axis=1)
    weights = active.astype(np.float64)
    # Several pairs may share a negative: bincount adds their coefficients.
    flat = xp.concatenate([(base + pos_index)[active], (base + negative_col)[active]])
    values = xp.concatenate([weights[active], -weights[active]])
    coef = xp.bincount(flat, weights=values, minlength=d.size).reshape(d.shape)
    return total, count, coef.astype(d.dtype)
