"""Benchmark cases: every op on the layer shapes of the classic networks.

Shared by the CLI runner (`python -m fastconv bench`, see `bench.py`) and the
pytest-benchmark suite in `benchmarks/`, so both time exactly the same problems.

A `Case` is cheap to list; its `setup` builds the arrays (lazily, since the full set
would not fit in memory at once) and returns a `Problem`: the inputs, the fastconv call,
the NumPy reference call (the "numpy" baseline and the oracle), an optional PyTorch
equivalent, and the work done (FLOPs or bytes) for the throughput column.

Geometry is normalized once with `make_window`, so fastconv receives explicit
(before, after) padding pairs and the reference receives the same explicit tuples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

import numpy as np

import fastconv
from . import reference
from ._geometry import Window, make_window

Ints = Tuple[int, ...]
# (torch module, the inputs as tensors) -> the call to time.
TorchFactory = Callable[[Any, Tuple[Any, ...]], Callable[[], Any]]

MODES = ("smoke", "quick", "full")
OPS = (
    "conv", "conv_backward_input", "conv_backward_weight", "im2col", "col2im",
    "max_pool", "avg_pool", "max_pool_backward", "avg_pool_backward",
    "box_iou", "box_convert", "nms", "batched_nms",
)


@dataclass
class Problem:
    """One benchmark problem with its inputs built.

    `exact` cases (NMS indices) are checked against the reference on the very same inputs
    and report index mismatches; the others are checked against the reference evaluated
    in float64 and report a relative error.
    """

    inputs: Tuple[Any, ...]
    fastconv: Callable[..., Any]
    numpy: Callable[..., Any]
    torch: Optional[TorchFactory]
    work: float
    unit: str  # "GFLOP/s", "GB/s", or "" when no throughput figure is meaningful
    exact: bool = False


@dataclass(frozen=True)
class Case:
    """A named benchmark problem: op, case name, shape summary, and the modes it runs in."""

    op: str
    name: str
    shape: str
    modes: FrozenSet[str]
    setup: Callable[[np.random.Generator], Problem]

    @property
    def id(self) -> str:
        """Stable id for pytest and the JSON output."""
        return f"{self.op}[{self.name}]"


def _ref(name: str) -> Callable[..., Any]:
    """`reference.<name>`, or a stand-in raising NotImplementedError while the op's
    reference has not landed, so the case reports "n/a" instead of failing."""
    func = getattr(reference, name, None)
    if func is not None:
        return func

    def missing(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"fastconv.reference.{name} is not available")

    return missing


def _randn(rng: np.random.Generator, shape: Sequence[int], dtype: Any) -> np.ndarray:
    return rng.standard_normal(tuple(shape), dtype=np.dtype(dtype).type)


def _nbytes(*arrays_or_counts: Any) -> float:
    return float(sum(a.nbytes for a in arrays_or_counts))


def _pairs(win: Window) -> Tuple[Tuple[int, int], ...]:
    return tuple(zip(win.pad_before, win.pad_after))


def _torch_pad(torch: Any, x: Any, win: Window) -> Tuple[Any, Ints]:
    """Torch convs and pools take symmetric padding only: pad asymmetric windows by hand
    (F.pad lists the last dim first) and pass zero padding to the op instead."""
    if win.pad_before == win.pad_after:
        return x, win.pad_before
    widths: List[int] = []
    for b, a in zip(reversed(win.pad_before), reversed(win.pad_after)):
        widths += [b, a]
    return torch.nn.functional.pad(x, widths), (0,) * len(win.kernel)


def _conv_flops(n: int, k: int, c_per_group: int, win: Window) -> float:
    return 2.0 * n * k * c_per_group * float(np.prod(win.kernel)) * float(np.prod(win.out_size))


# ----------------------------------------------------------------------------------------
# Convolution and its gradients
# ----------------------------------------------------------------------------------------

def _conv_setup(op: str, n: int, c: int, k: int, size: Ints, kernel: Ints, stride: int,
                padding: int, groups: int, dtype: Any) -> Callable[[np.random.Generator], Problem]:
    def setup(rng: np.random.Generator) -> Problem:
        win = make_window(op, size, kernel, stride, padding)
        x_shape = (n, c) + size
        geo = dict(stride=win.stride, padding=_pairs(win), dilation=win.dilation, groups=groups)
        ref_geo = (win.stride, win.pad_before, win.pad_after, win.dilation, groups)
        flops = _conv_flops(n, k, c // groups, win)
        conv_nd = f"conv{len(size)}d"

        def torch_conv(torch: Any, x: Any, w: Any, b: Any = None) -> Any:
            xp, pad = _torch_pad(torch, x, win)
            return getattr(torch.nn.functional, conv_nd)(xp, w, b, win.stride, pad,
                                                         win.dilation, groups)

        w = _randn(rng, (k, c // groups) + kernel, dtype)
        if op == "conv":
            x = _randn(rng, x_shape, dtype)
            bias = _randn(rng, (k,), dtype)

            def torch_fwd(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
                return lambda: torch_conv(torch, *t)

            return Problem(
                (x, w, bias),
                lambda x, w, b: fastconv.conv(x, w, b, **geo),
                lambda x, w, b: _ref("conv")(x, w, b, *ref_geo),
                torch_fwd, flops, "GFLOP/s")

        dy = _randn(rng, (n, k) + win.out_size, dtype)
        if op == "conv_backward_input":
            def torch_dx(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
                dy_t, w_t = t
                x_t = torch.zeros(x_shape, dtype=w_t.dtype, requires_grad=True)
                y_t = torch_conv(torch, x_t, w_t)
                # The graph is built once; only the backward pass is timed.
                return lambda: torch.autograd.grad(y_t, x_t, dy_t, retain_graph=True)[0]

            return Problem(
                (dy, w),
                lambda dy, w: fastconv.conv_backward_input(dy, w, x_shape, **geo),
                lambda dy, w: _ref("conv_backward_input")(dy, w, x_shape, *ref_geo),
                torch_dx, flops, "GFLOP/s")

        x = _randn(rng, x_shape, dtype)

        def torch_dw(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
            x_t, dy_t = t
            w_t = torch.zeros((k, c // groups) + kernel, dtype=x_t.dtype, requires_grad=True)
            y_t = torch_conv(torch, x_t, w_t)
            return lambda: torch.autograd.grad(y_t, w_t, dy_t, retain_graph=True)[0]

        return Problem(
            (x, dy),
            lambda x, dy: fastconv.conv_backward_weight(x, dy, kernel, **geo),
            lambda x, dy: _ref("conv_backward_weight")(x, dy, kernel, *ref_geo),
            torch_dw, flops, "GFLOP/s")

    return setup


# name, batch (full, quick), C, K, spatial size, kernel, stride, padding, groups, dtype,
# and whether the backward ops also run it in --quick.
_CONV_LAYERS = [
    ("lenet5_c1", (64, 64), 1, 6, (32, 32), (5, 5), 1, 0, 1, np.float32, True),
    ("alexnet_conv1", (1, 1), 3, 64, (224, 224), (11, 11), 4, 2, 1, np.float32, False),
    ("vgg16_conv5", (8, 1), 512, 512, (14, 14), (3, 3), 1, 1, 1, np.float32, False),
    ("resnet50_stem", (8, 1), 3, 64, (224, 224), (7, 7), 2, 3, 1, np.float32, False),
    ("resnet50_3x3", (8, 1), 64, 64, (56, 56), (3, 3), 1, 1, 1, np.float32, True),
    ("resnet_3x3_128", (8, 1), 128, 128, (28, 28), (3, 3), 1, 1, 1, np.float32, False),
    ("resnet50_1x1", (8, 1), 256, 64, (56, 56), (1, 1), 1, 0, 1, np.float32, False),
    ("inception_5x5", (8, 1), 192, 32, (28, 28), (5, 5), 1, 2, 1, np.float32, False),
    ("depthwise_3x3", (8, 1), 256, 256, (28, 28), (3, 3), 1, 1, 256, np.float32, True),
    # 3-D: the float64 reference materializes N*C*27*32^3 windows (0.9 GB at batch 8).
    ("conv3d_3x3x3", (8, 1), 16, 32, (32, 32, 32), (3, 3, 3), 1, 1, 1, np.float32, True),
    ("conv1d_k7", (8, 1), 64, 64, (4096,), (7,), 1, 3, 1, np.float32, True),
    ("resnet50_3x3_f64", (8, 1), 64, 64, (56, 56), (3, 3), 1, 1, 1, np.float64, False),
    ("resnet50_1x1_f64", (8, 1), 256, 64, (56, 56), (1, 1), 1, 0, 1, np.float64, False),
    ("conv1d_k7_f64", (8, 1), 64, 64, (4096,), (7,), 1, 3, 1, np.float64, False),
]

_CONV_SMOKE = ("smoke_2d", 2, 4, 8, (12, 12), (3, 3), 1, 1, 1, np.float32)


def _shape_text(n: int, c: int, k: int, size: Ints, kernel: Ints, stride: int, padding: int,
                groups: int, dtype: Any) -> str:
    text = (f"{n}x{c}x{'x'.join(map(str, size))} -> {k}, "
            f"k{'x'.join(map(str, kernel))}/{stride} p{padding}")
    if groups > 1:
        text += f" g{groups}"
    if np.dtype(dtype) != np.float32:
        text += f" {np.dtype(dtype).name}"
    return text


def _conv_cases() -> List[Case]:
    cases = []
    for op in ("conv", "conv_backward_input", "conv_backward_weight"):
        for (name, (n_full, n_quick), c, k, size, kernel, stride, padding, groups, dtype,
             quick_backward) in _CONV_LAYERS:
            variants = [("full", n_full)]
            if op == "conv" or quick_backward:
                variants.append(("quick", n_quick))
            for mode, n in variants:
                cases.append(Case(
                    op, name, _shape_text(n, c, k, size, kernel, stride, padding, groups, dtype),
                    frozenset({mode}),
                    _conv_setup(op, n, c, k, size, kernel, stride, padding, groups, dtype)))
        name, n, c, k, size, kernel, stride, padding, groups, dtype = _CONV_SMOKE
        cases.append(Case(op, name,
                          _shape_text(n, c, k, size, kernel, stride, padding, groups, dtype),
                          frozenset({"smoke"}),
                          _conv_setup(op, n, c, k, size, kernel, stride, padding, groups, dtype)))
    return cases


# ----------------------------------------------------------------------------------------
# im2col / col2im
# ----------------------------------------------------------------------------------------

def _unfold_setup(op: str, n: int, c: int, size: Ints, kernel: Ints, stride: int,
                  padding: int) -> Callable[[np.random.Generator], Problem]:
    def setup(rng: np.random.Generator) -> Problem:
        win = make_window(op, size, kernel, stride, padding)
        geo = dict(stride=win.stride, padding=_pairs(win), dilation=win.dilation)
        ref_geo = (win.stride, win.pad_before, win.pad_after, win.dilation)
        rows, positions = c * int(np.prod(kernel)), int(np.prod(win.out_size))
        two_d = len(size) == 2
        # F.unfold/F.fold take symmetric padding only.
        torch_ok = two_d and win.pad_before == win.pad_after
        x_bytes = 4.0 * n * c * int(np.prod(size))
        cols_bytes = 4.0 * n * rows * positions
        if op == "im2col":
            x = _randn(rng, (n, c) + size, np.float32)

            def torch_unfold(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
                return lambda: torch.nn.functional.unfold(t[0], kernel, win.dilation,
                                                          win.pad_before, win.stride)

            return Problem(
                (x,),
                lambda x: fastconv.im2col(x, kernel, **geo),
                lambda x: _ref("im2col")(x, kernel, *ref_geo),
                torch_unfold if torch_ok else None, x_bytes + cols_bytes, "GB/s")

        cols = _randn(rng, (n, rows, positions), np.float32)

        def torch_fold(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
            return lambda: torch.nn.functional.fold(t[0], size, kernel, win.dilation,
                                                    win.pad_before, win.stride)

        return Problem(
            (cols,),
            lambda cols: fastconv.col2im(cols, size, kernel, **geo),
            lambda cols: _ref("col2im")(cols, size, kernel, *ref_geo),
            torch_fold if torch_ok else None, x_bytes + cols_bytes, "GB/s")

    return setup


# name, batch (full, quick), C, size, kernel, stride, padding
_UNFOLD_LAYERS = [
    ("resnet50_3x3", (8, 1), 64, (56, 56), (3, 3), 1, 1),
    ("alexnet_conv1", (1, 1), 3, (224, 224), (11, 11), 4, 2),
    ("vgg16_conv5", (8, 1), 512, (14, 14), (3, 3), 1, 1),
    ("conv3d_3x3x3", (2, 1), 16, (32, 32, 32), (3, 3, 3), 1, 1),
    ("conv1d_k7", (8, 1), 64, (4096,), (7,), 1, 3),
]


def _unfold_cases() -> List[Case]:
    cases = []
    for op in ("im2col", "col2im"):
        for name, (n_full, n_quick), c, size, kernel, stride, padding in _UNFOLD_LAYERS:
            for mode, n in (("full", n_full), ("quick", n_quick)):
                shape = _shape_text(n, c, c, size, kernel, stride, padding, 1, np.float32)
                cases.append(Case(op, name, shape.replace(f" -> {c}", ""), frozenset({mode}),
                                  _unfold_setup(op, n, c, size, kernel, stride, padding)))
        cases.append(Case(op, "smoke_2d", "2x4x12x12, k3x3/1 p1", frozenset({"smoke"}),
                          _unfold_setup(op, 2, 4, (12, 12), (3, 3), 1, 1)))
    return cases


# ----------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------

def _pool_setup(op: str, x_shape: Ints, kernel: Ints, stride: int, padding: int,
                ceil_mode: bool = False) -> Callable[[np.random.Generator], Problem]:
    def setup(rng: np.random.Generator) -> Problem:
        win = make_window(op, x_shape[2:], kernel, stride, padding, ceil_mode=ceil_mode,
                          pool=True)
        y_shape = x_shape[:2] + win.out_size
        geo = dict(stride=win.stride, padding=_pairs(win), ceil_mode=ceil_mode)
        ref_geo = (win.stride, win.pad_before, win.pad_after, ceil_mode)
        fn_name = f"{'max' if op.startswith('max') else 'avg'}_pool{len(kernel)}d"
        x = _randn(rng, x_shape, np.float32)
        x_bytes, y_bytes = float(x.nbytes), 4.0 * int(np.prod(y_shape))
        idx_bytes = 8.0 * int(np.prod(y_shape))
        # Torch pools take symmetric padding only.
        torch_ok = win.pad_before == win.pad_after

        def torch_pool(torch: Any, x_t: Any, **kwargs: Any) -> Any:
            return getattr(torch.nn.functional, fn_name)(x_t, kernel, win.stride, win.pad_before,
                                                         ceil_mode=ceil_mode, **kwargs)

        def torch_grad(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
            x_t = torch.from_numpy(x).requires_grad_(True)
            y_t = torch_pool(torch, x_t)
            return lambda: torch.autograd.grad(y_t, x_t, t[0], retain_graph=True)[0]

        if op == "max_pool":
            def torch_max(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
                return lambda: torch_pool(torch, t[0], return_indices=True)

            return Problem(
                (x,),
                lambda x: fastconv.max_pool(x, kernel, return_indices=True, **geo),
                lambda x: _ref("max_pool")(x, kernel, *ref_geo),
                torch_max if torch_ok else None, x_bytes + y_bytes + idx_bytes, "GB/s")
        if op == "avg_pool":
            def torch_avg(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
                return lambda: torch_pool(torch, t[0])

            return Problem(
                (x,),
                lambda x: fastconv.avg_pool(x, kernel, **geo),
                lambda x: _ref("avg_pool")(x, kernel, *ref_geo, True),
                torch_avg if torch_ok else None, x_bytes + y_bytes, "GB/s")

        dy = _randn(rng, y_shape, np.float32)
        if op == "max_pool_backward":
            # The indices come from the oracle, so both sides scatter the same windows.
            _, indices = _ref("max_pool")(x, kernel, *ref_geo)
            return Problem(
                (dy, indices),
                lambda dy, idx: fastconv.max_pool_backward(dy, idx, x_shape),
                lambda dy, idx: _ref("max_pool_backward")(dy, idx, x_shape),
                torch_grad if torch_ok else None, y_bytes + idx_bytes + x_bytes, "GB/s")
        return Problem(
            (dy,),
            lambda dy: fastconv.avg_pool_backward(dy, x_shape, kernel, **geo),
            lambda dy: _ref("avg_pool_backward")(dy, x_shape, kernel, *ref_geo, True),
            torch_grad if torch_ok else None, y_bytes + x_bytes, "GB/s")

    return setup


# name, x shape (full), x shape (quick), kernel, stride, padding, ceil_mode
_POOL_LAYERS = [
    ("vgg_2x2", (8, 64, 112, 112), (1, 64, 112, 112), (2, 2), 2, 0, False),
    ("resnet_3x3s2", (8, 64, 112, 112), (1, 64, 112, 112), (3, 3), 2, 1, False),
    ("inception_3x3s2_ceil", (8, 192, 56, 56), (1, 192, 56, 56), (3, 3), 2, 0, True),
    # As many elements as the 2-D layers above (6.4 M per batch of 8).
    ("pool3d_2x2x2", (8, 32, 16, 56, 56), (1, 32, 16, 56, 56), (2, 2, 2), 2, 0, False),
]


def _pool_cases() -> List[Case]:
    cases = []
    for op in ("max_pool", "avg_pool", "max_pool_backward", "avg_pool_backward"):
        for name, full, quick, kernel, stride, padding, ceil in _POOL_LAYERS:
            for mode, shape in (("full", full), ("quick", quick)):
                text = (f"{'x'.join(map(str, shape))}, k{'x'.join(map(str, kernel))}/{stride}"
                        f" p{padding}{' ceil' if ceil else ''}")
                cases.append(Case(op, name, text, frozenset({mode}),
                                  _pool_setup(op, shape, kernel, stride, padding, ceil)))
        cases.append(Case(op, "smoke_2d", "2x3x10x10, k3x3/2 p1", frozenset({"smoke"}),
                          _pool_setup(op, (2, 3, 10, 10), (3, 3), 2, 1)))
    return cases


# ----------------------------------------------------------------------------------------
# Boxes
# ----------------------------------------------------------------------------------------

def clustered_boxes(rng: np.random.Generator, count: int, clusters: int,
                    dtype: Any = np.float32) -> Tuple[np.ndarray, np.ndarray]:
    """`count` xyxy boxes jittered around `clusters` objects in a 1000x1000 image, as a
    detector emits them (many heavy overlaps per object), with random scores."""
    centers = rng.uniform(50, 950, size=(clusters, 2))
    sizes = rng.uniform(20, 120, size=(clusters, 2))
    which = rng.integers(0, clusters, size=count)
    cxy = centers[which] + rng.normal(0, 6, size=(count, 2))
    wh = sizes[which] * rng.uniform(0.8, 1.25, size=(count, 2))
    boxes = np.concatenate([cxy - wh / 2, cxy + wh / 2], axis=1).astype(dtype)
    return boxes, rng.uniform(0, 1, size=count).astype(dtype)


def _iou_setup(n: int, m: int) -> Callable[[np.random.Generator], Problem]:
    def setup(rng: np.random.Generator) -> Problem:
        a, _ = clustered_boxes(rng, n, max(1, n // 20))
        b, _ = clustered_boxes(rng, m, max(1, m // 20))
        return Problem((a, b), fastconv.box_iou, _ref("box_iou"), None,
                       _nbytes(a, b) + 4.0 * n * m, "GB/s")

    return setup


def _convert_setup(n: int) -> Callable[[np.random.Generator], Problem]:
    def setup(rng: np.random.Generator) -> Problem:
        boxes, _ = clustered_boxes(rng, n, max(1, n // 20))
        return Problem(
            (boxes,),
            lambda b: fastconv.box_convert(b, "xyxy", "cxcywh"),
            lambda b: _ref("box_convert")(b, "xyxy", "cxcywh"),
            None, 2.0 * boxes.nbytes, "GB/s")

    return setup


def _nms_setup(n: int, classes: int) -> Callable[[np.random.Generator], Problem]:
    def setup(rng: np.random.Generator) -> Problem:
        boxes, scores = clustered_boxes(rng, n, max(1, n // 25))
        if classes == 0:
            return Problem(
                (boxes, scores),
                lambda b, s: fastconv.nms(b, s, 0.5),
                lambda b, s: _ref("nms")(b, s, 0.5),
                None, 0.0, "", exact=True)
        labels = rng.integers(0, classes, size=n)
        return Problem(
            (boxes, scores, labels),
            lambda b, s, l: fastconv.batched_nms(b, s, l, 0.5),
            lambda b, s, l: _ref("batched_nms")(b, s, l, 0.5),
            None, 0.0, "", exact=True)

    return setup


def _box_cases() -> List[Case]:
    quick, full, smoke = frozenset({"quick"}), frozenset({"full"}), frozenset({"smoke"})
    both = quick | full
    return [
        Case("box_iou", "1k_x_1k", "1000 x 1000", both, _iou_setup(1000, 1000)),
        Case("box_iou", "4k_x_4k", "4000 x 4000", full, _iou_setup(4000, 4000)),
        Case("box_iou", "smoke", "50 x 40", smoke, _iou_setup(50, 40)),
        Case("box_convert", "1M", "1000000 xyxy->cxcywh", full, _convert_setup(1_000_000)),
        Case("box_convert", "100k", "100000 xyxy->cxcywh", quick, _convert_setup(100_000)),
        Case("box_convert", "smoke", "100 xyxy->cxcywh", smoke, _convert_setup(100)),
        Case("nms", "1k", "1000 boxes, iou 0.5", both, _nms_setup(1000, 0)),
        Case("nms", "10k", "10000 boxes, iou 0.5", both, _nms_setup(10_000, 0)),
        Case("nms", "50k", "50000 boxes, iou 0.5", full, _nms_setup(50_000, 0)),
        Case("nms", "smoke", "200 boxes, iou 0.5", smoke, _nms_setup(200, 0)),
        Case("batched_nms", "10k_80cls", "10000 boxes, 80 classes", both,
             _nms_setup(10_000, 80)),
        Case("batched_nms", "smoke", "200 boxes, 5 classes", smoke, _nms_setup(200, 5)),
    ]


def all_cases() -> List[Case]:
    """Every case of every mode, in table order."""
    return _conv_cases() + _unfold_cases() + _pool_cases() + _box_cases()


def fmt_value(value: Optional[float], spec: str) -> str:
    """A table cell: the value in `spec`, or n/a."""
    return "n/a" if value is None else format(value, spec)


def error_cell(err: Optional[float], mismatches: Optional[int], failed: bool = False) -> str:
    """The max-error cell of the CPU and GPU tables: relative error and index mismatches."""
    if failed:
        return "FAILED"
    parts = []
    if err is not None:
        parts.append(format(err, ".1e"))
    if mismatches is not None:
        parts.append(f"{mismatches} idx")
    return ", ".join(parts) or "n/a"


def select(candidates: Sequence[Any], op_order: Sequence[str], mode: str,
           ops: Optional[Sequence[str]]) -> List[Any]:
    """The candidates (anything with .op and .modes) of one mode ("smoke", "quick" or
    "full"), optionally only some ops, ordered by op as in `op_order`."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    unknown = sorted(set(ops or ()) - set(op_order))
    if unknown:
        raise ValueError(f"unknown op(s) {unknown}; choose from {list(op_order)}")
    chosen = [c for c in candidates if mode in c.modes and (not ops or c.op in ops)]
    order: Dict[str, int] = {op: i for i, op in enumerate(op_order)}
    return sorted(chosen, key=lambda c: order[c.op])


def cases(mode: str = "full", ops: Optional[Sequence[str]] = None) -> List[Case]:
    """The cases of one mode ("smoke", "quick" or "full"), optionally only some ops."""
    return select(all_cases(), OPS, mode, ops)
