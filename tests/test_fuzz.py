"""Random, mostly invalid arguments: every public op either answers or raises ValueError /
TypeError. A crash (segfault, abort) would take the test process down; a hang times out."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import reference

small = st.integers(-2, 6)
spatial = st.lists(st.integers(0, 7), min_size=0, max_size=4)
padding = st.one_of(small, st.sampled_from(["same", "valid", "full"]),
                    st.lists(small, min_size=1, max_size=4).map(tuple),
                    st.lists(st.tuples(small, small), min_size=1, max_size=4).map(tuple))
per_dim = st.one_of(small, st.lists(small, min_size=1, max_size=4).map(tuple),
                    st.just(2**40), st.just(2**62))
dtypes = st.sampled_from([np.float32, np.float64, np.int32, np.float16])
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def array(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def answers_or_rejects(call) -> None:
    try:
        call()
    except (ValueError, TypeError):
        pass


@SETTINGS
@given(n=st.integers(0, 2), c=st.integers(0, 4), k=st.integers(0, 4), x_sp=spatial,
       w_sp=spatial, stride=per_dim, pad=padding, dilation=per_dim,
       groups=st.integers(-1, 4), dx=dtypes, dw=dtypes, flip=st.booleans())
def test_conv_family(n, c, k, x_sp, w_sp, stride, pad, dilation, groups, dx, dw, flip):
    x = array((n, c, *x_sp), dx)
    w = array((k, max(c // max(groups, 1), 0), *w_sp), dw, 1)
    kw = dict(stride=stride, padding=pad, dilation=dilation, groups=groups)
    answers_or_rejects(lambda: fastconv.conv(x, w, flip=flip, **kw))
    answers_or_rejects(lambda: fastconv.conv_backward_input(x, w, (n, c, *x_sp), **kw))
    answers_or_rejects(lambda: fastconv.conv_backward_weight(x, x, tuple(w_sp) or 1, **kw))
    answers_or_rejects(lambda: fastconv.im2col(x, tuple(w_sp) or 1, stride=stride, padding=pad,
                                               dilation=dilation))
    answers_or_rejects(lambda: fastconv.col2im(x.reshape(n, c, -1) if x.ndim >= 3 else x,
                                               tuple(x_sp), tuple(w_sp) or 1, stride=stride,
                                               padding=pad, dilation=dilation))


@SETTINGS
@given(n=st.integers(0, 2), c=st.integers(0, 3), x_sp=spatial, kernel=per_dim, stride=per_dim,
       pad=padding, ceil_mode=st.booleans(), include=st.booleans(), dtype=dtypes,
       bad_index=st.integers(-3, 300))
def test_pool_family(n, c, x_sp, kernel, stride, pad, ceil_mode, include, dtype, bad_index):
    x = array((n, c, *x_sp), dtype)
    answers_or_rejects(lambda: fastconv.avg_pool(x, kernel, stride=stride, padding=pad,
                                                 ceil_mode=ceil_mode,
                                                 count_include_pad=include))
    answers_or_rejects(lambda: fastconv.avg_pool_backward(x, (n, c, *x_sp), kernel,
                                                          stride=stride, padding=pad,
                                                          ceil_mode=ceil_mode))
    try:
        y, idx = fastconv.max_pool(x, kernel, stride=stride, padding=pad, ceil_mode=ceil_mode,
                                   return_indices=True)
    except (ValueError, TypeError):
        return
    idx = idx.copy()
    if idx.size:
        idx.flat[0] = bad_index
    answers_or_rejects(lambda: fastconv.max_pool_backward(y, idx, x.shape))


boxes_arrays = st.builds(
    lambda n, seed, scale, inverted: np.sort(
        np.random.default_rng(seed).standard_normal((n, 4)) * scale, axis=1)[:, ::(
            -1 if inverted else 1)].copy(),
    st.integers(0, 40), st.integers(0, 1000), st.sampled_from([1.0, 1e30, np.inf]),
    st.booleans())


@SETTINGS
@given(boxes=boxes_arrays, thr=st.one_of(st.floats(allow_nan=True), st.none(), st.text()),
       score_thr=st.one_of(st.none(), st.floats(allow_nan=True)),
       max_output=st.one_of(st.none(), st.integers(-2, 50)), labels_len=st.integers(0, 41),
       fmt=st.sampled_from(["xyxy", "xywh", "cxcywh", "yxyx"]))
def test_box_family(boxes, thr, score_thr, max_output, labels_len, fmt):
    scores = np.random.default_rng(0).random(len(boxes))
    labels = np.arange(labels_len) % 3
    answers_or_rejects(lambda: fastconv.box_iou(boxes, boxes[::-1]))
    answers_or_rejects(lambda: fastconv.box_convert(boxes, fmt, "xyxy"))
    answers_or_rejects(lambda: fastconv.nms(boxes, scores, thr, score_threshold=score_thr,
                                            max_output=max_output))
    answers_or_rejects(lambda: fastconv.batched_nms(boxes, scores, labels, thr,
                                                    score_threshold=score_thr,
                                                    max_output=max_output))


@SETTINGS
@given(n=st.integers(0, 2), c=st.integers(0, 3), x_sp=st.lists(st.integers(0, 9), min_size=1,
                                                                max_size=4),
       r=st.integers(0, 5), seed=st.integers(0, 1000),
       corrupt=st.sampled_from(["none", "nan", "inverted", "batch", "huge"]),
       out=st.one_of(small, st.lists(small, min_size=1, max_size=3).map(tuple)),
       scale=st.sampled_from([1.0, 0.5, 0.0, -1.0, np.nan]), ratio=st.integers(-2, 3),
       aligned=st.booleans(), dtype=dtypes)
def test_roi_family(n, c, x_sp, r, seed, corrupt, out, scale, ratio, aligned, dtype):
    """Random geometry and rois, some corrupted: each call answers or rejects."""
    rng = np.random.default_rng(seed)
    dims = max(len(x_sp), 2)
    x = array((n, c, *x_sp), dtype, seed)
    low = rng.uniform(-2, 8, (r, dims))
    rois = np.concatenate([rng.integers(0, max(n, 1), (r, 1)), low,
                           low + rng.uniform(0, 6, (r, dims))], axis=1)
    if r and corrupt == "nan":
        rois[rng.integers(r), 1 + rng.integers(2 * dims)] = np.nan
    elif r and corrupt == "inverted":
        rois[0, 1:1 + dims], rois[0, 1 + dims:] = rois[0, 1 + dims:] + 1, rois[0, 1:1 + dims]
    elif r and corrupt == "batch":
        rois[0, 0] = n + 1.5
    elif r and corrupt == "huge":
        rois[0, 1:] *= 1e30
    with np.errstate(invalid="ignore", over="ignore"):  # NaN or 1e30 cast to an int dtype
        rois = rois.astype(dtype)
    kw = dict(spatial_scale=scale)
    answers_or_rejects(lambda: fastconv.roi_pool(x, rois, out, **kw))
    answers_or_rejects(lambda: fastconv.roi_align(x, rois, out, sampling_ratio=ratio,
                                                  aligned=aligned, **kw))


@SETTINGS
@given(n=st.integers(1, 2), c=st.integers(1, 3),
       x_sp=st.lists(st.integers(1, 9), min_size=2, max_size=3), r=st.integers(1, 5),
       seed=st.integers(0, 1000), out=st.integers(1, 4), scale=st.sampled_from([1.0, 0.5]),
       ratio=st.integers(-1, 3), aligned=st.booleans())
def test_roi_align_and_pool_equal_the_reference(n, c, x_sp, r, seed, out, scale, ratio,
                                                aligned):
    """Valid random geometry (2-D and 3-D, rois spilling past the borders), float64: the
    kernels equal the NumPy reference."""
    rng = np.random.default_rng(seed)
    dims = len(x_sp)
    x = array((n, c, *x_sp), np.float64, seed)
    low = rng.uniform(-2, 8, (r, dims))
    rois = np.concatenate([rng.integers(0, n, (r, 1)), low,
                           low + rng.uniform(0, 6, (r, dims))], axis=1)
    got = fastconv.roi_align(x, rois, out, spatial_scale=scale, sampling_ratio=ratio,
                             aligned=aligned)
    want = reference.roi_align(x, rois, (out,) * dims, scale, ratio, aligned)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    values, cells = fastconv.roi_pool(x, rois, out, spatial_scale=scale, return_indices=True)
    want_values, want_cells = reference.roi_pool(x, rois, (out,) * dims, scale)
    np.testing.assert_array_equal(values, want_values)
    np.testing.assert_array_equal(cells, want_cells)
