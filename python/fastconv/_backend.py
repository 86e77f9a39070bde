"""The one gateway to the compiled kernels: only this module imports `fastconv._cpu` and
`fastconv._cuda`.

It answers four questions for everything above it:

* which kind of array is this (NumPy: device "cpu"; anything exposing
  `__cuda_array_interface__`, viewed as CuPy: device "cuda") and is it an acceptable
  float operand (`float_arrays`, `index_array`);
* where does an output come from (`empty`: CuPy's pool, or for NumPy the host cache of
  released outputs);
* which kernels run on a device (`kernels`: the `_cpu` module, or the `_cuda` functions
  called with the caller's allocator and stream appended);
* can the GPU run at all, and why not (`cuda_unavailable_reason`).

It also holds the one cache of per-call work: `PlanCache`, the bounded LRU every op family
keeps its prepared plans in (see ops/conv.py for the pattern), and the CPU helpers the
network layer uses between kernels (`matmul`, `tanh`, `channel_affine`).
"""

from __future__ import annotations

import functools
import importlib
import operator
import os
import threading
from collections import OrderedDict
from typing import Any, Callable, Dict, Hashable, Optional, Sequence, Tuple, TypeVar

import numpy as np

from . import _cpu
from ._geometry import check_extents

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

Plan = TypeVar("Plan")


# ----------------------------------------------------------------------------- devices


def is_gpu(a: Any) -> bool:
    """True for GPU arrays: anything exposing `__cuda_array_interface__`."""
    return hasattr(a, "__cuda_array_interface__")


def device_of(a: Any) -> str:
    """"cuda" for GPU arrays, "cpu" otherwise."""
    return "cuda" if is_gpu(a) else "cpu"


def array_module(a: Any) -> Any:
    """numpy or cupy, whichever `a` belongs to."""
    if is_gpu(a):
        import cupy

        return cupy
    return np


@functools.lru_cache(maxsize=None)
def cuda_unavailable_reason() -> Optional[str]:
    """Why the CUDA kernels cannot run here, or None when they can. GPU kernels need the
    `fastconv._cuda` module (built when nvcc was found at install time), a CUDA device with
    a driver, and CuPy (outputs and temporary memory come from its pool)."""
    try:
        from . import _cuda  # type: ignore[attr-defined]
    except ImportError as error:
        status = _cpu.build_info()["cuda_status"] or f"import failed ({error})"
        return f"fastconv._cuda is not available: CUDA backend {status}"
    count, why = _cuda.device_status()
    if count == 0:
        return f"no usable CUDA device: {why}"
    try:
        importlib.import_module("cupy")
    except ImportError:
        return "CuPy is not installed (pip install 'fastconv[gpu]')"
    return None


def require_cuda(op: str) -> None:
    """Raise RuntimeError (with the reason) if `op` was asked to run on the GPU here."""
    why = cuda_unavailable_reason()
    if why is not None:
        raise RuntimeError(f"{op}: got a GPU array, but {why}")


def cuda_build_info() -> Dict[str, Any]:
    """The CUDA build (runtime version, architectures, driver) and devices; {} without
    `_cuda`."""
    try:
        from . import _cuda  # type: ignore[attr-defined]
    except ImportError:
        return {}
    return dict(_cuda.build_info())


def cpu_build_info() -> Dict[str, Any]:
    """Compiler, CPU instruction-set path, OpenMP threads and CUDA build status of `_cpu`."""
    return dict(_cpu.build_info())


# ----------------------------------------------------------------------------- operands


def native_dtype(a: Any) -> Any:
    """`a` viewed with NumPy's own float32/float64 dtype instance. The compiled bindings
    check dtypes by identity, and an unpickled array (one a Dask worker received) carries
    an equal but distinct instance."""
    for dtype in FLOAT_DTYPES:
        if a.dtype == dtype:
            return a if a.dtype is dtype else a.view(dtype)
    return a


def float_arrays(op: str, optional: Sequence[str] = (), **arrays: Optional[object]) -> list:
    """Check that the named arrays are float32/float64 arrays of one kind and one dtype.

    All NumPy arrays (CPU) or all GPU arrays: CuPy arrays and any object exposing
    `__cuda_array_interface__` (viewed as CuPy arrays without a copy). Returns C-contiguous
    arrays in argument order; the names in `optional` may be None (and stay None). Mixing
    host and GPU arrays, None for a required array, other array types and other or mixed
    dtypes raise TypeError naming the argument; GPU arrays raise RuntimeError with the
    reason when the CUDA backend cannot run here.
    """
    for name, a in arrays.items():
        if a is None and name not in optional:
            raise TypeError(f"{op}: {name} must be an array, got None")
    present = {name: a for name, a in arrays.items() if a is not None}
    gpu = [name for name, a in present.items() if is_gpu(a)]
    if gpu and len(gpu) != len(present):
        host = [name for name in present if name not in gpu]
        raise TypeError(f"{op}: {', '.join(gpu)} on the GPU but {', '.join(host)} in host "
                        "memory; pass all NumPy arrays or all GPU arrays")
    if gpu:
        require_cuda(op)
        import cupy

        xp: Any = cupy
        kind = "GPU array"
        arrays = {name: None if a is None else cupy.asarray(a) for name, a in arrays.items()}
        present = {name: arrays[name] for name in present}
    else:
        xp = np
        kind = "numpy.ndarray"
    dtype = None
    for name, a in present.items():
        if not isinstance(a, xp.ndarray):
            raise TypeError(f"{op}: {name} must be a {kind}, got {type(a).__name__}")
        if a.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{op}: {name} must be float32 or float64, got {a.dtype} "
                            f"(shape {a.shape})")
        if dtype is None:
            dtype = a.dtype
        elif a.dtype != dtype:
            first = next(iter(present))
            raise TypeError(f"{op}: {name} has dtype {a.dtype} but {first} has {dtype}; "
                            "pass one dtype")
    return [None if a is None else native_dtype(xp.ascontiguousarray(a))
            for a in arrays.values()]


def index_array(op: str, name: str, a: Any, like: Any) -> Any:
    """`a` as an integer array of the same kind (NumPy or GPU) as `like`."""
    xp = array_module(like)
    if is_gpu(like):
        if not is_gpu(a):
            raise TypeError(f"{op}: {name} must be a GPU array like the other arguments, got "
                            f"{type(a).__name__}")
        a = xp.asarray(a)
    elif not isinstance(a, np.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype == np.bool_ or a.dtype.kind not in "iu":
        raise TypeError(f"{op}: {name} must have an integer dtype, got {a.dtype} "
                        f"(shape {a.shape})")
    return a


def full_shape(op: str, name: str, shape: Sequence[int], ndim: int) -> tuple:
    """`shape` (N, C, *spatial) as a tuple of `ndim` positive ints, or a clear error."""
    try:
        shape = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"{op}: {name} must be a tuple of ints, got {shape!r}") from None
    if len(shape) != ndim:
        raise ValueError(f"{op}: {name} {shape} must have {ndim} entries (N, C, *spatial)")
    check_extents(op, name, shape)
    return shape


SPATIAL = "(N, C, *spatial) with at least one spatial dim"
ANY_SPATIAL_RANK = range(3, 65)  # NumPy's limit on dims


def checked_shape(op: str, name: str, shape: Sequence[int], ranks: Sequence[int],
                  layout: str = SPATIAL) -> tuple:
    """`shape` as a tuple whose rank is one of `ranks` and with no zero-size dim, or a
    ValueError naming `name` and saying the expected `layout`."""
    shape = tuple(shape)
    if len(shape) not in ranks:
        raise ValueError(f"{op}: {name} must be {layout}, got shape {shape}")
    if 0 in shape:
        raise ValueError(f"{op}: {name} has a zero-size dim, shape {shape}")
    return shape


def check_dy(op: str, dy: Any, expected: tuple) -> None:
    """A gradient must have exactly the shape of the forward output."""
    if dy.shape != expected:
        raise ValueError(f"{op}: dy has shape {dy.shape}, expected {expected} for this geometry")


# ----------------------------------------------------------------------------- memory


def empty(device: str, shape: Sequence[int], dtype: Any) -> Any:
    """An uninitialized C-contiguous output on `device`: CuPy (from CuPy's pool), or NumPy,
    from 128 KiB on in memory reused from released outputs (`_cpu.host_empty`), so that a
    layer's output does not page-fault in fresh memory on every call."""
    try:
        if device == "cuda":
            import cupy

            return cupy.empty(tuple(shape), dtype=dtype)
        return _cpu.host_empty(tuple(shape), np.dtype(dtype))
    except ValueError as error:  # NumPy/CuPy: the byte count does not fit an address
        raise MemoryError(f"an output of shape {tuple(shape)} and dtype {np.dtype(dtype)} is "
                          f"too large to allocate ({error})") from None


def empty_like(like: Any, shape: Sequence[int], dtype: Any) -> Any:
    """`empty` on the device of the array `like`."""
    return empty(device_of(like), shape, dtype)


def gpu_workspace(nbytes: int) -> Any:
    """Temporary GPU memory for a kernel, from CuPy's pool on the current device."""
    import cupy

    return cupy.empty(int(nbytes), dtype=cupy.uint8)


def host_cache_stats() -> Dict[str, int]:
    """Idle bytes and blocks held by the host output cache, and its limit."""
    return dict(_cpu.host_cache_stats())


def measure_fma_peak(seconds: float) -> float:
    """float32 FMA throughput of all OpenMP threads in GFLOP/s, measured for `seconds`."""
    return float(_cpu.measure_fma_peak(seconds))


# ----------------------------------------------------------------------------- kernels


# FASTCONV_CUDA_SYNC=1: every GPU call synchronizes its stream and checks for errors before
# it returns, so a fault inside a kernel is reported by the call that caused it (otherwise
# it surfaces later, as an error of an unrelated call, and poisons the process). For
# debugging and the GPU checks; it serializes the host with the device.
CUDA_SYNC = os.environ.get("FASTCONV_CUDA_SYNC", "") == "1"


class _CudaKernels:
    """fastconv._cuda with the caller's context: each kernel is called with the same
    arguments as its fastconv._cpu twin plus, last, an allocator for temporary memory
    (CuPy's pool) and CuPy's current stream, so work is ordered with the caller's.

    Temporary memory goes back to CuPy's pool when the call returns, while its kernels may
    still be queued: safe with CuPy's stream-ordered pool, not inside a CUDA graph capture
    (the graph would replay with memory it no longer owns), which is refused."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        import cupy

        from . import _cuda  # type: ignore[attr-defined]

        kernel = getattr(_cuda, name)

        def launch(*args: Any) -> Any:
            stream = cupy.cuda.get_current_stream()
            if stream.is_capturing():
                raise RuntimeError(f"{name}: fastconv's GPU kernels cannot be captured into "
                                   "a CUDA graph (their temporary memory returns to CuPy's "
                                   "pool before the graph would run)")
            out = kernel(*args, gpu_workspace, stream.ptr)
            if CUDA_SYNC:
                _cuda.check_stream(stream.ptr, name)
            return out

        return launch


_CUDA_KERNELS = _CudaKernels()


def kernels(device: str) -> Any:
    """The kernels of `device`: fastconv._cpu, or the CUDA kernels with the caller's
    allocator and stream."""
    return _CUDA_KERNELS if device == "cuda" else _cpu


# ----------------------------------------------------------------------------- plans


def plain(value: object) -> bool:
    """True for exact ints, strings, None and (nested) tuples of them: values that are
    hashable, cannot change in place, and equal only values of the same types."""
    kind = type(value)
    if kind is not tuple:
        return kind is int or kind is str or value is None
    for item in value:  # type: ignore[attr-defined]
        kind = type(item)
        if kind is tuple:
            if not plain(item):
                return False
        elif kind is not int and kind is not str and item is not None:
            return False
    return True


class PlanCache:
    """The prepared plans of one op family, keyed by their validated arguments: a bounded
    LRU shared by the public functions, nn.functional and the nn layers, so a network's
    layer validates and normalizes its geometry once, not on every call.

    Only keys made of exact ints, strings, None and tuples of them are stored: those equal
    only themselves, so a key never lets an argument of another type (True for 1, a NumPy
    integer, a list that may change) skip the checks. A failed build stores nothing.
    """

    def __init__(self, maxsize: int = 512) -> None:
        self.maxsize = maxsize
        self._plans: "OrderedDict[Hashable, Any]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, build: Callable[[], Plan]) -> Plan:
        """The plan stored under `key`, or `build()` (stored when `key` is plain)."""
        if not plain(key):
            return build()
        plan = self._plans.get(key)
        if plan is not None:
            try:
                self._plans.move_to_end(key)
            except KeyError:  # evicted by another thread meanwhile: still a valid plan
                pass
            return plan
        plan = build()
        with self._lock:
            self._plans[key] = plan
            if len(self._plans) > self.maxsize:
                self._plans.popitem(last=False)
        return plan

    def __len__(self) -> int:
        return len(self._plans)

    def clear(self) -> None:
        with self._lock:
            self._plans.clear()


def dtype_key(dtype: Any) -> str:
    """A plain cache-key form of a dtype ("<f4")."""
    return dtype.str if type(dtype) in _DTYPE_TYPES else np.dtype(dtype).str


_DTYPE_TYPES = frozenset(type(d) for d in FLOAT_DTYPES)


class PlanBase:
    """What every plan shares: its device, dtype, kernels, and the fast check that an
    array is exactly what the plan was prepared for (the right array type, dtype and
    shape, C-contiguous); anything else goes through `float_arrays` for the same
    messages as the public functions."""

    __slots__ = ("op", "device", "dtype", "kernels", "_array_type")

    def __init__(self, op: str, dtype: Any, device: str) -> None:
        self.op = op
        self.device = device
        self.dtype = np.dtype(dtype)
        if self.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{op}: dtype must be float32 or float64, got {self.dtype}")
        self.dtype = FLOAT_DTYPES[FLOAT_DTYPES.index(self.dtype)]
        if device == "cuda":
            require_cuda(op)
            import cupy

            self._array_type: type = cupy.ndarray
        elif device == "cpu":
            self._array_type = np.ndarray
        else:
            raise ValueError(f"{op}: device must be 'cpu' or 'cuda', got {device!r}")
        self.kernels = kernels(device)

    def operand(self, name: str, a: Any, shape: tuple, op: Optional[str] = None) -> Any:
        """`a` checked against `shape` and the plan's dtype and device (C-contiguous)."""
        if a is None:
            raise TypeError(f"{op or self.op}: {name} must be an array, got None")
        if (type(a) is not self._array_type or a.dtype is not self.dtype
                or not a.flags.c_contiguous):
            op = op or self.op
            (a,) = float_arrays(op, **{name: a})
            if device_of(a) != self.device:
                where = "on the GPU" if device_of(a) == "cuda" else "in host memory"
                raise TypeError(f"{op}: {name} is {where} but the other arguments are not; "
                                "pass all NumPy arrays or all GPU arrays")
            if a.dtype != self.dtype:
                raise TypeError(f"{op}: {name} has dtype {a.dtype} but the other arguments "
                                f"have {self.dtype}; pass one dtype")
        if a.shape != shape:
            raise ValueError(f"{op or self.op}: {name} has shape {a.shape}, expected {shape} "
                             "for this geometry")
        return a

    def empty(self, shape: Sequence[int], dtype: Any = None) -> Any:
        """An output of this plan's device (and dtype unless given)."""
        return empty(self.device, shape, self.dtype if dtype is None else dtype)


# ----------------------------------------------------------------------------- CPU helpers


def matmul(a: Any, b: Any) -> Any:
    """a @ b, with 2-D float NumPy products on fastconv's own GEMM threads: NumPy's OpenBLAS
    pool would otherwise spin on the same cores as the convolution kernels between layers."""
    if (type(a) is np.ndarray and type(b) is np.ndarray and a.ndim == 2
            and b.ndim == 2 and a.dtype == b.dtype and a.dtype in FLOAT_DTYPES):
        a, b = native_dtype(a), native_dtype(b)
        out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
        _cpu.matmul(a, b, out)
        return out
    return a @ b


def add_into(total: Any, x: Any) -> None:
    """total += x for two arrays of one shape and dtype: float NumPy arrays on every OpenMP
    thread (NumPy uses one), others through their array module."""
    if (type(total) is np.ndarray and type(x) is np.ndarray and total.dtype == x.dtype
            and total.dtype in FLOAT_DTYPES and total.flags.c_contiguous
            and x.flags.c_contiguous):
        _cpu.add_into(total, x)
    else:
        array_module(total).add(total, x, out=total)


def tanh(a: Any) -> Any:
    """tanh elementwise into a new array; float NumPy arrays on every OpenMP thread (NumPy
    uses one)."""
    out = empty_like(a, a.shape, a.dtype)
    if type(a) is np.ndarray and a.dtype in FLOAT_DTYPES:
        _cpu.tanh(np.ascontiguousarray(a), out)
    else:
        array_module(a).tanh(a, out=out)
    return out


def _contiguous(a: Optional[Any]) -> Optional[Any]:
    return None if a is None else np.ascontiguousarray(a)


def _channel_shape(data: Any) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """The axes every per-channel statistic of data (N, C, ...) reduces over, and the shape
    that broadcasts a (C,) array against data."""
    return (0,) + tuple(range(2, data.ndim)), (1, data.shape[1]) + (1,) * (data.ndim - 2)


def batch_norm_train(data: Any, weight: Optional[Any], bias: Optional[Any], eps: float,
                     residual: Optional[Any] = None, relu: bool = False) -> Tuple[Any, ...]:
    """Training-mode batch norm of data (N, C, ...) with its batch statistics, then
    + residual (data's shape) and a ReLU when asked: (out, mean, var, invstd), the last
    three (C,) in data's dtype (var biased, invstd = 1 / sqrt(var + eps)). weight and bias
    are (C,) arrays in data's dtype or None. Float NumPy arrays run in one multi-threaded
    C++ pass per channel (sums in double), others with array operations."""
    channels = data.shape[1]
    if type(data) is np.ndarray and data.dtype in FLOAT_DTYPES:
        out = empty("cpu", data.shape, data.dtype)
        mean, var, invstd = (empty("cpu", (channels,), data.dtype) for _ in range(3))
        _cpu.batch_norm_forward(np.ascontiguousarray(data), _contiguous(weight),
                                _contiguous(bias), _contiguous(residual), relu, float(eps), out,
                                mean, var, invstd)
        return out, mean, var, invstd
    xp = array_module(data)
    axes, bshape = _channel_shape(data)
    # Sums in float64, as the C++ pass: a float32 channel sum drifts with the batch size.
    mean64 = data.mean(axis=axes, dtype=np.float64)
    var = data.var(axis=axes, dtype=np.float64).astype(data.dtype)
    mean = mean64.astype(data.dtype)
    invstd = (1.0 / xp.sqrt(var + eps)).astype(data.dtype, copy=False)
    scale = invstd if weight is None else invstd * weight
    out = (data - mean.reshape(bshape)) * scale.reshape(bshape)
    if bias is not None:
        out += bias.reshape(bshape)
    if residual is not None:
        out += residual
    if relu:
        xp.maximum(out, 0, out=out)
    return out, mean, var, invstd


def batch_norm_train_backward(grad: Any, data: Any, mean: Any, invstd: Any,
                              weight: Optional[Any], out: Optional[Any], need_x: bool,
                              need_weight: bool, need_bias: bool,
                              need_sum: bool) -> Tuple[Optional[Any], ...]:
    """Gradients of batch_norm_train given grad, the gradient of its output: (grad_x,
    grad_weight, grad_bias, grad_sum), each None unless asked for. `out` is the forward's
    output when its ReLU was on (grad is masked where out <= 0), else None; grad_sum is
    that masked gradient, which the residual receives."""
    channels = data.shape[1]
    if type(data) is np.ndarray and data.dtype in FLOAT_DTYPES:
        grads = (empty("cpu", data.shape, data.dtype) if need_x else None,
                 empty("cpu", (channels,), data.dtype) if need_weight else None,
                 empty("cpu", (channels,), data.dtype) if need_bias else None,
                 empty("cpu", data.shape, data.dtype) if need_sum else None)
        _cpu.batch_norm_backward(np.ascontiguousarray(grad, dtype=data.dtype),
                                 np.ascontiguousarray(data), mean, invstd, _contiguous(weight),
                                 _contiguous(out), *grads)
        return grads
    xp = array_module(data)
    axes, bshape = _channel_shape(data)
    count = data.size // channels
    g = grad if out is None else xp.where(out <= 0, 0, grad).astype(data.dtype, copy=False)
    xhat = (data - mean.reshape(bshape)) * invstd.reshape(bshape)
    sum_g = g.sum(axis=axes, dtype=np.float64).astype(data.dtype)
    sum_gxhat = (g * xhat).sum(axis=axes, dtype=np.float64).astype(data.dtype)
    grad_x = None
    if need_x:
        scale = invstd if weight is None else invstd * weight
        grad_x = (g - (sum_g / count).reshape(bshape)
                  - xhat * (sum_gxhat / count).reshape(bshape)) * scale.reshape(bshape)
    return (grad_x, sum_gxhat if need_weight else None, sum_g if need_bias else None,
            g if need_sum else None)


def activation_backward(kind: str, grad: Any, out: Any) -> Any:
    """grad * f'(x) for f = kind ("relu", "tanh" or "sigmoid") from the forward's output
    out = f(x), into a new array: float NumPy arrays in one multi-threaded pass, others
    with the same array expressions (bitwise equal)."""
    if type(out) is np.ndarray and out.dtype in FLOAT_DTYPES:
        result = empty("cpu", out.shape, out.dtype)
        _cpu.activation_backward(kind, np.ascontiguousarray(grad, dtype=out.dtype),
                                 np.ascontiguousarray(out), result)
        return result
    if kind == "relu":
        return array_module(out).where(out <= 0, 0, grad).astype(out.dtype, copy=False)
    if kind == "tanh":
        return grad * (1 - out * out)
    return grad * out * (1 - out)


def steps_in_place(param: Any, grad: Any) -> bool:
    """Whether the fused optimizer steps (sgd_step, adam_step) can update `param` with
    `grad`: C-contiguous float NumPy arrays of one dtype and shape."""
    return (type(param) is np.ndarray and param.dtype in FLOAT_DTYPES
            and param.flags.c_contiguous and type(grad) is np.ndarray
            and grad.dtype == param.dtype and grad.shape == param.shape
            and grad.flags.c_contiguous)


def sgd_step(params: Sequence[Any], grads: Sequence[Any], buffers: Sequence[Any],
             fresh: Sequence[bool], lr: float, momentum: float, dampening: float,
             weight_decay: float, nesterov: bool) -> None:
    """One SGD step (torch.optim.SGD's arithmetic) over every parameter array in place, in
    one multi-threaded C++ pass; all arrays pass steps_in_place and share one dtype. A
    momentum buffer marked `fresh` is set to the first decayed gradient."""
    _cpu.sgd_step(list(params), list(grads), list(buffers), list(fresh), lr, momentum,
                  dampening, weight_decay, nesterov)


def adam_step(params: Sequence[Any], grads: Sequence[Any], exp_avgs: Sequence[Any],
              exp_avg_sqs: Sequence[Any], steps: Sequence[int], lr: float, beta1: float,
              beta2: float, eps: float, weight_decay: float) -> None:
    """One Adam step (torch.optim.Adam's arithmetic) over every parameter array in place,
    in one multi-threaded C++ pass; `steps` are the step counts after this step."""
    _cpu.adam_step(list(params), list(grads), list(exp_avgs), list(exp_avg_sqs), list(steps),
                   lr, beta1, beta2, eps, weight_decay)


def channel_affine(data: Any, scale: Any, shift: Any, residual: Optional[Any] = None,
                   relu: bool = False) -> Any:
    """data * scale[c] + shift[c] (+ residual) (then ReLU) for data (N, C, ...): float NumPy
    arrays in one multi-threaded pass, others with array operations (same results)."""
    if type(data) is np.ndarray and data.dtype in FLOAT_DTYPES:
        out = empty("cpu", data.shape, data.dtype)
        _cpu.channel_affine(np.ascontiguousarray(data), np.ascontiguousarray(scale),
                            np.ascontiguousarray(shift), out,
                            None if residual is None else np.ascontiguousarray(residual), relu)
        return out
    xp = array_module(data)
    bshape = (1, data.shape[1]) + (1,) * (data.ndim - 2)
    out = data * scale.reshape(bshape)
    out += shift.reshape(bshape)
    if residual is not None:
        out += residual
    if relu:
        xp.maximum(out, 0, out=out)
    return out
