"""GPU benchmark: fastconv's CUDA kernels on CuPy arrays against PyTorch CUDA (cuDNN) and
torchvision.ops, on the same device memory. Entry point: `python -m fastconv bench --gpu`.

Method:
- The inputs are drawn on the host (seeded), copied to the GPU once, and handed to torch
  through DLPack (zero copy: both sides read the very same device memory).
- PyTorch runs with TF32 off (`torch.backends.cudnn.allow_tf32 = False`,
  `torch.backends.cuda.matmul.allow_tf32 = False`), so float32 is float32 on both sides,
  and `cudnn.benchmark = True`, so cuDNN picks its fastest algorithm per shape in the
  warm-up calls.
- Each call is bracketed by CUDA events on the stream it runs on, after warm-up calls;
  the time reported is the median over repetitions. Host-side overhead (argument checks,
  launch) is part of a call's time when the GPU waits for it, for both sides alike. Small
  problems fit in the 50 MB L2 and are timed warm, for both sides alike.
- Memory-bound ops report GB/s (bytes each input read once plus each output written once)
  and that as a percentage of the device-to-device copy bandwidth measured at the start
  (cudaMemcpy of a 1 GiB buffer, bytes read plus written). Convolutions report TFLOP/s
  (2 x multiply-adds).
- Each fastconv result is checked against the fastconv CPU kernels on the same inputs
  upcast to float64 (relative error max|gpu - ref| / max(1, max|ref|)); max-pool indices
  must match the CPU exactly, NMS kept sets too except where an IoU lies within rounding
  of the threshold (`nms_differences`). torch's error against the same reference is shown
  beside it. A failing op, an error above `ERR_LIMIT` or an unexplained index mismatch
  makes the run exit non-zero.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

import numpy as np

import fastconv

from .bench_cases import error_cell, fmt_value, select

# Largest acceptable relative error of a float result against the float64 reference.
# A wrong index or a missed term gives O(1); honest rounding of a few thousand float32
# products gives ~1e-6 relative to the largest output.
ERR_LIMIT = {"float32": 1e-4, "float64": 1e-12}
# (warm-up calls, seconds of timed calls, fewest and most timed calls) per mode.
TIMING = {"smoke": (1, 0.0, 2, 2), "quick": (3, 0.2, 5, 30), "full": (3, 0.3, 10, 50)}
COPY_BYTES = 1 << 30


class GpuUnavailable(RuntimeError):
    """No GPU run is possible here (no CUDA device, no fastconv._cuda, no CuPy)."""


# ------------------------------------------------------------------------------------------
# Devices: the real one (CuPy + torch CUDA) and a CPU stand-in that tests the tool itself
# ------------------------------------------------------------------------------------------

class Env:
    """Array module, timer and torch glue for one device ("cuda", or "cpu" for dry runs)."""

    def __init__(self, device: str, use_torch: bool) -> None:
        self.device = device
        self.torch: Any = None
        self.torchvision: Any = None
        self.torch_note = "disabled (--no-torch)"
        if device == "cuda":
            if not fastconv.cuda.is_available():
                raise GpuUnavailable(fastconv.cuda.reason())
            import cupy

            self.xp: Any = cupy
        else:
            self.xp = np
        if use_torch:
            self._import_torch()

    def _import_torch(self) -> None:
        try:
            import torch
        except ImportError:
            self.torch_note = "not installed"
            return
        if self.device == "cuda" and not torch.cuda.is_available():
            self.torch_note = f"{torch.__version__} without CUDA here"
            return
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
        self.torch = torch
        self.torch_note = torch.__version__
        try:
            import torchvision
            import torchvision.ops  # noqa: F401

            self.torchvision = torchvision
        except ImportError:
            pass

    # -- arrays ------------------------------------------------------------------------------
    def to_device(self, a: np.ndarray) -> Any:
        return self.xp.asarray(a)

    def to_host(self, a: Any) -> np.ndarray:
        if self.device == "cuda":
            return self.xp.asnumpy(a)
        return np.asarray(a)

    def to_torch(self, a: Any) -> Any:
        """The same memory as a torch tensor (DLPack: no copy)."""
        try:
            t = self.torch.from_dlpack(a)
        except (AttributeError, TypeError, BufferError):  # no DLPack: the CUDA array interface
            t = self.torch.as_tensor(a, device="cuda" if self.device == "cuda" else "cpu")
        ptr = a.data.ptr if self.device == "cuda" else a.ctypes.data
        if a.size and t.data_ptr() != ptr:
            raise RuntimeError("DLPack made a copy; the comparison would not be fair")
        return t

    def torch_to_host(self, t: Any) -> np.ndarray:
        return t.detach().cpu().numpy()

    # -- timing ------------------------------------------------------------------------------
    def synchronize(self) -> None:
        if self.device == "cuda":
            self.xp.cuda.get_current_stream().synchronize()
            if self.torch is not None:
                self.torch.cuda.synchronize()

    def time(self, fn: Callable[[], Any], framework: str, mode: str) -> Tuple[float, int, Any]:
        """(median seconds per call, timed calls, last result) of `fn`."""
        warmup, budget, min_reps, max_reps = TIMING[mode]
        result = None
        for _ in range(warmup):
            result = fn()
        self.synchronize()
        samples: List[float] = []
        while len(samples) < min_reps or (sum(samples) < budget and len(samples) < max_reps):
            result = None  # let the pool reuse the previous output's memory
            seconds, result = self._time_one(fn, framework)
            samples.append(seconds)
        return statistics.median(samples), len(samples), result

    def _time_one(self, fn: Callable[[], Any], framework: str) -> Tuple[float, Any]:
        if self.device != "cuda":
            start = time.perf_counter()
            result = fn()
            return time.perf_counter() - start, result
        if framework == "torch":
            cuda = self.torch.cuda
            begin, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
            begin.record()
            result = fn()
            end.record()
            end.synchronize()
            return begin.elapsed_time(end) / 1e3, result
        cupy = self.xp
        begin, end = cupy.cuda.Event(), cupy.cuda.Event()
        begin.record()
        result = fn()
        end.record()
        end.synchronize()
        return cupy.cuda.get_elapsed_time(begin, end) / 1e3, result

    def copy_bandwidth(self, mode: str) -> float:
        """Device-to-device copy rate in GB/s, counting bytes read plus bytes written."""
        nbytes = COPY_BYTES if mode != "smoke" else 1 << 24
        sec = self._copy_seconds(nbytes, mode)
        self.release()
        return 2.0 * nbytes / sec / 1e9

    def _copy_seconds(self, nbytes: int, mode: str) -> float:
        if self.device != "cuda":
            src = np.random.default_rng(0).standard_normal(nbytes // 8)
            dst = np.empty_like(src)
            return self.time(lambda: np.copyto(dst, src), "fastconv", mode)[0]
        cupy = self.xp
        src = cupy.empty(nbytes // 4, dtype=cupy.float32)
        src[...] = 1.5  # never time on untouched memory
        dst = cupy.empty_like(src)
        # cudaMemcpyAsync on the current stream: the copy engine's rate, no kernel of ours.
        return self.time(lambda: dst.data.copy_from_device_async(src.data, nbytes),
                         "fastconv", mode)[0]

    def release(self) -> None:
        """Give cached device memory back between cases (big ones follow small ones)."""
        if self.device == "cuda":
            self.xp.get_default_memory_pool().free_all_blocks()
            if self.torch is not None:
                self.torch.cuda.empty_cache()

    def header(self, mode: str, copy_gbs: float) -> Dict[str, Any]:
        head: Dict[str, Any] = {
            "mode": mode,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "fastconv": fastconv.__version__,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": self.torch_note,
            "torchvision": getattr(self.torchvision, "__version__", "not available"),
            "copy_gbs": copy_gbs,
        }
        if self.device == "cuda":
            cupy = self.xp
            props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
            name = props["name"]
            head.update(
                device=name.decode() if isinstance(name, bytes) else str(name),
                compute_capability=f"{props['major']}.{props['minor']}",
                multiprocessors=props["multiProcessorCount"],
                memory_gib=round(props["totalGlobalMem"] / 2**30, 1),
                driver=cupy.cuda.runtime.driverGetVersion(),
                cupy=cupy.__version__,
                cuda_build=fastconv.info(as_dict=True)["cuda_build"])
            if self.torch is not None:
                head["cudnn"] = self.torch.backends.cudnn.version()
        else:
            head["device"] = f"CPU dry run ({platform.machine()}): checks the tool, not speed"
        return head


# ------------------------------------------------------------------------------------------
# Cases
# ------------------------------------------------------------------------------------------

@dataclass
class Problem:
    """One case with its inputs on the device.

    fastconv / torch: the calls to time (torch None: no baseline). reference: the CPU
    result on float64 inputs (host arrays), or None when checks are off.
    """

    fastconv: Callable[[], Any]
    torch: Optional[Callable[[], Any]]
    reference: Callable[[], Any]
    work: float
    unit: str  # "TFLOP/s" or "GB/s"
    dtype: str = "float32"
    note: str = ""
    # NMS: (boxes, labels or None, iou threshold) on the host, to compare kept sets and
    # tell rounding at the threshold from real differences (see `nms_differences`).
    nms: Optional[Tuple[np.ndarray, Optional[np.ndarray], float]] = None


@dataclass(frozen=True)
class Case:
    op: str
    name: str
    shape: str
    modes: FrozenSet[str]
    setup: Callable[[Env, np.random.Generator], Problem]

    @property
    def id(self) -> str:
        return f"{self.op}[{self.name}]"


def _randn(rng: np.random.Generator, shape: Sequence[int], dtype: Any) -> np.ndarray:
    return rng.standard_normal(tuple(shape)).astype(dtype)


def _f64(*arrays: np.ndarray) -> Tuple[np.ndarray, ...]:
    return tuple(a.astype(np.float64) if a.dtype.kind == "f" else a for a in arrays)


def _conv_setup(op: str, n: int, c: int, k: int, size: Tuple[int, ...],
                kernel: Tuple[int, ...], stride: int, padding: int, groups: int,
                dtype: Any) -> Callable[[Env, np.random.Generator], Problem]:
    def setup(env: Env, rng: np.random.Generator) -> Problem:
        d = len(size)
        geo = dict(stride=stride, padding=padding, groups=groups)
        x_shape, w_shape = (n, c) + size, (k, c // groups) + kernel
        out = tuple((s + 2 * padding - q) // stride + 1 for s, q in zip(size, kernel))
        flops = 2.0 * n * k * (c // groups) * float(np.prod(kernel)) * float(np.prod(out))
        w = _randn(rng, w_shape, dtype)
        torch = env.torch
        tgeo = ([stride] * d, [padding] * d, [1] * d)
        if op == "conv":
            x, b = _randn(rng, x_shape, dtype), _randn(rng, (k,), dtype)
            xd, wd, bd = map(env.to_device, (x, w, b))
            torch_call = None
            if torch is not None:
                xt, wt, bt = map(env.to_torch, (xd, wd, bd))
                conv_nd = getattr(torch.nn.functional, f"conv{d}d")
                torch_call = lambda: conv_nd(xt, wt, bt, stride, padding, 1, groups)  # noqa: E731
            return Problem(lambda: fastconv.conv(xd, wd, bd, **geo), torch_call,
                           lambda: fastconv.conv(*_f64(x, w, b), **geo), flops, "TFLOP/s",
                           np.dtype(dtype).name)
        dy = _randn(rng, (n, k) + out, dtype)
        if op == "conv_backward_input":
            dyd, wd = env.to_device(dy), env.to_device(w)
            torch_call = None
            if torch is not None:
                dyt, wt = env.to_torch(dyd), env.to_torch(wd)
                # convolution_backward wants the input only for its shape and dtype.
                xt = torch.empty(x_shape, dtype=wt.dtype, device=wt.device)
                torch_call = lambda: torch.ops.aten.convolution_backward(  # noqa: E731
                    dyt, xt, wt, None, *tgeo, False, [0] * d, groups, [True, False, False])[0]
            return Problem(lambda: fastconv.conv_backward_input(dyd, wd, x_shape, **geo),
                           torch_call,
                           lambda: fastconv.conv_backward_input(*_f64(dy, w), x_shape, **geo),
                           flops, "TFLOP/s", np.dtype(dtype).name)
        x = _randn(rng, x_shape, dtype)
        xd, dyd = env.to_device(x), env.to_device(dy)
        torch_call = None
        if torch is not None:
            xt, dyt = env.to_torch(xd), env.to_torch(dyd)
            wt = torch.empty(w_shape, dtype=xt.dtype, device=xt.device)
            torch_call = lambda: torch.ops.aten.convolution_backward(  # noqa: E731
                dyt, xt, wt, None, *tgeo, False, [0] * d, groups, [False, True, False])[1]
        return Problem(lambda: fastconv.conv_backward_weight(xd, dyd, kernel, **geo),
                       torch_call,
                       lambda: fastconv.conv_backward_weight(*_f64(x, dy), kernel, **geo),
                       flops, "TFLOP/s", np.dtype(dtype).name)

    return setup


def _shape_text(n: int, c: int, k: int, size: Tuple[int, ...], kernel: Tuple[int, ...],
                stride: int, padding: int, groups: int) -> str:
    text = (f"{n}x{c}x{'x'.join(map(str, size))} -> {k}, "
            f"k{'x'.join(map(str, kernel))}/{stride} p{padding}")
    return text + (f" g{groups}" if groups > 1 else "")


# name, C, K, spatial size, kernel, stride, padding, groups
_CONV_LAYERS = [
    ("lenet5_c1", 1, 6, (32, 32), (5, 5), 1, 0, 1),
    ("alexnet_conv1", 3, 64, (224, 224), (11, 11), 4, 2, 1),
    ("vgg16_3x3_512", 512, 512, (14, 14), (3, 3), 1, 1, 1),
    ("resnet50_stem", 3, 64, (224, 224), (7, 7), 2, 3, 1),
    ("resnet50_3x3_64", 64, 64, (56, 56), (3, 3), 1, 1, 1),
    ("resnet50_3x3_128", 128, 128, (28, 28), (3, 3), 1, 1, 1),
    ("resnet50_3x3_256", 256, 256, (14, 14), (3, 3), 1, 1, 1),
    ("resnet50_3x3_512", 512, 512, (7, 7), (3, 3), 1, 1, 1),
    ("resnet50_1x1_256_64", 256, 64, (56, 56), (1, 1), 1, 0, 1),
    ("inception_5x5", 192, 32, (28, 28), (5, 5), 1, 2, 1),
    ("depthwise_3x3_256", 256, 256, (28, 28), (3, 3), 1, 1, 256),
    ("conv3d_3x3x3", 16, 32, (32, 32, 32), (3, 3, 3), 1, 1, 1),
]
_RESNET_3X3 = ("resnet50_3x3_64", 64, 64, (56, 56), (3, 3), 1, 1, 1)
_SMOKE_CONV = ("smoke_2d", 4, 8, (12, 12), (3, 3), 1, 1, 1)


def _conv_cases() -> List[Case]:
    full, quick, smoke = frozenset({"full"}), frozenset({"quick"}), frozenset({"smoke"})
    cases = []
    for name, c, k, size, kernel, stride, padding, groups in _CONV_LAYERS:
        for n, modes in ((1, full | quick), (32, full)):
            cases.append(Case("conv", f"{name}_b{n}",
                              _shape_text(n, c, k, size, kernel, stride, padding, groups),
                              modes, _conv_setup("conv", n, c, k, size, kernel, stride,
                                                 padding, groups, np.float32)))
    name, c, k, size, kernel, stride, padding, groups = _RESNET_3X3
    for op in ("conv_backward_input", "conv_backward_weight"):
        for n, modes in ((8, quick), (32, full)):
            cases.append(Case(op, f"{name}_b{n}",
                              _shape_text(n, c, k, size, kernel, stride, padding, groups),
                              modes, _conv_setup(op, n, c, k, size, kernel, stride, padding,
                                                 groups, np.float32)))
    for n, modes in ((8, quick), (32, full)):
        cases.append(Case("conv", f"{name}_b{n}_f64",
                          _shape_text(n, c, k, size, kernel, stride, padding, groups)
                          + " float64", modes,
                          _conv_setup("conv", n, c, k, size, kernel, stride, padding, groups,
                                      np.float64)))
    name, c, k, size, kernel, stride, padding, groups = _SMOKE_CONV
    for op in ("conv", "conv_backward_input", "conv_backward_weight"):
        cases.append(Case(op, name, _shape_text(2, c, k, size, kernel, stride, padding, groups),
                          smoke, _conv_setup(op, 2, c, k, size, kernel, stride, padding,
                                             groups, np.float32)))
    return cases


def _unfold_setup(op: str, n: int, c: int, size: Tuple[int, int], kernel: Tuple[int, int],
                  stride: int, padding: int) -> Callable[[Env, np.random.Generator], Problem]:
    def setup(env: Env, rng: np.random.Generator) -> Problem:
        geo = dict(stride=stride, padding=padding)
        torch = env.torch
        if op == "im2col":
            x = _randn(rng, (n, c) + size, np.float32)
            xd = env.to_device(x)
            torch_call = None
            if torch is not None:
                xt = env.to_torch(xd)
                torch_call = lambda: torch.nn.functional.unfold(  # noqa: E731
                    xt, kernel, 1, padding, stride)
            fast = lambda: fastconv.im2col(xd, kernel, **geo)  # noqa: E731
            ref = lambda: fastconv.im2col(x.astype(np.float64), kernel, **geo)  # noqa: E731
            out_elems = fastconv.im2col(x[:1, :1], kernel, **geo).size * n * c
        else:
            rows = c * kernel[0] * kernel[1]
            positions = fastconv.im2col(np.zeros((1, 1) + size, np.float32), kernel,
                                        **geo).shape[2]
            cols = _randn(rng, (n, rows, positions), np.float32)
            colsd = env.to_device(cols)
            torch_call = None
            if torch is not None:
                colst = env.to_torch(colsd)
                torch_call = lambda: torch.nn.functional.fold(  # noqa: E731
                    colst, size, kernel, 1, padding, stride)
            fast = lambda: fastconv.col2im(colsd, size, kernel, **geo)  # noqa: E731
            ref = lambda: fastconv.col2im(cols.astype(np.float64), size, kernel,  # noqa: E731
                                          **geo)
            out_elems = cols.size
        nbytes = 4.0 * (n * c * size[0] * size[1] + out_elems)
        return Problem(fast, torch_call, ref, nbytes, "GB/s")

    return setup


def _unfold_cases() -> List[Case]:
    cases = []
    for op in ("im2col", "col2im"):
        cases.append(Case(op, "resnet50_3x3_64_b32", "32x64x56x56, k3x3/1 p1",
                          frozenset({"full"}),
                          _unfold_setup(op, 32, 64, (56, 56), (3, 3), 1, 1)))
        cases.append(Case(op, "resnet50_3x3_64_b8", "8x64x56x56, k3x3/1 p1",
                          frozenset({"quick"}),
                          _unfold_setup(op, 8, 64, (56, 56), (3, 3), 1, 1)))
        cases.append(Case(op, "smoke_2d", "2x4x12x12, k3x3/1 p1", frozenset({"smoke"}),
                          _unfold_setup(op, 2, 4, (12, 12), (3, 3), 1, 1)))
    return cases


def _pool_setup(op: str, x_shape: Tuple[int, ...], kernel: Tuple[int, int], stride: int,
                padding: int) -> Callable[[Env, np.random.Generator], Problem]:
    def setup(env: Env, rng: np.random.Generator) -> Problem:
        geo = dict(stride=stride, padding=padding)
        torch = env.torch
        tgeo = (list(kernel), [stride] * 2, [padding] * 2)
        x = _randn(rng, x_shape, np.float32)
        y, idx = fastconv.max_pool(x, kernel, return_indices=True, **geo)
        x_bytes, y_bytes, idx_bytes = float(x.nbytes), float(y.nbytes), 2.0 * y.nbytes
        if op in ("max_pool", "avg_pool"):
            xd = env.to_device(x)
            xt = env.to_torch(xd) if torch is not None else None
            if op == "max_pool":
                fast = lambda: fastconv.max_pool(xd, kernel, return_indices=True,  # noqa: E731
                                                 **geo)
                torch_call = None if xt is None else lambda: torch.nn.functional.max_pool2d(
                    xt, kernel, stride, padding, return_indices=True)
                ref = lambda: fastconv.max_pool(x.astype(np.float64), kernel,  # noqa: E731
                                                return_indices=True, **geo)
                return Problem(fast, torch_call, ref, x_bytes + y_bytes + idx_bytes, "GB/s")
            fast = lambda: fastconv.avg_pool(xd, kernel, **geo)  # noqa: E731
            torch_call = None if xt is None else lambda: torch.nn.functional.avg_pool2d(
                xt, kernel, stride, padding)
            ref = lambda: fastconv.avg_pool(x.astype(np.float64), kernel, **geo)  # noqa: E731
            return Problem(fast, torch_call, ref, x_bytes + y_bytes, "GB/s")
        dy = _randn(rng, y.shape, np.float32)
        dyd = env.to_device(dy)
        # torch's pool backward takes the forward input for its shape; give it x.
        xt = env.to_torch(env.to_device(x)) if torch is not None else None
        dyt = env.to_torch(dyd) if torch is not None else None
        if op == "max_pool_backward":
            # The indices come from the CPU forward, so both sides scatter the same windows.
            idxd = env.to_device(idx)
            fast = lambda: fastconv.max_pool_backward(dyd, idxd, x_shape)  # noqa: E731
            torch_call = None
            if torch is not None:
                idxt = env.to_torch(idxd)
                torch_call = lambda: torch.ops.aten.max_pool2d_with_indices_backward(  # noqa: E731
                    dyt, xt, *tgeo, [1, 1], False, idxt)
            ref = lambda: fastconv.max_pool_backward(dy.astype(np.float64), idx,  # noqa: E731
                                                     x_shape)
            return Problem(fast, torch_call, ref, y_bytes + idx_bytes + x_bytes, "GB/s")
        fast = lambda: fastconv.avg_pool_backward(dyd, x_shape, kernel, **geo)  # noqa: E731
        torch_call = None
        if torch is not None:
            torch_call = lambda: torch.ops.aten.avg_pool2d_backward(  # noqa: E731
                dyt, xt, *tgeo, False, True, None)
        ref = lambda: fastconv.avg_pool_backward(dy.astype(np.float64), x_shape,  # noqa: E731
                                                 kernel, **geo)
        return Problem(fast, torch_call, ref, y_bytes + x_bytes, "GB/s")

    return setup


def _pool_cases() -> List[Case]:
    cases = []
    shapes = (((32, 64, 112, 112), frozenset({"full"})),
              ((8, 64, 112, 112), frozenset({"quick"})),
              ((2, 3, 10, 10), frozenset({"smoke"})))
    for op in ("max_pool", "avg_pool", "max_pool_backward", "avg_pool_backward"):
        for name, kernel, stride, padding in (("2x2s2", (2, 2), 2, 0),
                                              ("3x3s2p1", (3, 3), 2, 1)):
            for shape, modes in shapes:
                if "smoke" in modes and name != "3x3s2p1":
                    continue
                text = f"{'x'.join(map(str, shape))}, k{kernel[0]}x{kernel[1]}/{stride} p{padding}"
                cases.append(Case(op, name, text, modes,
                                  _pool_setup(op, shape, kernel, stride, padding)))
    return cases


def _boxes(rng: np.random.Generator, count: int) -> Tuple[np.ndarray, np.ndarray]:
    """`count` boxes jittered around count/25 objects in a 1000x1000 image, as a detector
    emits them (many heavy overlaps per object), with random scores."""
    clusters = max(1, count // 25)
    centers = rng.uniform(50, 950, size=(clusters, 2))
    sizes = rng.uniform(20, 120, size=(clusters, 2))
    which = rng.integers(0, clusters, size=count)
    cxy = centers[which] + rng.normal(0, 6, size=(count, 2))
    wh = sizes[which] * rng.uniform(0.8, 1.25, size=(count, 2))
    boxes = np.concatenate([cxy - wh / 2, cxy + wh / 2], axis=1).astype(np.float32)
    return boxes, rng.uniform(0, 1, size=count).astype(np.float32)


def _box_setup(op: str, n: int, classes: int = 0) -> Callable[[Env, np.random.Generator],
                                                                  Problem]:
    def setup(env: Env, rng: np.random.Generator) -> Problem:
        tv = env.torchvision
        boxes, scores = _boxes(rng, n)
        bd, sd = env.to_device(boxes), env.to_device(scores)
        bt = env.to_torch(bd) if tv is not None else None
        st = env.to_torch(sd) if tv is not None else None
        if op == "box_iou":
            other, _ = _boxes(rng, n)
            od = env.to_device(other)
            ot = env.to_torch(od) if tv is not None else None
            return Problem(lambda: fastconv.box_iou(bd, od),
                           None if tv is None else lambda: tv.ops.box_iou(bt, ot),
                           lambda: fastconv.box_iou(*_f64(boxes, other)),
                           boxes.nbytes + other.nbytes + 4.0 * n * n, "GB/s")
        if op == "box_convert":
            return Problem(lambda: fastconv.box_convert(bd, "xyxy", "cxcywh"),
                           None if tv is None
                           else lambda: tv.ops.box_convert(bt, "xyxy", "cxcywh"),
                           lambda: fastconv.box_convert(*_f64(boxes), "xyxy", "cxcywh"),
                           2.0 * boxes.nbytes, "GB/s")
        # NMS: the reference is the CPU kernel on the same float32 boxes (indices are
        # compared exactly, so no upcast). No throughput figure: the work depends on the data.
        if op == "nms":
            return Problem(lambda: fastconv.nms(bd, sd, 0.5),
                           None if tv is None else lambda: tv.ops.nms(bt, st, 0.5),
                           lambda: fastconv.nms(boxes, scores, 0.5), 0.0, "",
                           nms=(boxes, None, 0.5))
        labels = rng.integers(0, classes, size=n).astype(np.int64)
        ld = env.to_device(labels)
        lt = env.to_torch(ld) if tv is not None else None
        return Problem(lambda: fastconv.batched_nms(bd, sd, ld, 0.5),
                       None if tv is None else lambda: tv.ops.batched_nms(bt, st, lt, 0.5),
                       lambda: fastconv.batched_nms(boxes, scores, labels, 0.5), 0.0, "",
                       nms=(boxes, labels, 0.5))

    return setup


def _box_cases() -> List[Case]:
    full, quick, smoke = frozenset({"full"}), frozenset({"quick"}), frozenset({"smoke"})
    return [
        Case("box_iou", "4k_x_4k", "4000 x 4000", full, _box_setup("box_iou", 4000)),
        Case("box_iou", "1k_x_1k", "1000 x 1000", quick, _box_setup("box_iou", 1000)),
        Case("box_iou", "smoke", "50 x 50", smoke, _box_setup("box_iou", 50)),
        Case("box_convert", "1M", "1000000 xyxy->cxcywh", full,
             _box_setup("box_convert", 1_000_000)),
        Case("box_convert", "smoke", "100 xyxy->cxcywh", smoke, _box_setup("box_convert", 100)),
        Case("nms", "1k", "1000 boxes, iou 0.5", full | quick, _box_setup("nms", 1000)),
        Case("nms", "10k", "10000 boxes, iou 0.5", full | quick, _box_setup("nms", 10_000)),
        Case("nms", "100k", "100000 boxes, iou 0.5", full, _box_setup("nms", 100_000)),
        Case("nms", "smoke", "200 boxes, iou 0.5", smoke, _box_setup("nms", 200)),
        Case("batched_nms", "10k_80cls", "10000 boxes, 80 classes", full | quick,
             _box_setup("batched_nms", 10_000, 80)),
        Case("batched_nms", "50k_1000cls", "50000 boxes, 1000 classes", full,
             _box_setup("batched_nms", 50_000, 1000)),
        Case("batched_nms", "smoke", "200 boxes, 5 classes", smoke,
             _box_setup("batched_nms", 200, 5)),
    ]


OPS = ("conv", "conv_backward_input", "conv_backward_weight", "im2col", "col2im",
       "max_pool", "avg_pool", "max_pool_backward", "avg_pool_backward",
       "box_iou", "box_convert", "nms", "batched_nms")


def all_cases() -> List[Case]:
    return _conv_cases() + _unfold_cases() + _pool_cases() + _box_cases()


def cases(mode: str = "full", ops: Optional[Sequence[str]] = None) -> List[Case]:
    """The cases of one mode, optionally only some ops, in table order."""
    return select(all_cases(), OPS, mode, ops)


# ------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------

@dataclass
class Result:
    """One row (times in milliseconds; None means n/a)."""

    op: str
    case: str
    shape: str
    dtype: str = "float32"
    unit: str = ""
    fastconv_ms: Optional[float] = None
    throughput: Optional[float] = None
    pct_copy: Optional[float] = None  # GB/s rows: share of the measured copy bandwidth
    torch_ms: Optional[float] = None
    torch_throughput: Optional[float] = None
    speedup_torch: Optional[float] = None  # torch ms / fastconv ms
    max_err: Optional[float] = None
    mismatches: Optional[int] = None
    torch_err: Optional[float] = None
    torch_mismatches: Optional[int] = None
    # NMS: kept-set differences all explained by an IoU within NMS_ROUNDING of the threshold.
    explained: int = 0
    reps: int = 0
    note: str = ""

    @property
    def bad(self) -> bool:
        """fastconv failed, its result is off the reference, or it could not be checked."""
        if self.note.startswith(("fastconv failed", "setup failed", "reference failed")):
            return True
        limit = ERR_LIMIT.get(self.dtype, 1e-4)
        return bool((self.max_err is not None and not self.max_err <= limit)
                    or (self.mismatches or 0) > self.explained)


def _parts(out: Any, to_host: Callable[[Any], np.ndarray]) -> List[np.ndarray]:
    items = out if isinstance(out, (tuple, list)) else (out,)
    return [to_host(item) for item in items]


def compare(got: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> Tuple[Optional[float],
                                                                           Optional[int]]:
    """(max|got - ref| / max(1, max|ref|) over float parts, differing entries over index
    parts, a length difference counting as that many). A float shape mismatch is inf."""
    if len(got) != len(ref):
        return float("inf"), None
    err: Optional[float] = None
    mismatches: Optional[int] = None
    for g, r in zip(got, ref):
        if r.dtype.kind == "f":
            if g.shape != r.shape:
                part = float("inf")
            elif r.size == 0:
                part = 0.0
            else:
                diff = np.abs(g.astype(np.float64) - r.astype(np.float64))
                part = float(np.max(diff)) / max(1.0, float(np.max(np.abs(r))))
                if np.isnan(part):
                    part = float("inf")
            err = part if err is None else max(err, part)
        else:
            g, r = g.ravel(), r.ravel()
            common = min(g.size, r.size)
            part = int(np.count_nonzero(g[:common] != r[:common])) + abs(g.size - r.size)
            mismatches = part if mismatches is None else mismatches + part
    return err, mismatches


# An IoU this close to the threshold may round to either side: float32 kernels that
# contract to FMA differently (CPU vs GPU) may then keep different boxes, both correctly.
NMS_ROUNDING = 1e-5


def _iou64(boxes: np.ndarray, i: int, others: np.ndarray) -> np.ndarray:
    b = boxes.astype(np.float64)
    x1 = np.maximum(b[i, 0], b[others, 0])
    y1 = np.maximum(b[i, 1], b[others, 1])
    x2 = np.minimum(b[i, 2], b[others, 2])
    y2 = np.minimum(b[i, 3], b[others, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area[i] + area[others] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms_differences(got: np.ndarray, ref: np.ndarray, boxes: np.ndarray,
                    labels: Optional[np.ndarray], thr: float) -> Tuple[int, int]:
    """(differences, how many of them rounding explains) between two NMS results.

    Different kept sets: the differences are the symmetric difference; one is explained
    when the box has an IoU within NMS_ROUNDING of `thr` with a box kept on either side
    (a coin flip of rounding), or an IoU >= thr - NMS_ROUNDING with an explained box (the
    knock-on effect of that flip). Same sets: positions where the order differs, never
    explained (both sides sort by score, ties by index).
    """
    got, ref = np.asarray(got).ravel(), np.asarray(ref).ravel()
    diff = np.setxor1d(got, ref)
    if diff.size == 0:
        return int(np.count_nonzero(got != ref)) if got.size == ref.size else 1, 0
    kept = np.union1d(got, ref)
    explained: set = set()
    changed = True
    while changed:
        changed = False
        for j in diff:
            if j in explained:
                continue
            others = kept[kept != j]
            if labels is not None:
                others = others[labels[others] == labels[j]]
            iou = _iou64(boxes, int(j), others)
            near = np.abs(iou - thr) <= NMS_ROUNDING
            knock_on = np.isin(others, list(explained)) & (iou >= thr - NMS_ROUNDING)
            if near.any() or knock_on.any():
                explained.add(j)
                changed = True
    return int(diff.size), len(explained)


def run_case(env: Env, case: Case, mode: str, copy_gbs: float, check: bool = True) -> Result:
    """Time one case with fastconv and torch, and check both against the reference."""
    res = Result(case.op, case.name, case.shape)
    try:
        problem = case.setup(env, np.random.default_rng(0))
    except Exception as exc:  # noqa: BLE001 - one broken case must not hide the others
        res.note = f"setup failed: {type(exc).__name__}: {exc}"
        return res
    res.unit, res.dtype, res.note = problem.unit, problem.dtype, problem.note
    scale = 1e12 if problem.unit == "TFLOP/s" else 1e9
    got = torch_got = None
    try:
        sec, res.reps, got = env.time(problem.fastconv, "fastconv", mode)
        res.fastconv_ms = sec * 1e3
        if problem.work:
            res.throughput = problem.work / sec / scale
            if problem.unit == "GB/s" and copy_gbs:
                res.pct_copy = 100.0 * res.throughput / copy_gbs
    except Exception as exc:  # noqa: BLE001
        res.note = f"fastconv failed: {type(exc).__name__}: {exc}"
    if problem.torch is not None:
        try:
            sec, _, torch_got = env.time(problem.torch, "torch", mode)
            res.torch_ms = sec * 1e3
            if problem.work:
                res.torch_throughput = problem.work / sec / scale
            if res.fastconv_ms:
                res.speedup_torch = res.torch_ms / res.fastconv_ms
        except Exception as exc:  # noqa: BLE001 - a torch version lacking an op
            res.note = res.note or f"torch failed: {type(exc).__name__}: {exc}"
    ref = None
    if check and (got is not None or torch_got is not None):
        try:
            ref = _parts(problem.reference(), np.asarray)
        except Exception as exc:  # noqa: BLE001 - reported; the row is then unchecked
            res.note = res.note or f"reference failed: {type(exc).__name__}: {exc}"
    if ref is not None and problem.nms is not None:
        if got is not None:
            res.mismatches, res.explained = nms_differences(env.to_host(got), ref[0],
                                                            *problem.nms)
            if res.mismatches and res.explained == res.mismatches:
                res.note = res.note or (f"{res.mismatches} kept boxes differ from the CPU, "
                                        f"all at an IoU within {NMS_ROUNDING} of the threshold")
        if torch_got is not None:
            res.torch_mismatches, _ = nms_differences(env.torch_to_host(torch_got), ref[0],
                                                      *problem.nms)
    elif ref is not None:
        if got is not None:
            res.max_err, res.mismatches = compare(_parts(got, env.to_host), ref)
        if torch_got is not None:
            res.torch_err, res.torch_mismatches = compare(_parts(torch_got, env.torch_to_host),
                                                          ref)
    del got, torch_got, problem
    env.release()
    return res


def format_table(head: Dict[str, Any], results: Sequence[Result]) -> str:
    """Header lines, the aligned table, and the list of bad rows."""
    lines = [
        f"fastconv {head['fastconv']} GPU benchmark ({head['mode']}), {head['date']}",
        f"device: {head['device']}"
        + (f", sm {head['compute_capability']}, {head['multiprocessors']} SMs, "
           f"{head['memory_gib']} GiB, driver {head['driver']}" if "driver" in head else ""),
        f"fastconv {head.get('cuda_build', 'on the CPU')}; cupy {head.get('cupy', 'n/a')}; torch "
        f"{head['torch']} (cuDNN {head.get('cudnn', 'n/a')}, TF32 off, cudnn.benchmark); "
        f"torchvision {head['torchvision']}",
        f"device-to-device copy: {head['copy_gbs']:.0f} GB/s (read + write)",
        "times: median ms per call (CUDA events, after warm-up); x torch = torch ms / fastconv "
        "ms; err: max|out - ref| / max(1, max|ref|) against the CPU kernels in float64 "
        "(idx: index mismatches)",
        "",
    ]
    titles = ["op", "case", "shape", "ms", "throughput", "% copy", "torch ms", "torch thr",
              "x torch", "err", "torch err"]
    rows = []
    for r in results:
        rows.append([
            r.op, r.case, r.shape, fmt_value(r.fastconv_ms, ".3f"),
            f"{r.throughput:.2f} {r.unit}" if r.throughput is not None else "",
            fmt_value(r.pct_copy, ".0f") if r.unit == "GB/s" else "",
            fmt_value(r.torch_ms, ".3f"),
            f"{r.torch_throughput:.2f}" if r.torch_throughput is not None else "",
            fmt_value(r.speedup_torch, ".2f"),
            error_cell(r.max_err, r.mismatches, r.note.startswith("fastconv failed"))
            + (f" ({r.explained} rounding)" if r.explained else "")
            + (" BAD" if r.bad and not r.note.startswith("fastconv failed") else ""),
            error_cell(r.torch_err, r.torch_mismatches)])
    widths = [max(len(row[i]) for row in rows + [titles]) for i in range(len(titles))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i >= 3 else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines += [line(titles), line(["-" * w for w in widths])] + [line(row) for row in rows]
    notes = [f"{r.op}[{r.case}]: {r.note}" for r in results if r.note]
    bad = [f"{r.op}[{r.case}]" for r in results if r.bad]
    if notes:
        lines += ["", "notes:"] + [f"  {n}" for n in notes]
    lines.append("")
    lines.append(f"BAD (failed, or off the reference): {', '.join(bad)}" if bad
                 else f"all {len(results)} fastconv results match the reference")
    return "\n".join(lines)


def run(mode: str = "full", ops: Optional[Sequence[str]] = None, use_torch: bool = True,
        json_path: Optional[str] = None, progress: bool = True, check: bool = True,
        device: str = "cuda",
        echo: Callable[[str], None] = print) -> Tuple[Dict[str, Any], List[Result]]:
    """Run the GPU benchmark, print the table through `echo`, write `json_path` if given.

    device="cpu" runs the same cases on NumPy arrays against torch on the CPU: a dry run
    that checks the tool on machines without a GPU (use with mode="smoke").
    Raises GpuUnavailable when device="cuda" and no GPU can run here.
    """
    from tqdm import tqdm

    selected = cases(mode, ops)
    env = Env(device, use_torch)
    copy_gbs = env.copy_bandwidth(mode)
    head = env.header(mode, copy_gbs)
    results = []
    bar = tqdm(selected, desc="bench --gpu", unit="case", disable=not progress, leave=False,
               file=sys.stderr)
    for case in bar:
        bar.set_postfix_str(case.id)
        results.append(run_case(env, case, mode, copy_gbs, check))
    bar.close()
    echo(format_table(head, results))
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"header": head, "results": [dict(asdict(r), bad=r.bad) for r in results]},
                      f, indent=1)
    return head, results


def main(mode: str, ops: Optional[Sequence[str]], use_torch: bool, json_path: Optional[str],
         progress: bool, check: bool = True) -> int:
    """CLI entry: 0 when every fastconv result matches, 1 if any is bad, 2 without a GPU."""
    try:
        _, results = run(mode, ops, use_torch, json_path, progress, check)
    except GpuUnavailable as exc:
        print(f"python -m fastconv bench --gpu: cannot run here: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # an --op this benchmark has no GPU case for
        print(f"python -m fastconv bench --gpu: {exc}", file=sys.stderr)
        return 2
    if not results:
        print("python -m fastconv bench --gpu: no GPU case for the selected ops/mode",
              file=sys.stderr)
        return 2
    return 1 if any(r.bad for r in results) else 0
