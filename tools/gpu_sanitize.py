#!/usr/bin/env python3
"""Call every GPU op of fastconv once on small inputs and check each result against the CPU.

Written to run under compute-sanitizer (tools/gpu_check.sh does):

    compute-sanitizer --tool memcheck --error-exitcode 1 python tools/gpu_sanitize.py
    compute-sanitizer --tool racecheck --error-exitcode 1 python tools/gpu_sanitize.py \
        --only nms,pool_backward,conv,conv_backward --conv-paths gemm_large,direct

so the shapes are small (a sanitizer slows kernels 10-100x) but odd-sized, multi-channel,
grouped and padded, to reach the boundary paths of every kernel. CuPy's memory pool is
switched off: with it, arrays are carved out of large pooled blocks, and memcheck, which
sees only cudaMalloc'd extents, would miss a read or write past the end of an array that
lands in its pooled neighbour. Every array then is its own cudaMalloc.

Each case runs the op on CuPy arrays (on a non-default stream) and on the same NumPy
arrays with the CPU kernels, and compares: index outputs exactly, float outputs within a
bound derived from rounding (see `_bound`). Exit status 0 when every case matches, 1 if
any differs or raises, 2 when no GPU can run here. `--cpu-dry-run` runs both sides on the
CPU: it checks this script's calls and bounds on a machine without a GPU, not the kernels.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

import fastconv as fc

# A case: (group, name, builder). The builder takes a seeded Generator and returns
# (inputs as NumPy arrays, call(xp_inputs) -> output(s), magnitude(inputs) -> bound input,
# terms). `group` is what --only selects (nms and pool_backward are the racecheck set).


@dataclass
class Case:
    group: str
    name: str
    build: Callable[[np.random.Generator], "Problem"]
    # Convolutions run once per CUDA kernel path, forced (see CONV_PATHS); None elsewhere.
    conv_path: Optional[str] = None


# The CUDA convolution paths: the automatic choice, the 64x64, 64x128 and 128x128 implicit
# GEMM tiles and the direct kernels. Small shapes all resolve to the 64x64 tiles or the
# direct kernels on their own, so the others are forced.
CONV_PATHS = ("auto", "gemm", "gemm_wide", "gemm_large", "direct")


@dataclass
class Problem:
    inputs: Tuple[Any, ...]
    call: Callable[..., Any]
    # Same call on |inputs| (float arrays only): the sum of |terms| behind each output
    # element, for the rounding bound. None for outputs compared exactly.
    magnitude: Optional[Callable[..., Any]] = None
    terms: int = 1


def _randn(rng: np.random.Generator, shape: Sequence[int], dtype: Any) -> np.ndarray:
    return rng.standard_normal(tuple(shape)).astype(dtype)


def _abs_inputs(inputs: Tuple[Any, ...]) -> Tuple[Any, ...]:
    return tuple(np.abs(a) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
                 for a in inputs)


# ------------------------------------------------------------------------------------------
# Cases
# ------------------------------------------------------------------------------------------

# name, x shape, K, kernel, stride, padding, dilation, groups
_CONV = [
    ("1d", (2, 5, 37), 7, (5,), 2, 2, 1, 1),
    ("1d_dil_groups", (3, 6, 29), 9, (3,), 1, 3, 2, 3),
    ("2d", (2, 3, 17, 19), 6, (5, 5), 1, 2, 1, 1),
    ("2d_tiles", (2, 33, 19, 23), 70, (3, 3), 1, 1, 1, 1),
    ("2d_stride_asym_pad", (2, 8, 15, 13), 10, (3, 4), (2, 3), ((1, 2), (0, 3)), 1, 2),
    ("2d_dilated", (1, 4, 21, 18), 5, (3, 3), 1, 2, (2, 3), 1),
    ("2d_depthwise", (2, 16, 14, 14), 16, (3, 3), 1, 1, 1, 16),
    ("2d_1x1", (2, 40, 9, 11), 24, (1, 1), 1, 0, 1, 1),
    ("3d", (2, 3, 9, 10, 11), 4, (3, 3, 3), 1, 1, 1, 1),
    ("3d_stride_groups", (1, 6, 11, 9, 10), 4, (3, 2, 3), 2, 1, 1, 2),
]


def _conv_cases(dtype: Any) -> List[Case]:
    suffix = "" if dtype == np.float32 else "_f64"
    cases = []
    for name, x_shape, k, kernel, stride, padding, dilation, groups in _CONV:
        geo = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        c = x_shape[1]
        w_shape = (k, c // groups) + kernel
        terms = (c // groups) * int(np.prod(kernel)) + 1

        def fwd(rng: np.random.Generator, x_shape=x_shape, w_shape=w_shape, geo=geo,
                terms=terms) -> Problem:
            x, w = _randn(rng, x_shape, dtype), _randn(rng, w_shape, dtype)
            b = _randn(rng, w_shape[:1], dtype)

            def call(x: Any, w: Any, b: Any) -> Any:
                return fc.conv(x, w, b, **geo)

            return Problem((x, w, b), call, call, terms)

        def bwd_input(rng: np.random.Generator, x_shape=x_shape, w_shape=w_shape, geo=geo,
                      kernel=kernel) -> Problem:
            w = _randn(rng, w_shape, dtype)
            y_shape = fc.conv(np.zeros(x_shape, dtype), w, **geo).shape
            dy = _randn(rng, y_shape, dtype)

            def call(dy: Any, w: Any) -> Any:
                return fc.conv_backward_input(dy, w, x_shape, **geo)

            # Each dx element gathers at most K/groups * prod(kernel) products.
            return Problem((dy, w), call, call, w_shape[0] * int(np.prod(kernel)) + 1)

        def bwd_weight(rng: np.random.Generator, x_shape=x_shape, w_shape=w_shape, geo=geo,
                       kernel=kernel) -> Problem:
            x = _randn(rng, x_shape, dtype)
            y_shape = fc.conv(x, np.zeros(w_shape, dtype), **geo).shape
            dy = _randn(rng, y_shape, dtype)

            def call(x: Any, dy: Any) -> Any:
                return fc.conv_backward_weight(x, dy, kernel, **geo)

            # Each dw element sums over N and every output position.
            return Problem((x, dy), call, call, int(np.prod((y_shape[0],) + y_shape[2:])) + 1)

        for path in CONV_PATHS:
            cases += [
                Case("conv", f"conv_{name}{suffix}@{path}", fwd, path),
                Case("conv_backward", f"conv_backward_input_{name}{suffix}@{path}", bwd_input,
                     path),
                Case("conv_backward", f"conv_backward_weight_{name}{suffix}@{path}", bwd_weight,
                     path)]
    return cases


# name, x shape, kernel, stride, padding, dilation
_UNFOLD = [
    ("1d", (2, 3, 31), (4,), 2, 1, 1),
    ("2d", (2, 5, 13, 11), (3, 3), 1, 1, 1),
    ("2d_stride_dil", (1, 3, 17, 16), (3, 2), (2, 3), ((2, 0), (1, 1)), (2, 1)),
    ("3d", (1, 2, 7, 8, 9), (2, 3, 2), 1, 1, 1),
]


def _unfold_cases() -> List[Case]:
    cases = []
    for name, x_shape, kernel, stride, padding, dilation in _UNFOLD:
        geo = dict(stride=stride, padding=padding, dilation=dilation)

        def im2col(rng: np.random.Generator, x_shape=x_shape, kernel=kernel,
                   geo=geo) -> Problem:
            # A pure copy: compared exactly.
            return Problem((_randn(rng, x_shape, np.float32),),
                           lambda x: fc.im2col(x, kernel, **geo))

        def col2im(rng: np.random.Generator, x_shape=x_shape, kernel=kernel,
                   geo=geo) -> Problem:
            cols_shape = fc.im2col(np.zeros(x_shape, np.float32), kernel, **geo).shape
            cols = _randn(rng, cols_shape, np.float32)

            def call(cols: Any) -> Any:
                return fc.col2im(cols, x_shape[2:], kernel, **geo)

            # A cell is covered by at most prod(kernel) windows.
            return Problem((cols,), call, call, int(np.prod(kernel)) + 1)

        cases += [Case("im2col", f"im2col_{name}", im2col),
                  Case("im2col", f"col2im_{name}", col2im)]
    return cases


# name, x shape, kernel, stride, padding, ceil_mode
_POOL = [
    ("1d", (2, 3, 35), (3,), 2, 1, False),
    ("2d_2x2", (2, 5, 16, 18), (2, 2), 2, 0, False),
    ("2d_3x3s2p1", (2, 4, 17, 15), (3, 3), 2, 1, False),
    ("2d_ceil", (1, 6, 13, 14), (3, 3), 2, 0, True),
    ("2d_overlap_asym", (2, 3, 12, 11), (4, 3), (1, 2), ((2, 1), (1, 0)), False),
    ("3d", (1, 3, 9, 8, 7), (2, 3, 2), 2, (1, 1, 0), True),
]


def _pool_cases() -> List[Case]:
    cases = []
    for name, x_shape, kernel, stride, padding, ceil in _POOL:
        geo = dict(stride=stride, padding=padding, ceil_mode=ceil)
        window = int(np.prod(kernel))

        def max_fwd(rng: np.random.Generator, x_shape=x_shape, kernel=kernel,
                    geo=geo) -> Problem:
            # Maxima and their indices are exact.
            return Problem((_randn(rng, x_shape, np.float32),),
                           lambda x: fc.max_pool(x, kernel, return_indices=True, **geo))

        def avg_fwd(rng: np.random.Generator, x_shape=x_shape, kernel=kernel, geo=geo,
                    window=window, include: bool = True) -> Problem:
            def call(x: Any) -> Any:
                return fc.avg_pool(x, kernel, count_include_pad=include, **geo)

            return Problem((_randn(rng, x_shape, np.float32),), call, call, window + 1)

        def max_bwd(rng: np.random.Generator, x_shape=x_shape, kernel=kernel, geo=geo,
                    window=window) -> Problem:
            x = _randn(rng, x_shape, np.float32)
            _, idx = fc.max_pool(x, kernel, return_indices=True, **geo)
            dy = _randn(rng, idx.shape, np.float32)

            def call(dy: Any, idx: Any) -> Any:
                return fc.max_pool_backward(dy, idx, x_shape)

            # Overlapping windows add several dy into one cell.
            return Problem((dy, idx), call, call, window + 1)

        def avg_bwd(rng: np.random.Generator, x_shape=x_shape, kernel=kernel, geo=geo,
                    window=window, include: bool = False) -> Problem:
            y_shape = fc.avg_pool(np.zeros(x_shape, np.float32), kernel, **geo).shape
            dy = _randn(rng, y_shape, np.float32)

            def call(dy: Any) -> Any:
                return fc.avg_pool_backward(dy, x_shape, kernel, count_include_pad=include,
                                            **geo)

            return Problem((dy,), call, call, window + 1)

        cases += [Case("pool", f"max_pool_{name}", max_fwd),
                  Case("pool", f"avg_pool_{name}", avg_fwd),
                  Case("pool", f"avg_pool_exclude_pad_{name}",
                       lambda rng, f=avg_fwd: f(rng, include=False)),
                  Case("pool_backward", f"max_pool_backward_{name}", max_bwd),
                  Case("pool_backward", f"avg_pool_backward_{name}", avg_bwd),
                  Case("pool_backward", f"avg_pool_backward_include_pad_{name}",
                       lambda rng, f=avg_bwd: f(rng, include=True))]
    return cases


def _boxes(rng: np.random.Generator, n: int, clusters: int,
           dtype: Any = np.float32) -> Tuple[np.ndarray, np.ndarray]:
    """Boxes jittered around a few objects (heavy overlaps, as a detector emits), with
    distinct scores; sides at least 1 so IoUs are well conditioned."""
    centers = rng.uniform(20, 180, size=(max(1, clusters), 2))
    sizes = rng.uniform(5, 40, size=(max(1, clusters), 2))
    which = rng.integers(0, max(1, clusters), size=n)
    cxy = centers[which] + rng.normal(0, 2, size=(n, 2))
    wh = np.maximum(sizes[which] * rng.uniform(0.8, 1.25, size=(n, 2)), 1.0)
    boxes = np.concatenate([cxy - wh / 2, cxy + wh / 2], axis=1).astype(dtype)
    scores = rng.permutation(n).astype(dtype) / max(1, n)  # distinct
    return boxes, scores


def _box_cases() -> List[Case]:
    def iou(n: int, m: int, dtype: Any = np.float32) -> Callable[[np.random.Generator], Problem]:
        def build(rng: np.random.Generator) -> Problem:
            a, _ = _boxes(rng, n, 7, dtype)
            b, _ = _boxes(rng, m, 5, dtype)
            # A few elementwise operations per IoU: a rounding bound of a few eps of 1.
            return Problem((a, b), fc.box_iou, lambda a, b: np.ones((n, m)), 16)

        return build

    def convert(in_fmt: str, out_fmt: str) -> Callable[[np.random.Generator], Problem]:
        def build(rng: np.random.Generator) -> Problem:
            boxes, _ = _boxes(rng, 257, 9)
            if in_fmt != "xyxy":
                boxes = fc.box_convert(boxes, "xyxy", in_fmt)

            def call(b: Any) -> Any:
                return fc.box_convert(b, in_fmt, out_fmt)

            return Problem((boxes,), call,
                           lambda b: np.full((len(boxes), 4), np.abs(boxes).max() * 2), 4)

        return build

    def nms(n: int, clusters: int, **kwargs: Any) -> Callable[[np.random.Generator], Problem]:
        def build(rng: np.random.Generator) -> Problem:
            boxes, scores = _boxes(rng, n, clusters)
            return Problem((boxes, scores), lambda b, s: fc.nms(b, s, 0.5, **kwargs))

        return build

    def batched(n: int, classes: int, **kwargs: Any) -> Callable[[np.random.Generator], Problem]:
        def build(rng: np.random.Generator) -> Problem:
            boxes, scores = _boxes(rng, n, max(1, n // 30))
            labels = rng.integers(0, classes, size=n).astype(np.int64)
            return Problem((boxes, scores, labels),
                           lambda b, s, lab: fc.batched_nms(b, s, lab, 0.5, **kwargs))

        return build

    def nms_edge(kind: str) -> Callable[[np.random.Generator], Problem]:
        def build(rng: np.random.Generator) -> Problem:
            boxes, scores = _boxes(rng, 600, 15)
            if kind == "ties":
                # Equal scores: the kept order must put the lower index first.
                scores = rng.choice(np.array([0.25, 0.5, 0.75], np.float32), size=600)
            else:
                boxes[:100] = boxes[0]               # identical boxes: all but one go
                boxes[100:150, 2] = boxes[100:150, 0]  # zero width: IoU 0, never suppressed
            return Problem((boxes, scores), lambda b, s: fc.nms(b, s, 0.5))

        return build

    def batched_sparse(rng: np.random.Generator) -> Problem:
        # Labels far apart and negative: no dense per-label table can hold them.
        boxes, scores = _boxes(rng, 500, 12)
        labels = rng.choice(np.array([-7, 0, 3, 10**12], np.int64), size=500)
        return Problem((boxes, scores, labels),
                       lambda b, s, lab: fc.batched_nms(b, s, lab, 0.5))

    cases = [
        Case("boxes", "box_iou_37x53", iou(37, 53)),
        Case("boxes", "box_iou_300x129_f64", iou(300, 129, np.float64)),
        Case("boxes", "box_iou_0x5", iou(0, 5)),
        Case("boxes", "box_convert_xyxy_cxcywh", convert("xyxy", "cxcywh")),
        Case("boxes", "box_convert_cxcywh_xywh", convert("cxcywh", "xywh")),
        Case("boxes", "box_convert_xywh_xyxy", convert("xywh", "xyxy")),
        Case("nms", "nms_1", nms(1, 1)),
        Case("nms", "nms_0", nms(0, 1)),
        Case("nms", "nms_200", nms(200, 8)),
        # Past one 64-bit mask word and one block of boxes in every direction.
        Case("nms", "nms_3001", nms(3001, 60)),
        Case("nms", "nms_500_thresholds", nms(500, 12, score_threshold=0.3, max_output=17)),
        Case("nms", "nms_ties", nms_edge("ties")),
        Case("nms", "nms_degenerate", nms_edge("degenerate")),
        Case("nms", "batched_nms_400_5cls", batched(400, 5)),
        Case("nms", "batched_nms_sparse_labels", batched_sparse),
        Case("nms", "batched_nms_2000_80cls", batched(2000, 80)),
        Case("nms", "batched_nms_300_max_output", batched(300, 4, score_threshold=0.2,
                                                          max_output=11)),
    ]
    if "fixed_size" in inspect.signature(fc.nms).parameters:
        # Device-side result: (indices, count); the first `count` indices are the kept ones.
        def fixed(rng: np.random.Generator) -> Problem:
            boxes, scores = _boxes(rng, 700, 20)

            def call(b: Any, s: Any) -> Any:
                if isinstance(b, np.ndarray):
                    return fc.nms(b, s, 0.5, max_output=50)
                idx, count = fc.nms(b, s, 0.5, max_output=50, fixed_size=True)
                return idx[:int(count)]

            return Problem((boxes, scores), call)

        cases.append(Case("nms", "nms_fixed_size", fixed))

    def soft(method: str, dtype: Any, **kwargs: Any) -> Callable[[np.random.Generator], Problem]:
        def build(rng: np.random.Generator) -> Problem:
            boxes, scores = _boxes(rng, 1500, 40, dtype)
            # Indices exactly; rescored scores within a few roundings (the device's exp).
            return Problem((boxes, scores),
                           lambda b, s: fc.soft_nms(b, s, method=method, **kwargs),
                           lambda b, s: (0, 1.0), 4)

        return build

    if hasattr(fc, "soft_nms"):
        cases += [Case("nms", "soft_nms_gaussian", soft("gaussian", np.float32)),
                  Case("nms", "soft_nms_linear_f64", soft("linear", np.float64,
                                                          iou_threshold=0.4)),
                  Case("nms", "soft_nms_max_output", soft("gaussian", np.float32,
                                                          score_threshold=None,
                                                          max_output=33))]
    return cases


# name, x shape, rois, output size, spatial_scale, sampling_ratio, aligned
_ROI = [
    ("2d_head", (2, 37, 13, 17), 60, (7, 7), 0.25, 2, True),
    ("2d_adaptive", (3, 5, 9, 11), 40, (3, 4), 1.0, -1, False),
    ("3d", (2, 3, 5, 6, 7), 25, (2, 3, 2), 1.0, 2, False),
]


def _rois(rng: np.random.Generator, count: int, batch: int, extent: Sequence[float],
          dtype: Any) -> np.ndarray:
    """Rois spilling past every border (x first in a row), some thinner than a cell."""
    extent = np.asarray(extent, dtype=np.float64)[::-1]
    lo = rng.uniform(-0.3, 1.3, (count, len(extent))) * extent
    size = rng.uniform(0, 0.8, (count, len(extent))) * extent
    size[::7] *= 0.01
    index = rng.integers(0, batch, (count, 1))
    return np.concatenate([index, lo, lo + size], axis=1).astype(dtype)


def _roi_cases() -> List[Case]:
    cases = []
    for name, x_shape, count, out, scale, ratio, aligned in _ROI:
        geo = dict(spatial_scale=scale, sampling_ratio=ratio, aligned=aligned)
        extent = tuple(s / scale for s in x_shape[2:])
        # Terms per output: every sample of a bin (at most a few hundred here) times its
        # corners; per input cell: every roi's samples that reach it.
        terms = 64 * 2 ** (len(x_shape) - 2)

        for dtype in (np.float32, np.float64):
            suffix = "" if dtype == np.float32 else "_f64"

            def align(rng: np.random.Generator, x_shape=x_shape, count=count, out=out,
                      geo=geo, extent=extent, dtype=dtype) -> Problem:
                x = _randn(rng, x_shape, dtype)
                rois = _rois(rng, count, x_shape[0], extent, dtype)

                def call(x: Any, r: Any) -> Any:
                    return fc.roi_align(x, r, out, **geo)

                # The bound's magnitudes: the weights are >= 0, so |x| through the same
                # rois (not |rois|, which would move them).
                return Problem((x, rois), call, lambda x, _: call(x, rois), terms)

            def align_bwd(rng: np.random.Generator, x_shape=x_shape, count=count, out=out,
                          geo=geo, extent=extent, dtype=dtype) -> Problem:
                dy = _randn(rng, (count, x_shape[1]) + out, dtype)
                rois = _rois(rng, count, x_shape[0], extent, dtype)

                def call(dy: Any, r: Any) -> Any:
                    return fc.roi_align_backward(dy, r, x_shape, **geo)

                return Problem((dy, rois), call, lambda dy, _: call(dy, rois), terms * count)

            def pool(rng: np.random.Generator, x_shape=x_shape, count=count, out=out,
                     scale=scale, extent=extent, dtype=dtype) -> Problem:
                x = rng.integers(-4, 5, x_shape).astype(dtype)  # ties
                rois = _rois(rng, count, x_shape[0], extent, dtype)
                return Problem((x, rois), lambda x, r: fc.roi_pool(
                    x, r, out, spatial_scale=scale, return_indices=True))

            def pool_bwd(rng: np.random.Generator, x_shape=x_shape, count=count, out=out,
                         scale=scale, extent=extent, dtype=dtype) -> Problem:
                x = _randn(rng, x_shape, dtype)
                rois = _rois(rng, count, x_shape[0], extent, dtype)
                _, idx = fc.roi_pool(x, rois, out, spatial_scale=scale, return_indices=True)
                dy = _randn(rng, idx.shape, dtype)
                # The same additions in the same order on both sides: exactly equal.
                return Problem((dy, idx, rois),
                               lambda dy, i, r: fc.roi_pool_backward(dy, i, r, x_shape))

            cases += [Case("roi", f"roi_align_{name}{suffix}", align),
                      Case("roi", f"roi_pool_{name}{suffix}", pool),
                      Case("roi_backward", f"roi_align_backward_{name}{suffix}", align_bwd),
                      Case("roi_backward", f"roi_pool_backward_{name}{suffix}", pool_bwd)]
    return cases


def all_cases() -> List[Case]:
    return (_conv_cases(np.float32) + _conv_cases(np.float64) + _unfold_cases()
            + _pool_cases() + _box_cases() + _roi_cases())


GROUPS = ("conv", "conv_backward", "im2col", "pool", "pool_backward", "boxes", "nms", "roi",
          "roi_backward")


# ------------------------------------------------------------------------------------------
# Running and checking
# ------------------------------------------------------------------------------------------

def _parts(out: Any) -> List[Any]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _bound(exact: np.ndarray, magnitude: np.ndarray, terms: int, dtype: Any) -> np.ndarray:
    """|gpu - cpu| allowed per element: each side is within (terms + 2) eps * sum|terms| of
    the exact value whatever its summation order (the classic bound), so their difference
    is within twice that; plus the smallest normal number for results that are ~0."""
    eps = np.finfo(dtype).eps
    return 2.0 * (terms + 2) * eps * np.abs(magnitude) + np.finfo(dtype).tiny


def compare(got: Any, expected: Any, magnitude: Any, terms: int) -> str:
    """'' when `got` (host arrays) matches `expected`, else what differs."""
    got_parts, exp_parts = _parts(got), _parts(expected)
    mag_parts = _parts(magnitude) if magnitude is not None else [None] * len(exp_parts)
    if len(got_parts) != len(exp_parts):
        return f"{len(got_parts)} outputs, expected {len(exp_parts)}"
    for i, (g, e, m) in enumerate(zip(got_parts, exp_parts, mag_parts)):
        g, e = np.asarray(g), np.asarray(e)
        if g.shape != e.shape or g.dtype != e.dtype:
            return f"output {i}: {g.dtype}{g.shape}, expected {e.dtype}{e.shape}"
        if e.dtype.kind != "f" or m is None:
            bad = np.flatnonzero(~((g == e) | (np.isnan(g) & np.isnan(e)))
                                 if e.dtype.kind == "f" else g != e)
            if bad.size:
                j = bad[0]
                return (f"output {i}: {bad.size} of {e.size} entries differ, first at flat "
                        f"{j}: {g.flat[j]} != {e.flat[j]}")
            continue
        err = np.abs(g.astype(np.float64) - e.astype(np.float64))
        bound = _bound(e, np.asarray(m, dtype=np.float64), terms, e.dtype)
        if not np.all(err <= bound):  # also catches NaN
            j = int(np.argmax(np.where(np.isnan(err), np.inf, err - bound)))
            return (f"output {i}: {int(np.count_nonzero(~(err <= bound)))} of {e.size} entries "
                    f"off, worst at flat {j}: |{g.flat[j]} - {e.flat[j]}| = {err.flat[j]:.3e} "
                    f"> bound {bound.flat[j]:.3e}")
    return ""


class Device:
    """How a case's inputs go to the side under test and its outputs come back."""

    def __init__(self, cpu_dry_run: bool) -> None:
        self.cpu = cpu_dry_run
        if cpu_dry_run:
            self.stream = None
            return
        import cupy

        self.cupy = cupy
        # Every array its own cudaMalloc, so memcheck sees the exact extent of each.
        cupy.cuda.set_allocator(None)
        cupy.cuda.set_pinned_memory_allocator(None)
        self.stream = cupy.cuda.Stream(non_blocking=True)

    def run(self, problem: Problem, conv_path: Optional[str] = None) -> List[np.ndarray]:
        if self.cpu:
            return [np.array(p) for p in _parts(problem.call(*problem.inputs))]
        from fastconv import _cuda

        previous = _cuda._set_conv_path(conv_path or "auto")
        try:
            return self._run_on_gpu(problem)
        finally:
            _cuda._set_conv_path(previous)

    def _run_on_gpu(self, problem: Problem) -> List[np.ndarray]:
        cupy = self.cupy
        with self.stream:
            dev = tuple(cupy.asarray(a) if isinstance(a, np.ndarray) else a
                        for a in problem.inputs)
            out = _parts(problem.call(*dev))
            for i, part in enumerate(out):
                if not isinstance(part, cupy.ndarray):
                    raise TypeError(f"output {i} is a {type(part).__name__}, not a "
                                    "cupy.ndarray: GPU results must stay on the GPU")
            host = [cupy.asnumpy(p, stream=self.stream) for p in out]
        self.stream.synchronize()
        return host


def run_case(case: Case, device: Device, seed: int) -> str:
    """'' if the GPU and the CPU agree (or both refuse the input alike), else why not."""
    problem = case.build(np.random.default_rng(seed))
    try:
        expected = problem.call(*problem.inputs)
    except (ValueError, TypeError) as cpu_error:
        try:
            device.run(problem, case.conv_path)
        except type(cpu_error):
            return ""
        except Exception as exc:  # noqa: BLE001 - reported, not hidden
            return (f"CPU raised {type(cpu_error).__name__} ({cpu_error}) but GPU raised "
                    f"{type(exc).__name__}: {exc}")
        return f"CPU raised {type(cpu_error).__name__} ({cpu_error}) but the GPU returned"
    magnitude = None
    if problem.magnitude is not None:
        magnitude = problem.magnitude(*_abs_inputs(problem.inputs))
    got = device.run(problem, case.conv_path)
    return compare(got, expected, magnitude, problem.terms)


def select(cases: Sequence[Case], only: Optional[str],
           conv_paths: Optional[str] = None) -> List[Case]:
    """Cases whose group or name prefix is in the comma list `only` (all when None), the
    convolutions only on the comma list `conv_paths` of CUDA paths (all when None)."""
    if conv_paths:
        paths = [p.strip() for p in conv_paths.split(",") if p.strip()]
        unknown = [p for p in paths if p not in CONV_PATHS]
        if unknown:
            raise SystemExit(f"gpu_sanitize: --conv-paths {','.join(unknown)}: no such path; "
                             f"paths: {', '.join(CONV_PATHS)}")
        cases = [c for c in cases if c.conv_path is None or c.conv_path in paths]
    if not only:
        return list(cases)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    unknown = [w for w in wanted
               if w not in GROUPS and not any(c.name.startswith(w) for c in cases)]
    if unknown:
        raise SystemExit(f"gpu_sanitize: --only {','.join(unknown)} matches no group or case; "
                         f"groups: {', '.join(GROUPS)}")
    return [c for c in cases if c.group in wanted or any(c.name.startswith(w) for w in wanted)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gpu_sanitize.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", metavar="LIST",
                        help=f"comma list of groups ({', '.join(GROUPS)}) or case-name "
                             "prefixes; default: every case")
    parser.add_argument("--conv-paths", metavar="LIST",
                        help=f"comma list of CUDA conv paths ({', '.join(CONV_PATHS)}) the "
                             "conv cases run on; default: every path")
    parser.add_argument("--list", action="store_true", help="print the cases and exit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="run both sides on the CPU (checks this script, not kernels)")
    args = parser.parse_args(argv)
    cases = select(all_cases(), args.only, args.conv_paths)
    if args.list:
        for case in cases:
            print(f"{case.group:14} {case.name}")
        return 0
    if not args.cpu_dry_run and not fc.cuda.is_available():
        print(f"gpu_sanitize: no GPU to check: {fc.cuda.reason()}", file=sys.stderr)
        return 2
    device = Device(args.cpu_dry_run)
    failures = 0
    for i, case in enumerate(cases):
        try:
            problem_error = run_case(case, device, args.seed + i)
        except Exception:  # noqa: BLE001 - one broken op must not hide the others
            problem_error = "raised:\n    " + traceback.format_exc().strip().replace(
                "\n", "\n    ")
        status = "ok  " if not problem_error else "FAIL"
        failures += bool(problem_error)
        print(f"{status} {case.group:14} {case.name}" + (f": {problem_error}"
                                                         if problem_error else ""), flush=True)
    print(f"gpu_sanitize: {len(cases) - failures} of {len(cases)} cases match the CPU"
          + (" (CPU dry run)" if args.cpu_dry_run else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
