"""RoI align and RoI pool (fastconv.roi_*), their gradients and nn wrappers, on every device.

Three independent oracles: `fastconv.reference` (per-axis weight matrices / bin edges in
NumPy), literal transcriptions of torchvision's CPU kernels below (per roi, bin and sample,
the four bilinear corners, written from its documented algorithm), and hand-worked cases
(bilinear interpolation reproduces a linear ramp exactly, so a bin's value is the ramp at
its samples' mean). torchvision itself does not load beside the CPU torch wheel used here;
benchmarks/roi_vs_torchvision.py compares with it where it does.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv import Tensor, nn, reference
from fastconv.nn import functional as F

from _cases import cpu_and_cuda, gradcheck, on_device, to_host

DTYPES = [np.float32, np.float64]
FLT_MAX = float(np.finfo(np.float32).max)


def tol(dtype) -> dict:
    return dict(rtol=2e-5, atol=2e-5) if np.dtype(dtype) == np.float32 else dict(rtol=1e-12,
                                                                                  atol=1e-12)


def random_rois(rng, count, batch, extent, dims=2, spill=0.3, dtype=np.float64):
    """Rois (count, 1 + 2 dims) over an input of `extent` (per spatial dim, last = x) that
    spill past every border by up to `spill` of the extent; some are thinner than a cell."""
    extent = np.asarray(extent, dtype=np.float64)[::-1]  # x first, as in a roi row
    lo = rng.uniform(-spill, 1 + spill, (count, dims)) * extent
    size = rng.uniform(0, 0.8, (count, dims)) * extent
    size[rng.random((count, dims)) < 0.15] *= 0.01
    boxes = np.concatenate([lo, lo + size], axis=1)
    index = rng.integers(0, batch, (count, 1))
    return np.concatenate([index, boxes], axis=1).astype(dtype)


# ----------------------------------------------------------------------------------------
# torchvision's CPU kernels, transcribed literally (2-D): per roi, bin, sample and corner
# ----------------------------------------------------------------------------------------

def tv_roi_align(x, rois, out, scale, sampling_ratio, aligned, dy=None):
    """Forward (dy None) or the backward scatter of dy, torchvision's loops in x's dtype."""
    t = x.dtype.type
    _, channels, height, width = x.shape
    ph_, pw_ = out
    y = np.zeros((len(rois), channels, ph_, pw_), dtype=x.dtype)
    dx = np.zeros_like(x)
    for n, roi in enumerate(rois):
        b = int(roi[0])
        offset = t(0.5) if aligned else t(0)
        start_w, start_h = roi[1] * t(scale) - offset, roi[2] * t(scale) - offset
        roi_w = (roi[3] * t(scale) - offset) - start_w
        roi_h = (roi[4] * t(scale) - offset) - start_h
        if not aligned:
            roi_w, roi_h = max(roi_w, t(1)), max(roi_h, t(1))
        bin_h, bin_w = roi_h / t(ph_), roi_w / t(pw_)
        grid_h = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_h / t(ph_)))
        grid_w = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_w / t(pw_)))
        count = t(max(grid_h * grid_w, 1))
        for ph in range(ph_):
            for pw in range(pw_):
                value = np.zeros(channels, dtype=x.dtype)
                for iy in range(grid_h):
                    yy = start_h + t(ph) * bin_h + t(iy + 0.5) * bin_h / t(grid_h)
                    for ix in range(grid_w):
                        xx = start_w + t(pw) * bin_w + t(ix + 0.5) * bin_w / t(grid_w)
                        yv, xv = yy, xx
                        if not (yv >= -1 and yv <= height and xv >= -1 and xv <= width):
                            continue
                        yv, xv = (t(0) if yv <= 0 else yv), (t(0) if xv <= 0 else xv)
                        y_low, x_low = int(yv), int(xv)
                        if y_low >= height - 1:
                            y_high = y_low = height - 1
                            yv = t(y_low)
                        else:
                            y_high = y_low + 1
                        if x_low >= width - 1:
                            x_high = x_low = width - 1
                            xv = t(x_low)
                        else:
                            x_high = x_low + 1
                        ly, lx = yv - t(y_low), xv - t(x_low)
                        hy, hx = t(1) - ly, t(1) - lx
                        corners = ((y_low, x_low, hy * hx), (y_low, x_high, hy * lx),
                                   (y_high, x_low, ly * hx), (y_high, x_high, ly * lx))
                        if dy is None:
                            for cy, cx, w in corners:
                                value += w * x[b, :, cy, cx]
                        else:
                            for cy, cx, w in corners:
                                dx[b, :, cy, cx] += dy[n, :, ph, pw] * w / count
                y[n, :, ph, pw] = value / count
    return y if dy is None else dx


def round_half_away(v) -> int:
    a = abs(float(v))
    whole = math.floor(a)
    return int(math.copysign(whole + (1 if a - whole >= 0.5 else 0), float(v)))


def tv_roi_pool(x, rois, out, scale):
    t = x.dtype.type
    _, channels, height, width = x.shape
    ph_, pw_ = out
    y = np.zeros((len(rois), channels, ph_, pw_), dtype=x.dtype)
    at = np.full(y.shape, -1, dtype=np.int64)
    for n, roi in enumerate(rois):
        b = int(roi[0])
        sw, sh, ew, eh = (round_half_away(roi[k] * t(scale)) for k in (1, 2, 3, 4))
        bin_h, bin_w = t(max(eh - sh + 1, 1)) / t(ph_), t(max(ew - sw + 1, 1)) / t(pw_)
        for ph in range(ph_):
            for pw in range(pw_):
                hs = min(max(int(math.floor(t(ph) * bin_h)) + sh, 0), height)
                he = min(max(int(math.ceil(t(ph + 1) * bin_h)) + sh, 0), height)
                ws = min(max(int(math.floor(t(pw) * bin_w)) + sw, 0), width)
                we = min(max(int(math.ceil(t(pw + 1) * bin_w)) + sw, 0), width)
                empty = he <= hs or we <= ws
                for c in range(channels):
                    best, where = (t(0) if empty else t(-FLT_MAX)), -1
                    for h in range(hs, he):
                        for w in range(ws, we):
                            if x[b, c, h, w] > best:
                                best, where = x[b, c, h, w], h * width + w
                    y[n, c, ph, pw], at[n, c, ph, pw] = best, where
    return y, at


# ----------------------------------------------------------------------------------------
# RoI align: forward
# ----------------------------------------------------------------------------------------

ALIGN_OPTIONS = [(-1, False, 1.0), (0, True, 0.5), (2, True, 0.25), (2, False, 1.0),
                 (3, False, 0.5), (1, True, 1.0)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sampling_ratio,aligned,scale", ALIGN_OPTIONS)
def test_roi_align_matches_torchvision_loops(dtype, sampling_ratio, aligned, scale):
    rng = np.random.default_rng(hash((sampling_ratio, aligned, scale)) % 2**32)
    x = rng.standard_normal((2, 3, 7, 9)).astype(dtype)
    rois = random_rois(rng, 12, 2, (7 / scale, 9 / scale), dtype=dtype)
    want = tv_roi_align(x, rois, (3, 2), scale, sampling_ratio, aligned)
    got = fastconv.roi_align(x, rois, (3, 2), spatial_scale=scale,
                             sampling_ratio=sampling_ratio, aligned=aligned)
    assert got.dtype == dtype and got.shape == (12, 3, 3, 2)
    np.testing.assert_allclose(got, want, **tol(dtype))
    np.testing.assert_allclose(reference.roi_align(x, rois, (3, 2), scale, sampling_ratio,
                                                   aligned), want, **tol(dtype))


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sampling_ratio,aligned,scale", ALIGN_OPTIONS)
def test_roi_align_matches_reference(device, dtype, sampling_ratio, aligned, scale):
    rng = np.random.default_rng(7 + sampling_ratio)
    x = rng.standard_normal((3, 37, 13, 16)).astype(dtype)  # 37: a partial channel block
    rois = random_rois(rng, 40, 3, (13 / scale, 16 / scale), dtype=dtype)
    want = reference.roi_align(x, rois, (4, 5), scale, sampling_ratio, aligned)
    xd, rd = on_device(device, x, rois)
    got = fastconv.roi_align(xd, rd, (4, 5), spatial_scale=scale,
                             sampling_ratio=sampling_ratio, aligned=aligned)
    np.testing.assert_allclose(to_host(got, device), want, **tol(dtype))


def test_roi_align_on_a_linear_ramp_is_the_ramp_at_the_bin_centres():
    # Bilinear interpolation reproduces a linear function exactly and every bin's samples
    # are symmetric about its centre, so bin (i, j) is the ramp at the centre.
    h, w = np.mgrid[0:20, 0:30]
    x = (0.5 * h + 2.0 * w + 1.0)[None, None].astype(np.float64)
    for aligned in (False, True):
        for ratio in (-1, 1, 2, 3):
            x1, y1, x2, y2 = 4.3, 3.1, 19.7, 15.4
            rois = np.array([[0, x1, y1, x2, y2]])
            y = fastconv.roi_align(x, rois, (3, 4), sampling_ratio=ratio, aligned=aligned)[0, 0]
            off = 0.5 if aligned else 0.0
            cy = (y1 - off) + (np.arange(3) + 0.5) * (y2 - y1) / 3
            cx = (x1 - off) + (np.arange(4) + 0.5) * (x2 - x1) / 4
            np.testing.assert_allclose(y, 0.5 * cy[:, None] + 2.0 * cx[None, :] + 1.0,
                                       rtol=1e-12)


def test_roi_align_hand_cases():
    x = np.arange(12, dtype=np.float64).reshape(1, 1, 3, 4)
    # A roi thinner than a cell: aligned=False stretches it to one cell (samples at its
    # 0.25 / 0.75 points), aligned=True keeps it (both samples at the same point).
    thin = np.array([[0, 1.0, 1.0, 1.2, 1.0]])
    y = fastconv.roi_align(x, thin, (1, 1), sampling_ratio=2)
    assert y[0, 0, 0, 0] == pytest.approx(4 * 1.5 + 1.5)  # x = 4 h + w at the mean sample
    y = fastconv.roi_align(x, thin, (1, 1), sampling_ratio=2, aligned=True)
    # positions: x 0.5 + 0.05 and 0.5 + 0.15, y 0.5 - 0 (zero height): row 0.5
    assert y[0, 0, 0, 0] == pytest.approx(0.5 * 4 + np.mean([0.55, 0.65]))
    # Adaptive grid of a zero-size aligned roi: no samples, the output is 0.
    assert fastconv.roi_align(x, np.array([[0, 2.0, 1.0, 2.0, 1.0]]), (1, 1),
                              aligned=True)[0, 0, 0, 0] == 0.0
    # Samples beyond -1 or size read nothing; between -1 and 0 they clamp to the edge.
    far = fastconv.roi_align(x, np.array([[0, 5.5, 0.0, 9.0, 2.0]]), (1, 1), sampling_ratio=1)
    assert far[0, 0, 0, 0] == 0.0
    edge = fastconv.roi_align(x, np.array([[0, -1.8, 1.0, -0.2, 1.0]]), (1, 1),
                              sampling_ratio=1)  # one sample at x = -1.0, y = 1.5
    assert edge[0, 0, 0, 0] == pytest.approx(0.5 * (x[0, 0, 1, 0] + x[0, 0, 2, 0]))
    # The last row and column: a sample at y in [H - 1, H] reads row H - 1 alone.
    corner = fastconv.roi_align(x, np.array([[0, 2.6, 1.6, 3.6, 2.6]]), (1, 1),
                                sampling_ratio=1)
    assert corner[0, 0, 0, 0] == pytest.approx(x[0, 0, 2, 3])


@pytest.mark.parametrize("dtype", DTYPES)
def test_roi_align_3d_matches_reference(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 6, 7, 9)).astype(dtype)
    rois = random_rois(rng, 15, 2, (6, 7, 9), dims=3, dtype=dtype)
    for ratio, aligned in ((-1, False), (2, True)):
        want = reference.roi_align(x, rois, (2, 3, 2), 1.0, ratio, aligned)
        got = fastconv.roi_align(x, rois, (2, 3, 2), sampling_ratio=ratio, aligned=aligned)
        np.testing.assert_allclose(got, want, **tol(dtype))
        dy = rng.standard_normal(got.shape).astype(dtype)
        np.testing.assert_allclose(
            fastconv.roi_align_backward(dy, rois, x.shape, sampling_ratio=ratio,
                                        aligned=aligned),
            reference.roi_align_backward(dy, rois, x.shape, 1.0, ratio, aligned), **tol(dtype))


def test_roi_align_3d_with_a_flat_depth_is_the_2d_op():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 3, 8, 10))
    rois = random_rois(rng, 6, 1, (8, 10))
    # The depth axis of one cell with a roi spanning [0, 0.5] samples that cell with weight 1.
    rois3 = np.concatenate([rois[:, :3], np.zeros((6, 1)), rois[:, 3:], np.full((6, 1), 0.5)],
                           axis=1)
    y2 = fastconv.roi_align(x, rois, (3, 3), sampling_ratio=2, aligned=True)
    y3 = fastconv.roi_align(x[:, :, None], rois3, (1, 3, 3), sampling_ratio=2, aligned=True)
    np.testing.assert_allclose(y3[:, :, 0], y2, rtol=1e-13, atol=1e-14)


def test_huge_rois_cost_their_visible_part():
    # An adaptive grid of ~10^5 samples per bin and axis: only samples inside [-1, size]
    # are visited (the reference builds them all, in float64 it is still quick).
    x = np.random.default_rng(5).standard_normal((1, 2, 6, 5))
    rois = np.array([[0, -3e5, -2e5, 4e5, 5e5], [0, 1.0, 1.0, 3e5, 2.5]])
    got = fastconv.roi_align(x, rois, (2, 2))
    np.testing.assert_allclose(got, reference.roi_align(x, rois, (2, 2)), rtol=1e-10,
                               atol=1e-16)


def test_roi_inputs_as_lists_and_other_float_dtypes():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 10, 12)).astype(np.float32)
    boxes = [random_rois(rng, k, 1, (10, 12))[:, 1:] for k in (3, 0, 2)]
    rows = np.concatenate([np.concatenate([np.full((len(b), 1), i), b], 1)
                           for i, b in enumerate(boxes)])
    want = fastconv.roi_align(x, rows.astype(np.float32), 2, sampling_ratio=2)
    np.testing.assert_array_equal(fastconv.roi_align(x, boxes, 2, sampling_ratio=2), want)
    np.testing.assert_array_equal(fastconv.roi_align(x, rows, 2, sampling_ratio=2), want)
    np.testing.assert_array_equal(
        fastconv.roi_align(x, [b.astype(np.float16) for b in boxes], (2, 2), sampling_ratio=2),
        fastconv.roi_align(x, [b.astype(np.float16).astype(np.float32) for b in boxes],
                           (2, 2), sampling_ratio=2))
    y, idx = fastconv.roi_pool(x, boxes[:1], (2, 3), return_indices=True)
    assert y.shape == idx.shape == (3, 4, 2, 3) and idx.dtype == np.int64


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_no_rois(device):
    x = on_device(device, np.ones((2, 3, 5, 5), dtype=np.float32))
    none = on_device(device, np.zeros((0, 5), dtype=np.float32))
    assert fastconv.roi_align(x, none, (2, 2)).shape == (0, 3, 2, 2)
    y, idx = fastconv.roi_pool(x, none, (2, 2), return_indices=True)
    assert y.shape == idx.shape == (0, 3, 2, 2)
    dy = on_device(device, np.zeros((0, 3, 2, 2), dtype=np.float32))
    for dx in (fastconv.roi_align_backward(dy, none, (2, 3, 5, 5)),
               fastconv.roi_pool_backward(dy, idx, none, (2, 3, 5, 5))):
        assert to_host(dx, device).shape == (2, 3, 5, 5) and not to_host(dx, device).any()
    assert fastconv.roi_align(np.ones((1, 1, 3, 3)), [], 1).shape == (0, 1, 1, 1)


# ----------------------------------------------------------------------------------------
# RoI align: backward
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sampling_ratio,aligned,scale", ALIGN_OPTIONS[:4])
def test_roi_align_backward_matches_torchvision_loops(dtype, sampling_ratio, aligned, scale):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 7, 9)).astype(dtype)
    rois = random_rois(rng, 10, 2, (7 / scale, 9 / scale), dtype=dtype)
    dy = rng.standard_normal((10, 3, 2, 3)).astype(dtype)
    want = tv_roi_align(x, rois, (2, 3), scale, sampling_ratio, aligned, dy=dy)
    got = fastconv.roi_align_backward(dy, rois, x.shape, spatial_scale=scale,
                                      sampling_ratio=sampling_ratio, aligned=aligned)
    np.testing.assert_allclose(got, want, **tol(dtype))


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sampling_ratio,aligned,scale", ALIGN_OPTIONS)
def test_roi_align_backward_is_the_adjoint(device, dtype, sampling_ratio, aligned, scale):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 21, 11, 14)).astype(dtype)
    rois = random_rois(rng, 30, 2, (11 / scale, 14 / scale), dtype=dtype)
    dy = rng.standard_normal((30, 21, 3, 4)).astype(dtype)
    xd, rd, dyd = on_device(device, x, rois, dy)
    kw = dict(spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=aligned)
    y = to_host(fastconv.roi_align(xd, rd, (3, 4), **kw), device).astype(np.float64)
    dx = to_host(fastconv.roi_align_backward(dyd, rd, x.shape, **kw), device)
    lhs, rhs = float((y * dy).sum()), float((x.astype(np.float64) * dx).sum())
    scale_of_terms = float(np.abs(y * dy).sum())
    assert abs(lhs - rhs) <= (1e-5 if dtype == np.float32 else 1e-12) * scale_of_terms
    np.testing.assert_allclose(dx, reference.roi_align_backward(dy, rois, x.shape, scale,
                                                                sampling_ratio, aligned),
                               **tol(dtype))


@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_gradient_by_finite_differences(aligned):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 3, 6, 7))
    rois = random_rois(rng, 5, 2, (6, 7))
    gradcheck(lambda t: F.roi_align(t, rois, (2, 3), 1.0, 2, aligned), [x])


def test_roi_pool_gradient_by_finite_differences():
    rng = np.random.default_rng(14)
    x = rng.permutation(2 * 3 * 6 * 7).reshape(2, 3, 6, 7) / 10.0  # distinct: no ties
    rois = random_rois(rng, 5, 2, (6, 7))
    gradcheck(lambda t: F.roi_pool(t, rois, (2, 2)), [x], eps=1e-4)


# ----------------------------------------------------------------------------------------
# RoI pool
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 0.5, 0.3])
def test_roi_pool_matches_torchvision_loops(dtype, scale):
    rng = np.random.default_rng(int(scale * 10))
    x = rng.integers(-3, 4, (2, 3, 8, 9)).astype(dtype)  # few values: ties
    rois = random_rois(rng, 14, 2, (8 / scale, 9 / scale), dtype=dtype)
    want, want_at = tv_roi_pool(x, rois, (3, 2), scale)
    got, at = fastconv.roi_pool(x, rois, (3, 2), spatial_scale=scale, return_indices=True)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(at, want_at)
    ref, ref_at = reference.roi_pool(x, rois, (3, 2), scale)
    np.testing.assert_array_equal(ref, want)
    np.testing.assert_array_equal(ref_at, want_at)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dims", [2, 3])
def test_roi_pool_matches_reference(device, dtype, dims):
    rng = np.random.default_rng(20 + dims)
    spatial = (9, 11) if dims == 2 else (5, 6, 7)
    out = (3, 4) if dims == 2 else (2, 2, 3)
    x = rng.integers(-5, 6, (2, 37) + spatial).astype(dtype)
    rois = random_rois(rng, 25, 2, tuple(s / 0.5 for s in spatial), dims=dims, dtype=dtype)
    want, want_at = reference.roi_pool(x, rois, out, 0.5)
    xd, rd = on_device(device, x, rois)
    got, at = fastconv.roi_pool(xd, rd, out, spatial_scale=0.5, return_indices=True)
    np.testing.assert_array_equal(to_host(got, device), want)
    np.testing.assert_array_equal(to_host(at, device), want_at)
    dy = rng.standard_normal(want.shape).astype(dtype)
    dx = fastconv.roi_pool_backward(on_device(device, dy), at, rd, x.shape)
    np.testing.assert_array_equal(to_host(dx, device),
                                  reference.roi_pool_backward(dy, want_at, rois, x.shape))


def test_roi_pool_hand_cases():
    x = np.arange(20, dtype=np.float32).reshape(1, 1, 4, 5)
    # Rounding half away from zero: x1 = 0.5 -> 1, x2 = 2.5 -> 3, y1 = -0.5 -> -1 (clipped).
    y, at = fastconv.roi_pool(x, np.array([[0, 0.5, -0.5, 2.5, 1.4]], np.float32), (1, 1),
                              return_indices=True)
    assert (y[0, 0, 0, 0], at[0, 0, 0, 0]) == (8.0, 8)
    # A roi beyond the input: every bin empty -> 0 and -1.
    y, at = fastconv.roi_pool(x, np.array([[0, 7, 6, 9, 8]], np.float32), (2, 2),
                              return_indices=True)
    assert not y.any() and (at == -1).all()
    # Ties: the first cell in scan order; NaN never wins; values at or below -FLT_MAX never
    # win either (torchvision starts from -FLT_MAX in both dtypes).
    z = np.full((1, 1, 2, 2), 5.0)
    z[0, 0, 0, 0] = np.nan
    y, at = fastconv.roi_pool(z, np.array([[0, 0, 0, 1, 1.0]]), (1, 1), return_indices=True)
    assert (y[0, 0, 0, 0], at[0, 0, 0, 0]) == (5.0, 1)
    low = np.full((1, 1, 2, 2), -np.inf)
    low[0, 0, 1, 1] = -1e300
    y, at = fastconv.roi_pool(low, np.array([[0, 0, 0, 1, 1.0]]), (1, 1), return_indices=True)
    assert (y[0, 0, 0, 0], at[0, 0, 0, 0]) == (-FLT_MAX, -1)
    # Backward: indices -1 add nothing; bins sharing a cell add in roi order.
    dy = np.array([[[[1.0]]], [[[2.0]]]])
    dx = fastconv.roi_pool_backward(dy, np.array([[[[3]]], [[[-1]]]]),
                                    np.array([[0, 0, 0, 1, 1.0]] * 2), (1, 1, 2, 2))
    np.testing.assert_array_equal(dx.ravel(), [0, 0, 0, 1.0])


# ----------------------------------------------------------------------------------------
# Determinism
# ----------------------------------------------------------------------------------------

_DETERMINISM_SCRIPT = """
import sys, numpy as np, fastconv
rng = np.random.default_rng(31)
x = rng.standard_normal((2, 70, 23, 29)).astype(np.float32)
lo = rng.uniform(-5, 30, (300, 2)); size = rng.uniform(0, 25, (300, 2))
rois = np.concatenate([rng.integers(0, 2, (300, 1)), lo, lo + size], 1).astype(np.float32)
y = fastconv.roi_align(x, rois, (7, 7), sampling_ratio=2, aligned=True)
dy = rng.standard_normal(y.shape).astype(np.float32)
dx = fastconv.roi_align_backward(dy, rois, x.shape, sampling_ratio=2, aligned=True)
p, at = fastconv.roi_pool(x, rois, (7, 7), return_indices=True)
dp = fastconv.roi_pool_backward(dy, at, rois, x.shape)
for a in (y, dx, p, at, dp):
    sys.stdout.buffer.write(a.tobytes())
"""


def test_results_do_not_depend_on_the_thread_count():
    outputs = []
    for threads in ("1", "2", "3"):
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        outputs.append(subprocess.run([sys.executable, "-c", _DETERMINISM_SCRIPT], env=env,
                                      check=True, capture_output=True).stdout)
    assert len(outputs[0]) > 0
    assert outputs[0] == outputs[1] == outputs[2]


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_backward_is_bitwise_repeatable(device):
    rng = np.random.default_rng(32)
    x = rng.standard_normal((2, 40, 20, 24)).astype(np.float32)
    rois = random_rois(rng, 200, 2, (20, 24), dtype=np.float32)  # many overlaps
    dy = rng.standard_normal((200, 40, 5, 5)).astype(np.float32)
    xd, rd, dyd = on_device(device, x, rois, dy)
    first = to_host(fastconv.roi_align_backward(dyd, rd, x.shape, sampling_ratio=2), device)
    for _ in range(3):
        again = to_host(fastconv.roi_align_backward(dyd, rd, x.shape, sampling_ratio=2), device)
        np.testing.assert_array_equal(again, first)
    _, at = fastconv.roi_pool(xd, rd, (5, 5), return_indices=True)
    first = to_host(fastconv.roi_pool_backward(dyd, at, rd, x.shape), device)
    for _ in range(3):
        np.testing.assert_array_equal(
            to_host(fastconv.roi_pool_backward(dyd, at, rd, x.shape), device), first)


# ----------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------

def _x():
    return np.zeros((2, 3, 8, 8), dtype=np.float32)


@pytest.mark.parametrize("row,match", [
    ([0.5, 1, 1, 4, 4], r"rois row 0 has batch index 0.5; it must be an integer in \[0, 2\)"),
    ([2, 1, 1, 4, 4], r"batch index 2"),
    ([-1, 1, 1, 4, 4], r"batch index -1"),
    ([0, 1, np.nan, 4, 4], r"rois row 0 has a non-finite value"),
    ([0, 1, 1, np.inf, 4], r"non-finite"),
    ([np.nan, 1, 1, 4, 4], r"non-finite"),
    ([0, 5, 1, 4, 4], r"rois row 0 is inverted \(need x1 <= x2 and y1 <= y2\)"),
    ([0, 1, 5, 4, 4], r"inverted"),
])
def test_bad_roi_rows(row, match):
    rois = np.array([row], dtype=np.float32)
    for call in (lambda: fastconv.roi_align(_x(), rois, 2),
                 lambda: fastconv.roi_pool(_x(), rois, 2),
                 lambda: fastconv.roi_align_backward(np.zeros((1, 3, 2, 2), np.float32), rois,
                                                     (2, 3, 8, 8)),
                 lambda: fastconv.roi_pool_backward(np.zeros((1, 3, 2, 2), np.float32),
                                                    np.zeros((1, 3, 2, 2), np.int64), rois,
                                                    (2, 3, 8, 8))):
        with pytest.raises(ValueError, match=match) as info:
            call()
        assert "rois shape (1, 5), x shape (2, 3, 8, 8)" in str(info.value)


def test_bad_arguments():
    x, rois = _x(), np.array([[0, 1, 1, 4, 4]], dtype=np.float32)
    with pytest.raises(ValueError, match=r"rois must have shape \(R, 5\) .* got shape \(1, 4\)"):
        fastconv.roi_align(x, rois[:, 1:], 2)
    with pytest.raises(ValueError, match=r"rois\[0\] must have shape \(L, 4\)"):
        fastconv.roi_align(x, [rois], 2)
    with pytest.raises(ValueError, match="list of 3 per-image box arrays but x has batch size 2"):
        fastconv.roi_align(x, [rois[:, 1:]] * 3, 2)
    with pytest.raises(ValueError, match=r"output_size \(0, 2\) must be positive"):
        fastconv.roi_align(x, rois, (0, 2))
    with pytest.raises(ValueError, match="output_size .* has 3 entries"):
        fastconv.roi_pool(x, rois, (2, 2, 2))
    with pytest.raises(TypeError, match="rois must have a float dtype, got int64"):
        fastconv.roi_align(x, rois.astype(np.int64), 2)
    with pytest.raises(TypeError, match="x must be float32 or float64"):
        fastconv.roi_align(x.astype(np.int32), rois, 2)
    with pytest.raises(TypeError, match="rois must be a numpy.ndarray"):
        fastconv.roi_align(x, "rois", 2)
    with pytest.raises(ValueError, match=r"x must be \(N, C, H, W\) or \(N, C, D, H, W\)"):
        fastconv.roi_align(x[0], rois, 2)
    with pytest.raises(ValueError, match="zero-size dim"):
        fastconv.roi_align(np.zeros((1, 0, 4, 4), np.float32), rois[:0], 2)
    with pytest.raises(ValueError, match="spatial_scale must be finite and positive"):
        fastconv.roi_align(x, rois, 2, spatial_scale=0.0)
    with pytest.raises(ValueError, match="sampling_ratio must be below 2"):
        fastconv.roi_align(x, rois, 2, sampling_ratio=2**40)
    with pytest.raises(ValueError, match="too large once scaled"):
        fastconv.roi_align(x, np.array([[0, 0, 0, 1e20, 4]], np.float32), 2)
    with pytest.raises(ValueError, match="too large once scaled"):
        fastconv.roi_pool(x, np.array([[0, 0, 0, 3e9, 4]], np.float32), 2)
    with pytest.raises(ValueError, match=r"dy has shape \(2, 3, 2, 2\), expected \(1, 3, 2, 2\)"):
        fastconv.roi_align_backward(np.zeros((2, 3, 2, 2), np.float32), rois, (2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"input_shape \(2, 3, 8\) must have 4 entries"):
        fastconv.roi_align_backward(np.zeros((1, 3, 2, 2), np.float32), rois, (2, 3, 8))
    with pytest.raises(ValueError, match=r"indices must lie in \[-1, 64\)"):
        fastconv.roi_pool_backward(np.zeros((1, 3, 2, 2), np.float32),
                                   np.full((1, 3, 2, 2), 64), rois, (2, 3, 8, 8))
    with pytest.raises(TypeError, match="indices must have an integer dtype"):
        fastconv.roi_pool_backward(np.zeros((1, 3, 2, 2), np.float32),
                                   np.zeros((1, 3, 2, 2)), rois, (2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"indices has shape \(1, 3, 2, 1\)"):
        fastconv.roi_pool_backward(np.zeros((1, 3, 2, 2), np.float32),
                                   np.zeros((1, 3, 2, 1), np.int64), rois, (2, 3, 8, 8))


@pytest.mark.cuda
def test_device_mismatch():
    import cupy

    x, rois = _x(), np.array([[0, 1, 1, 4, 4]], dtype=np.float32)
    with pytest.raises(TypeError, match="rois is in host memory but x is on the GPU"):
        fastconv.roi_align(cupy.asarray(x), rois, 2)
    with pytest.raises(TypeError, match="rois is on the GPU but x is in host memory"):
        fastconv.roi_pool(x, cupy.asarray(rois), 2)
    with pytest.raises(ValueError, match="batch index 0.5"):
        fastconv.roi_align(cupy.asarray(x), cupy.asarray([[0.5, 1, 1, 4, 4]], np.float32), 2)


# ----------------------------------------------------------------------------------------
# nn wrappers
# ----------------------------------------------------------------------------------------

def test_functional_and_layers_record_gradients():
    rng = np.random.default_rng(40)
    x = rng.standard_normal((2, 4, 9, 10)).astype(np.float32)
    rois = random_rois(rng, 7, 2, (18, 20), dtype=np.float32)
    dy = rng.standard_normal((7, 4, 3, 3)).astype(np.float32)
    for layer, fn in ((nn.RoIAlign((3, 3), 0.5, 2, aligned=True),
                       lambda t: F.roi_align(t, Tensor(rois), 3, spatial_scale=0.5,
                                             sampling_ratio=2, aligned=True)),
                      (nn.RoIPool(3, 0.5), lambda t: F.roi_pool(t, rois, (3, 3), 0.5))):
        t = Tensor(x, requires_grad=True)
        out = layer(t, rois)
        (out * Tensor(dy)).sum().backward()
        t2 = Tensor(x, requires_grad=True)
        (fn(t2) * Tensor(dy)).sum().backward()
        np.testing.assert_array_equal(out.data, fn(Tensor(x)).data)
        np.testing.assert_array_equal(t.grad, t2.grad)
        assert t.grad.shape == x.shape and np.abs(t.grad).sum() > 0
    want = fastconv.roi_align_backward(dy, rois, x.shape, spatial_scale=0.5, sampling_ratio=2,
                                       aligned=True)
    t = Tensor(x, requires_grad=True)
    (nn.RoIAlign(3, 0.5, 2, True)(t, rois) * Tensor(dy)).sum().backward()
    np.testing.assert_array_equal(t.grad, want)
    with fastconv.no_grad():  # the plain path of the layers gives the same values
        np.testing.assert_array_equal(nn.RoIPool(3, 0.5)(Tensor(x), rois).data,
                                      fastconv.roi_pool(x, rois, 3, spatial_scale=0.5))
    assert "output_size=(3, 3)" in repr(nn.RoIAlign((3, 3), 0.5, 2))
