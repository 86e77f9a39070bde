"""RoI align and RoI pool (and their gradients) on NumPy or CuPy arrays, 2-D and 3-D.

Semantics are torchvision's kernels (DESIGN.md 3c; the per-axis rules are written out in
cpp/include/fastconv/roi.hpp and, in NumPy, in `fastconv.reference.roi_align`). x is
(N, C, H, W) or (N, C, D, H, W); rois is an (R, 5) array of (batch index, x1, y1, x2, y2)
(3-D: (R, 7) of (batch index, x1, y1, z1, x2, y2, z2)) in input coordinates before
spatial_scale, or a list of per-image (L, 4) (3-D: (L, 6)) box arrays, image i taking batch
index i. rois of any float dtype are cast to x's dtype. The result is (R, C, *output_size).

`roi_plan(kind, x_shape, dtype, device, **geometry)` validates the geometry once ("align" or
"pool"); its `rois` normalizes a rois argument and `forward` / `backward` run the kernels.
The kernels check every roi row (batch index an integer in [0, N), finite, not inverted)
and raise ValueError naming the first bad row. On the GPU that check reads one flag back
(one stream synchronization per call).

Both backward passes are deterministic on every device (the same bits on every run and for
any thread count): the CPU gathers each input cell's terms in a fixed order (no atomics),
the GPU gathers per cell (align) or sorts the recorded positions (pool).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from .._backend import (PlanBase, PlanCache, array_module, checked_shape, device_of, dtype_key,
                        float_arrays, full_shape, index_array, is_gpu)
from .._geometry import as_int, as_real, as_tuple, check_extents

KINDS = ("align", "pool")
Size = Union[int, Sequence[int]]
Rois = Union[Any, Sequence[Any]]


def _scale(op: str, value: object) -> float:
    scale = as_real(op, "spatial_scale", value)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{op}: spatial_scale must be finite and positive, got {scale}")
    return scale


def _sampling_ratio(op: str, value: object) -> int:
    ratio = as_int(value, f"{op}: sampling_ratio")
    if ratio >= 2**31:
        raise ValueError(f"{op}: sampling_ratio must be below 2^31, got {ratio}")
    return max(ratio, 0)  # every value <= 0 means the adaptive grid


def _output_size(op: str, value: Size, dims: int) -> Tuple[int, ...]:
    size = as_tuple(value, dims, f"{op}: output_size")
    check_extents(op, "output_size", size)
    return size


class RoiPlan(PlanBase):
    """A validated RoI align or RoI pool geometry on x (N, C, *spatial) -> (R, C, *out)."""

    __slots__ = ("kind", "x_shape", "output_size", "spatial_scale", "sampling_ratio",
                 "aligned", "width", "_x_name")

    def __init__(self, kind: str, x_shape: Sequence[int], dtype: Any, device: str,
                 output_size: Size, spatial_scale: float, sampling_ratio: int, aligned: bool,
                 op: str, x_name: str = "x") -> None:
        super().__init__(op, dtype, device)
        if kind not in KINDS:
            raise ValueError(f"{op}: kind must be 'align' or 'pool', got {kind!r}")
        shape = checked_shape(op, x_name, x_shape, (4, 5), "(N, C, H, W) or (N, C, D, H, W)")
        self.kind = kind
        self.x_shape = shape
        self._x_name = x_name
        self.output_size = _output_size(op, output_size, len(shape) - 2)
        self.spatial_scale = _scale(op, spatial_scale)
        self.sampling_ratio = _sampling_ratio(op, sampling_ratio)
        self.aligned = bool(aligned)
        self.width = 1 + 2 * (len(shape) - 2)

    def out_shape(self, rois: Any) -> Tuple[int, ...]:
        """(R, C, *output_size) for normalized rois (R, 1 + 2 dims)."""
        return (int(rois.shape[0]), self.x_shape[1]) + self.output_size

    def rois(self, rois: Rois, op: Optional[str] = None) -> Any:
        """`rois` as a C-contiguous (R, 1 + 2 dims) array of the plan's dtype and device: an
        array of any float dtype is cast, a list of per-image (L, 2 dims) box arrays gets
        its batch-index column. Values are checked by the kernels."""
        op = op or self.op
        xp = np if self.device == "cpu" else _cupy()
        coords = self.width - 1
        if isinstance(rois, (list, tuple)):
            if len(rois) > self.x_shape[0]:
                raise ValueError(f"{op}: rois is a list of {len(rois)} per-image box arrays "
                                 f"but {self._x_name} has batch size {self.x_shape[0]} (shape "
                                 f"{self.x_shape})")
            parts = []
            for i, boxes in enumerate(rois):
                boxes = self._float_array(op, f"rois[{i}]", boxes)
                if boxes.ndim != 2 or boxes.shape[1] != coords:
                    raise ValueError(f"{op}: rois[{i}] must have shape (L, {coords}) for "
                                     f"{self._x_name} shape {self.x_shape}, got shape "
                                     f"{boxes.shape}")
                index = xp.full((boxes.shape[0], 1), i, dtype=self.dtype)
                parts.append(xp.concatenate([index, boxes.astype(self.dtype, copy=False)], 1))
            if not parts:
                return xp.empty((0, self.width), dtype=self.dtype)
            return xp.ascontiguousarray(xp.concatenate(parts, 0))
        rois = self._float_array(op, "rois", rois)
        if rois.ndim != 2 or rois.shape[1] != self.width:
            raise ValueError(f"{op}: rois must have shape (R, {self.width}) for {self._x_name} "
                             f"shape {self.x_shape}, got shape {rois.shape}")
        return xp.ascontiguousarray(rois, dtype=self.dtype)

    def _float_array(self, op: str, name: str, a: Any) -> Any:
        gpu = is_gpu(a)
        if gpu != (self.device == "cuda"):
            where, other = ("on the GPU", "in host memory") if gpu else ("in host memory",
                                                                         "on the GPU")
            raise TypeError(f"{op}: {name} is {where} but {self._x_name} is {other}; pass "
                            "all NumPy arrays or all GPU arrays")
        if gpu:
            a = _cupy().asarray(a)
        elif not isinstance(a, np.ndarray):
            raise TypeError(f"{op}: {name} must be a numpy.ndarray (or a list of them), got "
                            f"{type(a).__name__}")
        if a.dtype.kind != "f":
            raise TypeError(f"{op}: {name} must have a float dtype, got {a.dtype} "
                            f"(shape {a.shape})")
        return a

    def forward(self, x: Any, rois: Any, return_indices: bool = False) -> Any:
        """(R, C, *output_size) for x and normalized rois (see `rois`); RoI pool with
        `return_indices` also gives the int64 flat cells of the maxima."""
        x = self.operand("x", x, self.x_shape, f"roi_{self.kind}")
        y = self.empty(self.out_shape(rois))
        if self.kind == "align":
            self.kernels.roi_align_forward(x, rois, y, list(self.output_size), self.spatial_scale,
                                           self.sampling_ratio, self.aligned)
            return y
        indices = self.empty(y.shape, np.int64) if return_indices else None
        self.kernels.roi_pool_forward(x, rois, y, indices, list(self.output_size),
                                      self.spatial_scale)
        return (y, indices) if return_indices else y

    def backward(self, dy: Any, rois: Any, indices: Optional[Any] = None) -> Any:
        """dx (N, C, *spatial) from dy (R, C, *output_size) and normalized rois; RoI pool
        needs the indices of its forward pass."""
        op = f"roi_{self.kind}_backward"
        dy = self.operand("dy", dy, self.out_shape(rois), op)
        dx = self.empty(self.x_shape)
        if self.kind == "align":
            self.kernels.roi_align_backward(dy, rois, dx, self.spatial_scale,
                                            self.sampling_ratio, self.aligned)
            return dx
        if indices is None:
            raise TypeError(f"{op}: RoI pool's backward needs the indices of the forward pass")
        indices = index_array(op, "indices", indices, like=dy)
        if indices.shape != dy.shape:
            raise ValueError(f"{op}: indices has shape {indices.shape} but dy has shape "
                             f"{dy.shape}")
        indices = array_module(dy).ascontiguousarray(indices, dtype=np.int64)
        self.kernels.roi_pool_backward(dy, indices, rois, dx)
        return dx


def _cupy() -> Any:
    import cupy

    return cupy


_PLANS = PlanCache()


def roi_plan(kind: str, x_shape: Sequence[int], dtype: Any, device: str = "cpu", *,
             output_size: Size, spatial_scale: float = 1.0, sampling_ratio: int = -1,
             aligned: bool = False, op: Optional[str] = None, x_name: str = "x") -> RoiPlan:
    """The (cached) plan of RoI `kind` ("align" or "pool") over x (N, C, *spatial);
    arguments as `roi_align` / `roi_pool` (pool ignores sampling_ratio and aligned). `op`
    and `x_name` name things in errors."""
    op = op or f"roi_{kind}"
    # Normalized first so that the key is plain: the scale enters as its exact hex string.
    dims = len(tuple(x_shape)) - 2
    size = _output_size(op, output_size, dims) if dims in (2, 3) else output_size
    scale = _scale(op, spatial_scale)
    ratio = _sampling_ratio(op, sampling_ratio) if kind == "align" else 0
    flag = int(bool(aligned)) if kind == "align" else 0
    key = (kind, tuple(x_shape), dtype_key(dtype), device, size, scale.hex(), ratio, flag, op,
           x_name)
    return _PLANS.get(key, lambda: RoiPlan(kind, x_shape, dtype, device, size, scale, ratio,
                                           bool(flag), op, x_name))


def _plan_for(kind: str, op: str, x: Any, output_size: Size, spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> Tuple[RoiPlan, Any]:
    (x,) = float_arrays(op, x=x)
    return roi_plan(kind, x.shape, x.dtype, device_of(x), output_size=output_size,
                    spatial_scale=spatial_scale, sampling_ratio=sampling_ratio,
                    aligned=aligned, op=op), x


def _backward_plan(kind: str, op: str, dy: Any, input_shape: Sequence[int], **geometry: Any
                   ) -> Tuple[RoiPlan, Any]:
    (dy,) = float_arrays(op, dy=dy)
    if dy.ndim not in (4, 5):
        raise ValueError(f"{op}: dy must be (R, C, *output_size) with 2 or 3 spatial dims, "
                         f"got shape {dy.shape}")
    shape = full_shape(op, "input_shape", input_shape, dy.ndim)
    plan = roi_plan(kind, shape, dy.dtype, device_of(dy), output_size=dy.shape[2:], op=op,
                    x_name="input_shape", **geometry)
    return plan, dy


def roi_align(x: Any, rois: Rois, output_size: Size, *, spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> Any:
    """RoI align (Mask R-CNN): each roi cut into output_size bins, each bin the average of a
    grid of bilinear samples. Returns (R, C, *output_size).

    sampling_ratio > 0 samples that many points per bin and axis; <= 0 takes
    ceil(roi size / output size) per axis (after spatial_scale). Samples outside
    [-1, size] count as zero. aligned=True shifts the roi by -0.5 pixel (pixel centres at
    integer + 0.5) and lets rois be smaller than one pixel; aligned=False stretches them
    to at least 1.
    """
    plan, x = _plan_for("align", "roi_align", x, output_size, spatial_scale, sampling_ratio,
                        aligned)
    return plan.forward(x, plan.rois(rois))


def roi_align_backward(dy: Any, rois: Rois, input_shape: Sequence[int], *,
                       spatial_scale: float = 1.0, sampling_ratio: int = -1,
                       aligned: bool = False) -> Any:
    """Gradient of `roi_align` with respect to x (its exact adjoint): dy (R, C, *output_size)
    -> dx of shape input_shape (N, C, *spatial). Deterministic."""
    op = "roi_align_backward"
    plan, dy = _backward_plan("align", op, dy, input_shape, spatial_scale=spatial_scale,
                              sampling_ratio=sampling_ratio, aligned=aligned)
    return plan.backward(dy, plan.rois(rois, op))


def roi_pool(x: Any, rois: Rois, output_size: Size, *, spatial_scale: float = 1.0,
             return_indices: bool = False) -> Any:
    """RoI max pooling (Fast R-CNN): the roi rounded to whole cells (half away from zero)
    and cut into output_size bins of floor/ceil edges; each bin gives its maximum (0 for an
    empty bin). With return_indices also returns int64 flat offsets of the maxima in their
    (batch index, c) plane (h * W + w; -1 for empty bins). Values must exceed -FLT_MAX
    (float32's lowest) to win, as in torchvision; ties go to the first in scan order."""
    plan, x = _plan_for("pool", "roi_pool", x, output_size, spatial_scale)
    return plan.forward(x, plan.rois(rois), return_indices)


def roi_pool_backward(dy: Any, indices: Any, rois: Rois, input_shape: Sequence[int]) -> Any:
    """Gradient of `roi_pool` with respect to x: dy (R, C, *output_size) added at `indices`
    (as roi_pool returned them) in the plane of each roi's image. Deterministic."""
    op = "roi_pool_backward"
    plan, dy = _backward_plan("pool", op, dy, input_shape)
    return plan.backward(dy, plan.rois(rois, op), indices)
