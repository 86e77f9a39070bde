"""Property tests on VALUES: for random valid geometry (1-3 spatial dims, batch, channels,
groups, kernel, stride, every padding form, dilation, ceil_mode, count_include_pad, float32
and float64, inputs in non-contiguous and unusual memory layouts) the convolution, pooling
and im2col families equal the float64 NumPy reference (fastconv.reference) and PyTorch CPU.

Sums are checked with `assert_within_rounding`: any summation order stays within
(terms + 2) * eps * sum|products| of the exact value, so the bound scales with the dtype
and the reduction length yet catches any indexing error; max pooling and im2col only copy,
so they must be exact. test_fuzz.py holds the "answers or rejects" sweeps; the cases and
checks shared with test_conv.py / test_pool.py come from _cases.py.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import Tensor, reference
from fastconv.nn import functional as fcF
from _cases import (ConvCase, assert_within_rounding, call_conv, check_backward,
                    conv_geometry, make_inputs, pool_geometry, pool_window, rand,
                    random_array, reduction_terms, reference_conv, torch_conv)


def examples(count: int) -> settings:
    """`count` examples per run, sized so the module runs in well under a minute on a
    shared 2-core machine; no deadline: a cold plan cache makes first calls slow."""
    return settings(max_examples=count, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


DTYPES = st.sampled_from([np.float32, np.float64])
SEEDS = st.integers(0, 2**32 - 1)
TORCH_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
TORCH_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
# Largest spatial extent drawn beyond the smallest valid one, per rank: keeps every example
# a few milliseconds.
EXTRA = {1: 12, 2: 6, 3: 3}

# ----------------------------------------------------------------------------- layouts

SAME_VALUES = ["contiguous", "fortran", "strided", "reversed", "channels_last", "read_only"]
LAYOUTS = st.sampled_from(SAME_VALUES + ["broadcast"])


def relayout(a: np.ndarray, kind: str) -> np.ndarray:
    """`a` in another memory layout with the same values, except "broadcast": every batch
    entry is the first one, through a zero stride. Callers take the values the op sees
    with np.array(result)."""
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "strided":  # every other element of a wider buffer
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1] + 1,), a.dtype)
        wide[..., 1::2] = a
        return wide[..., 1::2]
    if kind == "reversed":  # negative strides along every axis
        axes = tuple(range(a.ndim))
        return np.ascontiguousarray(np.flip(a, axes))[(slice(None, None, -1),) * a.ndim]
    if kind == "channels_last" and a.ndim >= 3:
        order = (0,) + tuple(range(2, a.ndim)) + (1,)
        return np.ascontiguousarray(a.transpose(order)).transpose(np.argsort(order))
    if kind == "read_only":
        a = a.copy()
        a.flags.writeable = False
        return a
    if kind == "broadcast":
        return np.broadcast_to(a[:1], a.shape)
    return a


def with_layout(a: np.ndarray, kind: str) -> tuple:
    """(the array in layout `kind`, a fresh C-contiguous writable copy of its values)."""
    view = relayout(a, kind)
    return view, np.array(view)


# ----------------------------------------------------------------------------- strategies


def padding_for(draw, limits: tuple) -> object:
    """One padding form with at most limits[d] per side, or "same" / "valid"."""
    form = draw(st.sampled_from(["int", "tuple", "pairs", "same", "valid"]))
    if form == "int":
        return draw(st.integers(0, min(limits)))
    if form == "tuple":
        return tuple(draw(st.integers(0, lim)) for lim in limits)
    if form == "pairs":
        return tuple((draw(st.integers(0, lim)), draw(st.integers(0, lim))) for lim in limits)
    return form


def smallest_sizes(padding: object, spans: tuple) -> tuple:
    """Per dim the smallest input size with at least one window of extent `spans[d]`
    ("same" always has one: its padding completes the last window)."""
    if padding == "same":
        return (1,) * len(spans)
    if padding == "valid":
        return spans
    if isinstance(padding, int):
        pads = [(padding, padding)] * len(spans)
    else:
        pads = [p if isinstance(p, tuple) else (p, p) for p in padding]
    return tuple(max(1, s - b - a) for s, (b, a) in zip(spans, pads))


@st.composite
def conv_cases(draw) -> ConvCase:
    """A valid convolution geometry (also an im2col geometry: out_channels, groups and bias
    are then unused)."""
    dims = draw(st.integers(1, 3))
    per_dim = st.lists(st.integers(1, 3), min_size=dims, max_size=dims).map(tuple)
    groups = draw(st.integers(1, 3))
    cg, kg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel, stride, dilation = draw(per_dim), draw(per_dim), draw(per_dim)
    reach = tuple(d * (k - 1) for k, d in zip(kernel, dilation))
    padding = padding_for(draw, reach)
    lows = smallest_sizes(padding, tuple(r + 1 for r in reach))
    spatial = tuple(draw(st.integers(lo, lo + EXTRA[dims])) for lo in lows)
    return ConvCase(draw(st.integers(1, 3)), cg * groups, kg * groups, spatial, kernel,
                    stride, padding, dilation, groups, draw(st.booleans()))


@st.composite
def pool_cases(draw) -> tuple:
    """(shape, kernel, stride, padding, ceil_mode) of a valid pooling window; stride None
    means the kernel."""
    dims = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 4 if dims < 3 else 3)) for _ in range(dims))
    stride = draw(st.one_of(st.none(), st.integers(1, 4),
                            st.lists(st.integers(1, 4), min_size=dims,
                                     max_size=dims).map(tuple)))
    padding = padding_for(draw, tuple(k // 2 for k in kernel))
    lows = smallest_sizes(padding, kernel)
    spatial = tuple(draw(st.integers(lo, lo + EXTRA[dims])) for lo in lows)
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) + spatial
    return shape, kernel, stride, padding, draw(st.booleans())


# ----------------------------------------------------------------------------- convolution


def spatial_flip(w: np.ndarray) -> np.ndarray:
    # A copy: ascontiguousarray keeps the negative strides of a flip of size-1 dims.
    return np.flip(w, axis=tuple(range(2, w.ndim))).copy()


@examples(80)
@given(case=conv_cases(), dtype=DTYPES, x_layout=LAYOUTS, w_layout=LAYOUTS,
       flip=st.booleans(), seed=SEEDS)
def test_conv_equals_reference_and_torch(case, dtype, x_layout, w_layout, flip, seed):
    """conv(x, w, b) and torch both within the rounding bound of the float64 reference;
    flip=True is the reference on the spatially flipped kernel."""
    x, w, b = make_inputs(case, dtype, seed)
    xv, x = with_layout(x, x_layout)
    wv, w = with_layout(w, w_layout)
    y = call_conv(case, xv, wv, b, flip=flip)
    w_eff = spatial_flip(w) if flip else w
    exact, magnitude = reference_conv(case, x, w_eff, b)
    terms = reduction_terms(case)
    assert_within_rounding(y, exact, magnitude, terms, np.dtype(dtype))
    assert_within_rounding(torch_conv(case, x, w_eff, b), exact, magnitude, terms,
                           np.dtype(dtype))


@examples(60)
@given(case=conv_cases(), dtype=DTYPES, x_layout=LAYOUTS, w_layout=LAYOUTS,
       dy_layout=LAYOUTS, flip=st.booleans(), seed=SEEDS)
def test_conv_gradients_equal_reference_and_torch(case, dtype, x_layout, w_layout, dy_layout,
                                                  flip, seed):
    """conv_backward_input / conv_backward_weight within the rounding bound of the float64
    reference, as torch autograd's are (_cases.check_backward); nn.functional.conv's
    autograd gives the same bits, with flip too, and the bias gradient is dy summed."""
    x, w, b = make_inputs(case, dtype, seed)
    win = conv_geometry(case)
    dy = random_array(np.random.default_rng(seed + 1),
                      (case.batch, case.out_channels) + win.out_size, dtype)
    xv, x = with_layout(x, x_layout)
    wv, w = with_layout(w, w_layout)
    dyv, dy = with_layout(dy, dy_layout)
    w_eff = spatial_flip(w) if flip else w
    kwargs = dict(stride=case.stride, padding=case.padding, dilation=case.dilation,
                  groups=case.groups)
    dx = fastconv.conv_backward_input(dyv, relayout(w_eff, w_layout), x.shape, **kwargs)
    dw = fastconv.conv_backward_weight(xv, dyv, case.kernel, **kwargs)
    check_backward(case, x, w_eff, dy, dx, dw)

    xt, wt = Tensor(xv, requires_grad=True), Tensor(wv, requires_grad=True)
    bt = None if b is None else Tensor(b, requires_grad=True)
    yt = fcF.conv(xt, wt, bt, flip=flip, **kwargs)
    np.testing.assert_array_equal(yt.data, call_conv(case, xv, wv, b, flip=flip))
    yt.backward(dyv)
    np.testing.assert_array_equal(xt.grad, dx)
    np.testing.assert_array_equal(wt.grad, spatial_flip(dw) if flip else dw)
    if bt is not None:
        axes = (0,) + tuple(range(2, dy.ndim))
        dy64 = dy.astype(np.float64)
        assert_within_rounding(bt.grad, dy64.sum(axis=axes), np.abs(dy64).sum(axis=axes),
                               case.batch * math.prod(win.out_size), np.dtype(dtype))


# ----------------------------------------------------------------------------- pooling


def torch_pool_args(win, kind: str) -> tuple:
    """(stride, padding) for torch's pooling, or None where torch refuses the case: it pads
    symmetrically only, and avg_pool3d wants the input at least as large as the kernel
    even when padding makes room."""
    if win.pad_before != win.pad_after:
        return None
    if kind == "avg" and len(win.kernel) == 3 and any(
            n < k for n, k in zip(win.in_size, win.kernel)):
        return None
    return win.stride, win.pad_before


def pool_input(shape: tuple, dtype, seed: int, values: str) -> np.ndarray:
    """Random input; "ties": few distinct values, "infinities" / "nan": about a sixth of
    the cells replaced by -inf / +inf (and NaN)."""
    x = rand(shape, dtype, seed, ties=values == "ties")
    if values in ("infinities", "nan"):
        rng = np.random.default_rng(seed + 2)
        specials = [-np.inf, np.inf] + ([np.nan] if values == "nan" else [])
        hit = rng.random(shape) < 1 / 6
        x[hit] = rng.choice(specials, int(hit.sum()))
    return x


@examples(120)
@given(case=pool_cases(), dtype=DTYPES, x_layout=LAYOUTS, dy_layout=LAYOUTS,
       idx_layout=st.sampled_from(SAME_VALUES),
       values=st.sampled_from(["normal", "ties", "infinities", "nan"]), seed=SEEDS)
def test_max_pool_equals_reference_and_torch(case, dtype, x_layout, dy_layout, idx_layout,
                                             values, seed):
    """max_pool's values and indices equal the reference's exactly (ties: the first cell in
    scan order; padding never wins, even over -inf; the first NaN wins) and torch's (which
    takes the last NaN instead: indices compared in NaN-free windows); max_pool_backward
    within the rounding bound of the float64 reference, as torch autograd's;
    nn.functional.max_pool's autograd gives the same bits as the public functions."""
    shape, kernel, stride, padding, ceil_mode = case
    win = pool_window(shape, kernel, stride, padding, ceil_mode)
    window = dict(stride=stride, padding=padding, ceil_mode=ceil_mode)
    xv, x = with_layout(pool_input(shape, dtype, seed, values), x_layout)
    y, idx = fastconv.max_pool(xv, kernel, return_indices=True, **window)
    want_y, want_idx = reference.max_pool(x, *pool_geometry(win), ceil_mode)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, want_y)  # NaN equals NaN here
    np.testing.assert_array_equal(idx, want_idx)

    dyv, dy = with_layout(rand(y.shape, dtype, seed + 1), dy_layout)
    dx = fastconv.max_pool_backward(dyv, relayout(idx, idx_layout), shape)
    dy64 = dy.astype(np.float64)
    exact = reference.max_pool_backward(dy64, idx, shape)
    magnitude = reference.max_pool_backward(np.abs(dy64), idx, shape)
    terms = math.prod(kernel)  # the most windows one cell can win
    assert_within_rounding(dx, exact, magnitude, terms, np.dtype(dtype))

    xt = Tensor(xv, requires_grad=True)
    yt, idx_t = fcF.max_pool(xt, kernel, return_indices=True, **window)
    np.testing.assert_array_equal(yt.data, y)
    np.testing.assert_array_equal(idx_t, idx)
    yt.backward(dyv)
    np.testing.assert_array_equal(xt.grad, dx)

    args = torch_pool_args(win, "max")
    if args is None:
        return
    xt = torch.from_numpy(x).requires_grad_(True)
    ty, tidx = TORCH_MAX[len(kernel)](xt, kernel, *args, ceil_mode=ceil_mode,
                                      return_indices=True)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    no_nan = ~np.isnan(y)
    np.testing.assert_array_equal(idx[no_nan], tidx.numpy()[no_nan])
    if no_nan.all():
        ty.backward(torch.from_numpy(dy))
        assert_within_rounding(xt.grad.numpy(), exact, magnitude, terms, np.dtype(dtype))


@examples(120)
@given(case=pool_cases(), dtype=DTYPES, include=st.booleans(), x_layout=LAYOUTS,
       dy_layout=LAYOUTS, seed=SEEDS)
def test_avg_pool_equals_reference_and_torch(case, dtype, include, x_layout, dy_layout,
                                             seed):
    """avg_pool and avg_pool_backward within the rounding bound of the float64 reference
    (both count_include_pad settings, ceil_mode overhangs), as torch's forward and
    autograd are; nn.functional.avg_pool's autograd gives the same bits as the public
    functions."""
    shape, kernel, stride, padding, ceil_mode = case
    win = pool_window(shape, kernel, stride, padding, ceil_mode)
    geometry = pool_geometry(win)
    window = dict(stride=stride, padding=padding, ceil_mode=ceil_mode,
                  count_include_pad=include)
    terms = math.prod(kernel) + 1  # the window sum, then one division
    xv, x = with_layout(rand(shape, dtype, seed), x_layout)
    y = fastconv.avg_pool(xv, kernel, **window)
    x64 = x.astype(np.float64)
    exact = reference.avg_pool(x64, *geometry, ceil_mode, include)
    magnitude = reference.avg_pool(np.abs(x64), *geometry, ceil_mode, include)
    assert_within_rounding(y, exact, magnitude, terms, np.dtype(dtype))

    dyv, dy = with_layout(rand(y.shape, dtype, seed + 1), dy_layout)
    dx = fastconv.avg_pool_backward(dyv, shape, kernel, **window)
    dy64 = dy.astype(np.float64)
    dx_exact = reference.avg_pool_backward(dy64, shape, *geometry, ceil_mode, include)
    dx_mag = reference.avg_pool_backward(np.abs(dy64), shape, *geometry, ceil_mode, include)
    assert_within_rounding(dx, dx_exact, dx_mag, terms, np.dtype(dtype))

    xt = Tensor(xv, requires_grad=True)
    yt = fcF.avg_pool(xt, kernel, **window)
    np.testing.assert_array_equal(yt.data, y)
    yt.backward(dyv)
    np.testing.assert_array_equal(xt.grad, dx)

    args = torch_pool_args(win, "avg")
    if args is None:
        return
    xt = torch.from_numpy(x).requires_grad_(True)
    ty = TORCH_AVG[len(kernel)](xt, kernel, *args, ceil_mode=ceil_mode,
                                count_include_pad=include)
    assert_within_rounding(ty.detach().numpy(), exact, magnitude, terms, np.dtype(dtype))
    ty.backward(torch.from_numpy(dy))
    assert_within_rounding(xt.grad.numpy(), dx_exact, dx_mag, terms, np.dtype(dtype))


# ----------------------------------------------------------------------------- im2col


def windows_per_pixel(win) -> np.ndarray:
    """How many (window, kernel tap) pairs read each input pixel, counted from the
    definition (tap t of window o reads o * stride + t * dilation - pad_before) one dim at a
    time; the count of a pixel is the product over dims."""
    counts = []
    for n, k, s, b, d, o in zip(win.in_size, win.kernel, win.stride, win.pad_before,
                                win.dilation, win.out_size):
        c = np.zeros(n, dtype=np.int64)
        for pos in range(o):
            for tap in range(k):
                i = pos * s + tap * d - b
                if 0 <= i < n:
                    c[i] += 1
        counts.append(c)
    return math.prod(np.ix_(*counts))


@examples(100)
@given(case=conv_cases(), dtype=DTYPES, x_layout=LAYOUTS,
       cols_layout=st.sampled_from(SAME_VALUES), seed=SEEDS)
def test_im2col_col2im_round_trip(case, dtype, x_layout, cols_layout, seed):
    """im2col equals the reference exactly (it copies), and torch's unfold on 2-D
    symmetric padding; col2im(im2col(x)) is x times the number of windows reading each
    pixel; col2im is im2col's adjoint, <im2col(x), c> = <x, col2im(c)>."""
    shape = (case.batch, case.channels) + case.spatial
    geometry = dict(stride=case.stride, padding=case.padding, dilation=case.dilation)
    win = conv_geometry(case)
    rng = np.random.default_rng(seed)
    xv, x = with_layout(random_array(rng, shape, dtype), x_layout)
    cols = fastconv.im2col(xv, case.kernel, **geometry)
    np.testing.assert_array_equal(cols, reference.im2col(x, *win.cpp_args()))

    back = fastconv.col2im(relayout(cols, cols_layout), case.spatial, case.kernel, **geometry)
    counts = windows_per_pixel(win)
    x64 = x.astype(np.float64)
    assert_within_rounding(back, x64 * counts, np.abs(x64) * counts, int(counts.max()),
                           np.dtype(dtype))

    c = random_array(rng, cols.shape, np.float64)
    lhs = np.vdot(fastconv.im2col(x64, case.kernel, **geometry), c)
    rhs = np.vdot(x64, fastconv.col2im(c, case.spatial, case.kernel, **geometry))
    assert abs(lhs - rhs) <= 8 * c.size * np.finfo(np.float64).eps * np.vdot(
        np.abs(x64), fastconv.col2im(np.abs(c), case.spatial, case.kernel, **geometry))

    if len(case.spatial) == 2 and win.pad_before == win.pad_after:
        unfold = dict(kernel_size=case.kernel, dilation=win.dilation, padding=win.pad_before,
                      stride=win.stride)
        np.testing.assert_array_equal(cols, F.unfold(torch.from_numpy(x), **unfold).numpy())
        folded = F.fold(torch.from_numpy(np.array(cols)), case.spatial, **unfold).numpy()
        assert_within_rounding(folded, x64 * counts, np.abs(x64) * counts, int(counts.max()),
                               np.dtype(dtype))
