"""Benchmark cases: every op on the layer shapes of the classic networks, for the CPU and the
GPU from one table per op family.

A `Case` is cheap to list; its `setup` draws the inputs (lazily: the full set would not fit
in memory at once) and returns a `Problem`: the host inputs, the fastconv call, the NumPy
reference (the CPU baseline and oracle), an optional PyTorch equivalent, and the work done
(FLOPs or bytes). The runner moves the inputs to the case's device; every call here works
on NumPy and on CuPy arrays alike.

Shared by the CLI runner (`python -m fastconv bench`, see runner.py) and the
pytest-benchmark suite in `benchmarks/`, so both time exactly the same problems.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

import numpy as np

import fastconv
from .. import reference
from .._geometry import Window, make_window

Ints = Tuple[int, ...]
# (torch module, the inputs as tensors on the case's device) -> the call to time.
TorchFactory = Callable[[Any, Tuple[Any, ...]], Callable[[], Any]]

MODES = ("smoke", "quick", "full")
DEVICES = ("cpu", "cuda")
OPS = (
    "conv", "conv_backward_input", "conv_backward_weight", "im2col", "col2im",
    "max_pool", "avg_pool", "max_pool_backward", "avg_pool_backward",
    "box_iou", "box_convert", "nms", "batched_nms",
    "roi_align", "roi_align_backward", "roi_pool", "roi_pool_backward",
    "mean_average_precision", "sliding_windows",
)


class Unavailable(NotImplementedError):
    """A baseline that cannot run here (e.g. torchvision missing): reported as n/a."""


@dataclass
class Problem:
    """One benchmark problem with its host inputs drawn.

    `exact` cases (indices) are checked on the very same inputs and report mismatches; the
    others against the reference evaluated in float64 and report a relative error. `nms`
    holds (boxes, labels or None, IoU threshold) of NMS cases, so a GPU result can be told
    apart from rounding at the threshold.
    """

    inputs: Tuple[Any, ...]
    fastconv: Callable[..., Any]
    reference: Callable[..., Any]
    torch: Optional[TorchFactory]
    work: float
    unit: str  # "flop", "byte", or "" when no throughput figure is meaningful
    exact: bool = False
    nms: Optional[Tuple[np.ndarray, Optional[np.ndarray], float]] = None


@dataclass(frozen=True)
class Case:
    """A named benchmark problem: op, case name, shape summary, device, and the modes it
    runs in."""

    op: str
    name: str
    shape: str
    device: str
    modes: FrozenSet[str]
    setup: Callable[[np.random.Generator], Problem]

    @property
    def id(self) -> str:
        """Stable id for pytest and the JSON output."""
        return f"{self.op}[{self.name}]" + ("" if self.device == "cpu" else f"@{self.device}")


def _randn(rng: np.random.Generator, shape: Sequence[int], dtype: Any) -> np.ndarray:
    return rng.standard_normal(tuple(shape), dtype=np.dtype(dtype).type)


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


def _torchvision_ops() -> Any:
    try:
        import torchvision.ops
    except Exception as exc:  # noqa: BLE001 - beside the CPU torch wheel it fails to load
        raise Unavailable(f"torchvision.ops: {type(exc).__name__}") from None
    return torchvision.ops


# ----------------------------------------------------------------------------------------
# Layer tables: one per op family. A layer's batch sizes per device and mode say where it
# runs; None leaves it out there.
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Batches:
    """Batch sizes of one layer per mode on one device; more than one in a mode gives one
    case each (named with a _b<N> suffix)."""

    full: Ints = ()
    quick: Ints = ()
    backward_quick: bool = False  # whether the gradient ops also run it in --quick

    def of(self, mode: str, backward: bool) -> Ints:
        if mode == "quick" and backward and not self.backward_quick:
            return ()
        return {"full": self.full, "quick": self.quick}.get(mode, ())


@dataclass(frozen=True)
class ConvLayer:
    name: str
    c: int
    k: int
    size: Ints
    kernel: Ints
    stride: int
    padding: int
    groups: int = 1
    dtype: Any = np.float32
    cpu: Batches = Batches()
    cuda: Batches = Batches()
    cuda_backward: Batches = Batches()  # the gradient ops' batches on the GPU


_CPU_8_1 = Batches((8,), (1,))
_CPU_8_1_BWD = Batches((8,), (1,), backward_quick=True)
_GPU_1_32 = Batches((1, 32), (1,))

CONV_LAYERS = [
    ConvLayer("lenet5_c1", 1, 6, (32, 32), (5, 5), 1, 0, cpu=Batches((64,), (64,), True),
              cuda=_GPU_1_32),
    ConvLayer("alexnet_conv1", 3, 64, (224, 224), (11, 11), 4, 2, cpu=Batches((1,), (1,)),
              cuda=_GPU_1_32),
    ConvLayer("vgg16_conv5", 512, 512, (14, 14), (3, 3), 1, 1, cpu=_CPU_8_1, cuda=_GPU_1_32),
    ConvLayer("resnet50_stem", 3, 64, (224, 224), (7, 7), 2, 3, cpu=_CPU_8_1,
              cuda=_GPU_1_32),
    ConvLayer("resnet50_3x3", 64, 64, (56, 56), (3, 3), 1, 1, cpu=_CPU_8_1_BWD,
              cuda=_GPU_1_32, cuda_backward=Batches((32,), (8,), True)),
    ConvLayer("resnet_3x3_128", 128, 128, (28, 28), (3, 3), 1, 1, cpu=_CPU_8_1,
              cuda=_GPU_1_32),
    ConvLayer("resnet50_3x3_256", 256, 256, (14, 14), (3, 3), 1, 1, cuda=_GPU_1_32),
    ConvLayer("resnet50_3x3_512", 512, 512, (7, 7), (3, 3), 1, 1, cuda=_GPU_1_32),
    ConvLayer("resnet50_1x1", 256, 64, (56, 56), (1, 1), 1, 0, cpu=_CPU_8_1, cuda=_GPU_1_32),
    ConvLayer("inception_5x5", 192, 32, (28, 28), (5, 5), 1, 2, cpu=_CPU_8_1, cuda=_GPU_1_32),
    ConvLayer("depthwise_3x3", 256, 256, (28, 28), (3, 3), 1, 1, groups=256,
              cpu=_CPU_8_1_BWD, cuda=_GPU_1_32),
    # 3-D: the float64 reference materializes N*C*27*32^3 windows (0.9 GB at batch 8).
    ConvLayer("conv3d_3x3x3", 16, 32, (32, 32, 32), (3, 3, 3), 1, 1, cpu=_CPU_8_1_BWD,
              cuda=_GPU_1_32),
    ConvLayer("conv1d_k7", 64, 64, (4096,), (7,), 1, 3, cpu=_CPU_8_1_BWD),
    ConvLayer("resnet50_3x3_f64", 64, 64, (56, 56), (3, 3), 1, 1, dtype=np.float64,
              cpu=_CPU_8_1, cuda=Batches((32,), (8,))),
    ConvLayer("resnet50_1x1_f64", 256, 64, (56, 56), (1, 1), 1, 0, dtype=np.float64,
              cpu=_CPU_8_1),
    ConvLayer("conv1d_k7_f64", 64, 64, (4096,), (7,), 1, 3, dtype=np.float64, cpu=_CPU_8_1),
]
SMOKE_CONV = ConvLayer("smoke_2d", 4, 8, (12, 12), (3, 3), 1, 1)
SMOKE_BATCH = 2


@dataclass(frozen=True)
class UnfoldLayer:
    name: str
    c: int
    size: Ints
    kernel: Ints
    stride: int
    padding: int
    cpu: Batches = Batches()
    cuda: Batches = Batches()


UNFOLD_LAYERS = [
    UnfoldLayer("resnet50_3x3", 64, (56, 56), (3, 3), 1, 1, cpu=_CPU_8_1,
                cuda=Batches((32,), (8,))),
    UnfoldLayer("alexnet_conv1", 3, (224, 224), (11, 11), 4, 2, cpu=Batches((1,), (1,))),
    UnfoldLayer("vgg16_conv5", 512, (14, 14), (3, 3), 1, 1, cpu=_CPU_8_1),
    UnfoldLayer("conv3d_3x3x3", 16, (32, 32, 32), (3, 3, 3), 1, 1, cpu=Batches((2,), (1,))),
    UnfoldLayer("conv1d_k7", 64, (4096,), (7,), 1, 3, cpu=_CPU_8_1),
]
SMOKE_UNFOLD = UnfoldLayer("smoke_2d", 4, (12, 12), (3, 3), 1, 1)


@dataclass(frozen=True)
class PoolLayer:
    name: str
    x_shape: Ints  # without the batch dim
    kernel: Ints
    stride: int
    padding: int
    ceil_mode: bool = False
    cpu: Batches = Batches()
    cuda: Batches = Batches()


_GPU_32_8 = Batches((32,), (8,))
POOL_LAYERS = [
    PoolLayer("vgg_2x2", (64, 112, 112), (2, 2), 2, 0, cpu=_CPU_8_1, cuda=_GPU_32_8),
    PoolLayer("resnet_3x3s2", (64, 112, 112), (3, 3), 2, 1, cpu=_CPU_8_1, cuda=_GPU_32_8),
    PoolLayer("inception_3x3s2_ceil", (192, 56, 56), (3, 3), 2, 0, True, cpu=_CPU_8_1,
              cuda=_GPU_32_8),
    # As many elements as the 2-D layers above (6.4 M per batch of 8).
    PoolLayer("pool3d_2x2x2", (32, 16, 56, 56), (2, 2, 2), 2, 0, cpu=_CPU_8_1,
              cuda=_GPU_32_8),
]
SMOKE_POOL = PoolLayer("smoke_2d", (3, 10, 10), (3, 3), 2, 1)


# ----------------------------------------------------------------------------------------
# Convolution and its gradients
# ----------------------------------------------------------------------------------------

def _conv_flops(n: int, layer: ConvLayer, win: Window) -> float:
    return (2.0 * n * layer.k * (layer.c // layer.groups) * float(np.prod(win.kernel))
            * float(np.prod(win.out_size)))


def _conv_setup(op: str, layer: ConvLayer, n: int) -> Callable[[np.random.Generator], Problem]:
    def setup(rng: np.random.Generator) -> Problem:
        c, k, kernel, groups, dtype = layer.c, layer.k, layer.kernel, layer.groups, layer.dtype
        win = make_window(op, layer.size, kernel, layer.stride, layer.padding)
        x_shape = (n, c) + layer.size
        w_shape = (k, c // groups) + kernel
        geo = dict(stride=win.stride, padding=_pairs(win), dilation=win.dilation, groups=groups)
        ref_geo = (win.stride, win.pad_before, win.pad_after, win.dilation, groups)
        flops = _conv_flops(n, layer, win)
        conv_nd = f"conv{len(layer.size)}d"

        def torch_conv(torch: Any, x: Any, w: Any, b: Any = None) -> Any:
            xp, pad = _torch_pad(torch, x, win)
            return getattr(torch.nn.functional, conv_nd)(xp, w, b, win.stride, pad,
                                                         win.dilation, groups)

        w = _randn(rng, w_shape, dtype)
        if op == "conv":
            x = _randn(rng, x_shape, dtype)
            bias = _randn(rng, (k,), dtype)

            def torch_fwd(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
                return lambda: torch_conv(torch, *t)

            return Problem(
                (x, w, bias),
                lambda x, w, b: fastconv.conv(x, w, b, **geo),
                lambda x, w, b: reference.conv(x, w, b, *ref_geo),
                torch_fwd, flops, "flop")

        dy = _randn(rng, (n, k) + win.out_size, dtype)
        if op == "conv_backward_input":
            def torch_dx(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
                dy_t, w_t = t
                x_t = torch.zeros(x_shape, dtype=w_t.dtype, device=w_t.device,
                                  requires_grad=True)
                y_t = torch_conv(torch, x_t, w_t)
                # The graph is built once; only the backward pass is timed.
                return lambda: torch.autograd.grad(y_t, x_t, dy_t, retain_graph=True)[0]

            return Problem(
                (dy, w),
                lambda dy, w: fastconv.conv_backward_input(dy, w, x_shape, **geo),
                lambda dy, w: reference.conv_backward_input(dy, w, x_shape, *ref_geo),
                torch_dx, flops, "flop")

        x = _randn(rng, x_shape, dtype)

        def torch_dw(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
            x_t, dy_t = t
            w_t = torch.zeros(w_shape, dtype=x_t.dtype, device=x_t.device, requires_grad=True)
            y_t = torch_conv(torch, x_t, w_t)
            return lambda: torch.autograd.grad(y_t, w_t, dy_t, retain_graph=True)[0]

        return Problem(
            (x, dy),
            lambda x, dy: fastconv.conv_backward_weight(x, dy, kernel, **geo),
            lambda x, dy: reference.conv_backward_weight(x, dy, kernel, *ref_geo),
            torch_dw, flops, "flop")

    return setup


def _ints(values: Ints) -> str:
    return "x".join(map(str, values))


def _conv_shape(n: int, layer: ConvLayer) -> str:
    text = (f"{n}x{layer.c}x{_ints(layer.size)} -> {layer.k}, "
            f"k{_ints(layer.kernel)}/{layer.stride} p{layer.padding}")
    if layer.groups > 1:
        text += f" g{layer.groups}"
    if np.dtype(layer.dtype) != np.float32:
        text += f" {np.dtype(layer.dtype).name}"
    return text


def _per_batch(name: str, batches: Ints) -> List[Tuple[str, int]]:
    """(case name, batch) for each batch size; a suffix only where a mode has several."""
    if len(batches) == 1:
        return [(name, batches[0])]
    return [(f"{name}_b{n}", n) for n in batches]


def _layer_cases(op: str, layers: Sequence[Any], smoke: Any,
                 make: Callable[[str, Any, int], Callable[[np.random.Generator], Problem]],
                 shape: Callable[[int, Any], str],
                 batches: Callable[[Any, str], Batches] = getattr,
                 backward: bool = False) -> List[Case]:
    """The cases of one op over a layer table on every device and mode, plus its smoke case;
    `batches(layer, device)` gives a layer's batch sizes there."""
    cases = []
    for device in DEVICES:
        for layer in layers:
            for mode in ("full", "quick"):
                for name, n in _per_batch(layer.name, batches(layer, device).of(mode, backward)):
                    cases.append(Case(op, name, shape(n, layer), device, frozenset({mode}),
                                      make(op, layer, n)))
        cases.append(Case(op, smoke.name, shape(SMOKE_BATCH, smoke), device,
                          frozenset({"smoke"}), make(op, smoke, SMOKE_BATCH)))
    return cases


def _gradient_batches(layer: ConvLayer, device: str) -> Batches:
    return layer.cpu if device == "cpu" else layer.cuda_backward


def _conv_cases() -> List[Case]:
    cases = _layer_cases("conv", CONV_LAYERS, SMOKE_CONV, _conv_setup, _conv_shape)
    for op in ("conv_backward_input", "conv_backward_weight"):
        cases += _layer_cases(op, CONV_LAYERS, SMOKE_CONV, _conv_setup, _conv_shape,
                              _gradient_batches, backward=True)
    return cases


# ----------------------------------------------------------------------------------------
# im2col / col2im
# ----------------------------------------------------------------------------------------

def _unfold_setup(op: str, layer: UnfoldLayer, n: int) -> Callable[[np.random.Generator],
                                                                    Problem]:
    def setup(rng: np.random.Generator) -> Problem:
        c, size, kernel = layer.c, layer.size, layer.kernel
        win = make_window(op, size, kernel, layer.stride, layer.padding)
        geo = dict(stride=win.stride, padding=_pairs(win), dilation=win.dilation)
        ref_geo = (win.stride, win.pad_before, win.pad_after, win.dilation)
        rows, positions = c * int(np.prod(kernel)), int(np.prod(win.out_size))
        # F.unfold/F.fold are 2-D only and take symmetric padding only.
        torch_ok = len(size) == 2 and win.pad_before == win.pad_after
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
                lambda x: reference.im2col(x, kernel, *ref_geo),
                torch_unfold if torch_ok else None, x_bytes + cols_bytes, "byte")

        cols = _randn(rng, (n, rows, positions), np.float32)

        def torch_fold(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
            return lambda: torch.nn.functional.fold(t[0], size, kernel, win.dilation,
                                                    win.pad_before, win.stride)

        return Problem(
            (cols,),
            lambda cols: fastconv.col2im(cols, size, kernel, **geo),
            lambda cols: reference.col2im(cols, size, kernel, *ref_geo),
            torch_fold if torch_ok else None, x_bytes + cols_bytes, "byte")

    return setup


def _unfold_shape(n: int, layer: UnfoldLayer) -> str:
    return (f"{n}x{layer.c}x{_ints(layer.size)}, k{_ints(layer.kernel)}/{layer.stride} "
            f"p{layer.padding}")


def _unfold_cases() -> List[Case]:
    return [case for op in ("im2col", "col2im")
            for case in _layer_cases(op, UNFOLD_LAYERS, SMOKE_UNFOLD, _unfold_setup,
                                     _unfold_shape)]


# ----------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------

def _pool_setup(op: str, layer: PoolLayer, n: int) -> Callable[[np.random.Generator], Problem]:
    def setup(rng: np.random.Generator) -> Problem:
        kernel, ceil_mode = layer.kernel, layer.ceil_mode
        x_shape = (n,) + layer.x_shape
        win = make_window(op, x_shape[2:], kernel, layer.stride, layer.padding,
                          ceil_mode=ceil_mode, pool=True)
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
            return getattr(torch.nn.functional, fn_name)(x_t, kernel, win.stride,
                                                         win.pad_before, ceil_mode=ceil_mode,
                                                         **kwargs)

        def torch_grad(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
            x_t = torch.as_tensor(x, device=t[0].device).requires_grad_(True)
            y_t = torch_pool(torch, x_t)
            return lambda: torch.autograd.grad(y_t, x_t, t[0], retain_graph=True)[0]

        if op == "max_pool":
            def torch_max(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
                return lambda: torch_pool(torch, t[0], return_indices=True)

            return Problem(
                (x,),
                lambda x: fastconv.max_pool(x, kernel, return_indices=True, **geo),
                lambda x: reference.max_pool(x, kernel, *ref_geo),
                torch_max if torch_ok else None, x_bytes + y_bytes + idx_bytes, "byte")
        if op == "avg_pool":
            def torch_avg(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
                return lambda: torch_pool(torch, t[0])

            return Problem(
                (x,),
                lambda x: fastconv.avg_pool(x, kernel, **geo),
                lambda x: reference.avg_pool(x, kernel, *ref_geo, True),
                torch_avg if torch_ok else None, x_bytes + y_bytes, "byte")

        dy = _randn(rng, y_shape, np.float32)
        if op == "max_pool_backward":
            # The indices come from the oracle, so both sides scatter the same windows.
            _, indices = reference.max_pool(x, kernel, *ref_geo)
            return Problem(
                (dy, indices),
                lambda dy, idx: fastconv.max_pool_backward(dy, idx, x_shape),
                lambda dy, idx: reference.max_pool_backward(dy, idx, x_shape),
                torch_grad if torch_ok else None, y_bytes + idx_bytes + x_bytes, "byte")
        return Problem(
            (dy,),
            lambda dy: fastconv.avg_pool_backward(dy, x_shape, kernel, **geo),
            lambda dy: reference.avg_pool_backward(dy, x_shape, kernel, *ref_geo, True),
            torch_grad if torch_ok else None, y_bytes + x_bytes, "byte")

    return setup


def _pool_shape(n: int, layer: PoolLayer) -> str:
    return (f"{_ints((n,) + layer.x_shape)}, k{_ints(layer.kernel)}/{layer.stride}"
            f" p{layer.padding}{' ceil' if layer.ceil_mode else ''}")


def _pool_cases() -> List[Case]:
    return [case for op in ("max_pool", "avg_pool", "max_pool_backward", "avg_pool_backward")
            for case in _layer_cases(op, POOL_LAYERS, SMOKE_POOL, _pool_setup, _pool_shape)]


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


def _box_setup(op: str, n: int, classes: int = 0) -> Callable[[np.random.Generator], Problem]:
    def setup(rng: np.random.Generator) -> Problem:
        if op == "box_iou":
            a, _ = clustered_boxes(rng, n, max(1, n // 20))
            b, _ = clustered_boxes(rng, n, max(1, n // 20))

            def tv_iou(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
                ops = _torchvision_ops()
                return lambda: ops.box_iou(*t)

            return Problem((a, b), fastconv.box_iou, reference.box_iou, tv_iou,
                           float(a.nbytes + b.nbytes) + 4.0 * n * n, "byte")
        boxes, scores = clustered_boxes(rng, n, max(1, n // (20 if op == "box_convert"
                                                               else 25)))
        if op == "box_convert":
            def tv_convert(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
                ops = _torchvision_ops()
                return lambda: ops.box_convert(t[0], "xyxy", "cxcywh")

            return Problem(
                (boxes,),
                lambda b: fastconv.box_convert(b, "xyxy", "cxcywh"),
                lambda b: reference.box_convert(b, "xyxy", "cxcywh"),
                tv_convert, 2.0 * boxes.nbytes, "byte")
        # NMS: indices are compared exactly on the same float32 boxes. No throughput
        # figure: the work depends on the data.
        if op == "nms":
            def tv_nms(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
                ops = _torchvision_ops()
                return lambda: ops.nms(t[0], t[1], 0.5)

            return Problem(
                (boxes, scores),
                lambda b, s: fastconv.nms(b, s, 0.5),
                lambda b, s: reference.nms(b, s, 0.5),
                tv_nms, 0.0, "", exact=True, nms=(boxes, None, 0.5))
        labels = rng.integers(0, classes, size=n)

        def tv_batched(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
            ops = _torchvision_ops()
            return lambda: ops.batched_nms(t[0], t[1], t[2], 0.5)

        return Problem(
            (boxes, scores, labels),
            lambda b, s, l: fastconv.batched_nms(b, s, l, 0.5),
            lambda b, s, l: reference.batched_nms(b, s, l, 0.5),
            tv_batched, 0.0, "", exact=True, nms=(boxes, labels, 0.5))

    return setup


# op, case name, shape, setup, modes on the CPU, modes on the GPU
_BOXES = [
    ("box_iou", "1k_x_1k", "1000 x 1000", _box_setup("box_iou", 1000), "quick full", "quick"),
    ("box_iou", "4k_x_4k", "4000 x 4000", _box_setup("box_iou", 4000), "full", "full"),
    ("box_iou", "smoke", "50 x 50", _box_setup("box_iou", 50), "smoke", "smoke"),
    ("box_convert", "1M", "1000000 xyxy->cxcywh", _box_setup("box_convert", 1_000_000),
     "full", "full"),
    ("box_convert", "100k", "100000 xyxy->cxcywh", _box_setup("box_convert", 100_000),
     "quick", "quick"),
    ("box_convert", "smoke", "100 xyxy->cxcywh", _box_setup("box_convert", 100), "smoke",
     "smoke"),
    ("nms", "1k", "1000 boxes, iou 0.5", _box_setup("nms", 1000), "quick full", "quick full"),
    ("nms", "10k", "10000 boxes, iou 0.5", _box_setup("nms", 10_000), "quick full",
     "quick full"),
    ("nms", "50k", "50000 boxes, iou 0.5", _box_setup("nms", 50_000), "full", ""),
    ("nms", "100k", "100000 boxes, iou 0.5", _box_setup("nms", 100_000), "", "full"),
    ("nms", "smoke", "200 boxes, iou 0.5", _box_setup("nms", 200), "smoke", "smoke"),
    ("batched_nms", "10k_80cls", "10000 boxes, 80 classes", _box_setup("batched_nms", 10_000, 80),
     "quick full", "quick full"),
    ("batched_nms", "50k_1000cls", "50000 boxes, 1000 classes",
     _box_setup("batched_nms", 50_000, 1000), "", "full"),
    ("batched_nms", "smoke", "200 boxes, 5 classes", _box_setup("batched_nms", 200, 5),
     "smoke", "smoke"),
]


def _box_cases() -> List[Case]:
    cases = []
    for op, name, shape, setup, cpu_modes, gpu_modes in _BOXES:
        for device, modes in (("cpu", cpu_modes), ("cuda", gpu_modes)):
            if modes:
                cases.append(Case(op, name, shape, device, frozenset(modes.split()), setup))
    return cases


# ----------------------------------------------------------------------------------------
# RoI align / RoI pool
# ----------------------------------------------------------------------------------------

def detector_rois(rng: np.random.Generator, count: int, batch: int,
                  image_size: Ints = (800, 1088), min_size: float = 16.0,
                  max_size: float = 600.0, dtype: Any = np.float32) -> np.ndarray:
    """(count, 5) rois as a region proposal network emits them: widths and heights
    log-uniform in [min_size, max_size] pixels, centres uniform over an image of
    image_size (H, W) (so boxes spill past its borders), batch indices uniform."""
    height, width = image_size
    wh = np.exp(rng.uniform(np.log(min_size), np.log(max_size), (count, 2)))
    centres = rng.uniform(0, 1, (count, 2)) * np.array([width, height], dtype=np.float64)
    boxes = np.concatenate([centres - wh / 2, centres + wh / 2], axis=1)
    index = rng.integers(0, batch, (count, 1))
    return np.concatenate([index, boxes], axis=1).astype(dtype)


@dataclass(frozen=True)
class RoiLayer:
    name: str
    batch: int
    channels: int
    size: Ints  # feature map (H, W)
    rois: int
    out: Ints
    scale: float  # feature cells per image pixel
    sampling_ratio: int
    aligned: bool


# The box head of Faster R-CNN (ResNet-50 C4-style 1/16 feature map of an 800x1088 image).
FASTER_RCNN_HEAD = RoiLayer("faster_rcnn_head", 2, 256, (50, 68), 512, (7, 7), 1 / 16, 2, True)
SMOKE_ROI = RoiLayer("smoke", 2, 8, (12, 17), 20, (3, 3), 1 / 16, 2, True)


def _roi_setup(op: str, layer: RoiLayer) -> Callable[[np.random.Generator], Problem]:
    def setup(rng: np.random.Generator) -> Problem:
        x_shape = (layer.batch, layer.channels) + layer.size
        image = tuple(int(s / layer.scale) for s in layer.size)
        x = _randn(rng, x_shape, np.float32)
        rois = detector_rois(rng, layer.rois, layer.batch, image)
        out, scale = layer.out, layer.scale
        geo = dict(spatial_scale=scale, sampling_ratio=layer.sampling_ratio,
                   aligned=layer.aligned)
        ref_geo = (scale, layer.sampling_ratio, layer.aligned)
        x_bytes = float(x.nbytes)
        y_bytes = 4.0 * layer.rois * layer.channels * int(np.prod(out))
        dy = _randn(rng, (layer.rois, layer.channels) + out, np.float32)

        def tv_align(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
            ops = _torchvision_ops()
            return lambda: ops.roi_align(t[0], t[1], out, scale, layer.sampling_ratio,
                                         layer.aligned)

        def tv_align_grad(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
            ops = _torchvision_ops()
            dy_t, rois_t = t
            x_t = torch.zeros(x_shape, dtype=dy_t.dtype, device=dy_t.device,
                              requires_grad=True)
            y_t = ops.roi_align(x_t, rois_t, out, scale, layer.sampling_ratio, layer.aligned)
            # The graph is built once; only the backward pass is timed.
            return lambda: torch.autograd.grad(y_t, x_t, dy_t, retain_graph=True)[0]

        def tv_pool(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
            _torchvision_ops()  # registers torch.ops.torchvision
            # The raw op also returns its argmax (int32, the same flat cells).
            return lambda: torch.ops.torchvision.roi_pool(t[0], t[1], scale, *out)

        def tv_pool_grad(torch: Any, t: Tuple[Any, ...]) -> Callable[[], Any]:
            ops = _torchvision_ops()
            dy_t, rois_t = t[0], t[2]
            x_t = torch.as_tensor(x, device=dy_t.device).requires_grad_(True)
            y_t = ops.roi_pool(x_t, rois_t, out, scale)
            return lambda: torch.autograd.grad(y_t, x_t, dy_t, retain_graph=True)[0]

        if op == "roi_align":
            return Problem(
                (x, rois),
                lambda x, r: fastconv.roi_align(x, r, out, **geo),
                lambda x, r: reference.roi_align(x, r, out, *ref_geo),
                tv_align, x_bytes + y_bytes, "byte")
        if op == "roi_align_backward":
            return Problem(
                (dy, rois),
                lambda dy, r: fastconv.roi_align_backward(dy, r, x_shape, **geo),
                lambda dy, r: reference.roi_align_backward(dy, r, x_shape, *ref_geo),
                tv_align_grad, x_bytes + y_bytes, "byte")
        if op == "roi_pool":
            # Checked on the same float32 inputs: bin edges are computed in the roi dtype,
            # so a float64 evaluation may cut some bins one cell differently.
            return Problem(
                (x, rois),
                lambda x, r: fastconv.roi_pool(x, r, out, spatial_scale=scale,
                                               return_indices=True),
                lambda x, r: reference.roi_pool(x, r, out, scale),
                tv_pool, x_bytes + 3 * y_bytes, "byte", exact=True)
        # The indices come from the oracle, so every backend adds at the same cells.
        _, indices = reference.roi_pool(x, rois, out, scale)
        return Problem(
            (dy, indices, rois),
            lambda dy, idx, r: fastconv.roi_pool_backward(dy, idx, r, x_shape),
            lambda dy, idx, r: reference.roi_pool_backward(dy, idx, r, x_shape),
            tv_pool_grad, x_bytes + 3 * y_bytes, "byte")

    return setup


def _roi_shape(layer: RoiLayer) -> str:
    return (f"{layer.batch}x{layer.channels}x{_ints(layer.size)}, {layer.rois} rois -> "
            f"{_ints(layer.out)}, s{layer.sampling_ratio}{' aligned' if layer.aligned else ''}")


def _roi_cases() -> List[Case]:
    cases = []
    for op in ("roi_align", "roi_align_backward", "roi_pool", "roi_pool_backward"):
        for device in DEVICES:
            for layer, modes in ((FASTER_RCNN_HEAD, "quick full"), (SMOKE_ROI, "smoke")):
                cases.append(Case(op, layer.name, _roi_shape(layer), device,
                                  frozenset(modes.split()), _roi_setup(op, layer)))
    return cases


# ----------------------------------------------------------------------------------------
# Detection metrics: COCO mAP against pycocotools (the "numpy" baseline column)
# ----------------------------------------------------------------------------------------

def _map_setup(images: int) -> Callable[[np.random.Generator], Problem]:
    def setup(rng: np.random.Generator) -> Problem:
        from ..detection import mean_average_precision
        from ..detection.synthetic import coco_format, random_detection_set

        preds, targets = random_detection_set(rng, images, 20, 80)
        dataset, results = coco_format(preds, targets)
        keys = ("map", "map_50", "map_75")

        def ours(*_: Any) -> np.ndarray:
            out = mean_average_precision(preds, targets)
            return np.array([out[k] for k in keys])

        def pycocotools(*_: Any) -> np.ndarray:
            import contextlib
            import io

            try:
                from pycocotools.coco import COCO
                from pycocotools.cocoeval import COCOeval
            except ImportError as exc:
                raise Unavailable(f"pycocotools: {exc}") from None
            with contextlib.redirect_stdout(io.StringIO()):
                gt = COCO()
                gt.dataset = dataset
                gt.createIndex()
                ev = COCOeval(gt, gt.loadRes(results), "bbox")
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            return np.array(ev.stats[:3])

        # The inputs are Python lists of per-image dicts; the calls close over them. exact:
        # both evaluate the very same detections (no float64 re-run of pycocotools).
        return Problem((), ours, pycocotools, None, 0.0, "", exact=True)

    return setup


def _map_cases() -> List[Case]:
    return [Case("mean_average_precision", name,
                 f"{n} images x 20 dets, 80 classes; baseline pycocotools",
                 "cpu", frozenset({mode}), _map_setup(n))
            for name, n, mode in (("coco_5k", 5000, "full"), ("coco_1k", 1000, "quick"),
                                  ("smoke", 20, "smoke"))]


# ----------------------------------------------------------------------------------------
# Sliding windows: the convolutional implementation (nn.convolutionalize) against every
# window's crop through the original classifier in one batch (the "numpy" column)
# ----------------------------------------------------------------------------------------

# The seed's classifier of 14x14x3 windows: 5x5 conv to 16 channels (10x10), 2x2 max pool
# (5x5), FC 400, FC 400, softmax over 4 classes. Sliding stride: 2 (the pool's).
WINDOW, WINDOW_STRIDE = 14, 2
CONV_OUT, CONV_MACS = 16, 5 * 5 * 3                 # per output value of the conv
FC_MACS = 400 * 400 + 400 * 400 + 400 * 4           # the FC part, per window


def sliding_macs(side: int) -> Tuple[int, int]:
    """Multiply-adds of scoring every window of a side x side image with the seed's
    classifier: (crops, sliding). Crops pay the convolution once per window; the sliding
    network once per position of the image, shared by the overlapping windows. The fully
    connected part costs the same per window in both."""
    grid = (side - WINDOW) // WINDOW_STRIDE + 1
    conv_side = WINDOW - 4
    crops = grid * grid * (conv_side * conv_side * CONV_OUT * CONV_MACS + FC_MACS)
    sliding = (side - 4) ** 2 * CONV_OUT * CONV_MACS + grid * grid * FC_MACS
    return crops, sliding


def _sliding_setup(side: int) -> Callable[[np.random.Generator], Problem]:
    def setup(rng: np.random.Generator) -> Problem:
        import copy

        from .. import Tensor, nn, no_grad

        model = nn.Sequential(nn.Conv2d(3, CONV_OUT, 5), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(400, 400), nn.ReLU(),
                              nn.Linear(400, 400), nn.ReLU(), nn.Linear(400, 4),
                              nn.Softmax(dim=1)).eval()
        sliding = nn.convolutionalize(model, (3, WINDOW, WINDOW))
        # The float64 twin checks the float32 sliding scores (the runner's float64 reference).
        twins = {np.dtype(np.float32): model, np.dtype(np.float64): copy.deepcopy(model).double()}
        grid = (side - WINDOW) // WINDOW_STRIDE + 1
        image = _randn(rng, (1, 3, side, side), np.float32)

        def every_window(image: np.ndarray) -> np.ndarray:
            views = np.lib.stride_tricks.sliding_window_view(image[0], (WINDOW, WINDOW),
                                                             axis=(1, 2))
            # (3, rows, cols, 14, 14) at stride 2 -> one (windows, 3, 14, 14) batch, copied:
            # gathering the crops is part of what the crops approach costs.
            crops = np.ascontiguousarray(
                views[:, ::WINDOW_STRIDE, ::WINDOW_STRIDE].transpose(1, 2, 0, 3, 4)
                .reshape(grid * grid, 3, WINDOW, WINDOW))
            with no_grad():
                return twins[image.dtype](Tensor(crops)).numpy()

        def ours(image: np.ndarray) -> np.ndarray:
            with no_grad():
                scores = sliding(Tensor(image)).numpy()
            return scores[0].reshape(4, grid * grid).T  # window by window, as the crops

        return Problem((image,), ours, every_window, None, 2.0 * sliding_macs(side)[1],
                       "flop")

    return setup


def _sliding_shape(side: int) -> str:
    grid = (side - WINDOW) // WINDOW_STRIDE + 1
    crops, sliding = sliding_macs(side)
    return (f"14x14 windows of 1x3x{side}x{side}: {grid}x{grid}; MACs crops/sliding "
            f"{crops / sliding:.2f}; baseline all crops in one batch")


def _sliding_cases() -> List[Case]:
    # The seed's 28x28 -> 8x8 case, a larger image with dense windows, and a smoke size.
    return [Case("sliding_windows", name, _sliding_shape(side), "cpu", frozenset(modes.split()),
                 _sliding_setup(side))
            for name, side, modes in (("seed_28x28", 28, "quick full"),
                                      ("dense_128x128", 128, "quick full"),
                                      ("smoke", 18, "smoke"))]


def all_cases() -> List[Case]:
    """Every case of every mode and device, in table order."""
    return (_conv_cases() + _unfold_cases() + _pool_cases() + _box_cases() + _roi_cases()
            + _map_cases() + _sliding_cases())


def cases(mode: str = "full", ops: Optional[Sequence[str]] = None,
          device: str = "cpu") -> List[Case]:
    """The cases of one mode ("smoke", "quick" or "full") on one device ("cpu" or "cuda"),
    optionally only some ops, ordered by op as in OPS."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    unknown = sorted(set(ops or ()) - set(OPS))
    if unknown:
        raise ValueError(f"unknown op(s) {unknown}; choose from {list(OPS)}")
    chosen = [c for c in all_cases()
              if c.device == device and mode in c.modes and (not ops or c.op in ops)]
    order: Dict[str, int] = {op: i for i, op in enumerate(OPS)}
    return sorted(chosen, key=lambda c: order[c.op])
