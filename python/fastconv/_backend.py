"""Array checks shared by every public op: kind (NumPy or GPU), dtype and layout."""

from __future__ import annotations

import operator
from typing import Any, Callable, Optional, Sequence

import numpy as np

from . import _cpu, cuda

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def is_gpu(a: Any) -> bool:
    """True for GPU arrays: anything exposing `__cuda_array_interface__`."""
    return hasattr(a, "__cuda_array_interface__")


def float_arrays(op: str, **arrays: Optional[object]) -> list:
    """Check that the named arrays are float32/float64 arrays of one kind and one dtype.

    All NumPy arrays (CPU) or all GPU arrays: CuPy arrays and any object exposing
    `__cuda_array_interface__` (viewed as CuPy arrays without a copy). Returns C-contiguous
    arrays in argument order (None stays None). Mixing host and GPU arrays, other array
    types and other or mixed dtypes raise TypeError naming the argument; GPU arrays raise
    RuntimeError with the reason when the CUDA backend cannot run here.
    """
    # The common case first, without the general walk below (a few microseconds a call,
    # which batch-1 layers notice): C-contiguous NumPy arrays of one float dtype.
    dtype = None
    for a in arrays.values():
        if a is None:
            continue
        if (type(a) is not np.ndarray or not a.flags.c_contiguous
                or a.dtype not in FLOAT_DTYPES or (dtype is not None and a.dtype != dtype)):
            break
        dtype = a.dtype
    else:
        return list(arrays.values())
    present = {name: a for name, a in arrays.items() if a is not None}
    gpu = [name for name, a in present.items() if is_gpu(a)]
    if gpu and len(gpu) != len(present):
        host = [name for name in present if name not in gpu]
        raise TypeError(f"{op}: {', '.join(gpu)} on the GPU but {', '.join(host)} in host "
                        "memory; pass all NumPy arrays or all GPU arrays")
    if gpu:
        cuda.require(op)
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
    return [None if a is None else xp.ascontiguousarray(a) for a in arrays.values()]


def index_array(op: str, name: str, a: Any, like: Any) -> Any:
    """`a` as a C-contiguous int64 array of the same kind (NumPy or GPU) as `like`."""
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


def array_module(a: Any) -> Any:
    """numpy or cupy, whichever `a` belongs to."""
    if is_gpu(a):
        import cupy

        return cupy
    return np


def empty(like: Any, shape: Sequence[int], dtype: Any) -> Any:
    """An uninitialized C-contiguous output of the caller's kind: CuPy (from CuPy's pool),
    or NumPy, from 128 KiB on in memory reused from released outputs (`_cpu.host_empty`),
    so that a layer's output does not page-fault in fresh memory on every call."""
    if is_gpu(like):
        import cupy

        return cupy.empty(tuple(shape), dtype=dtype)
    return _cpu.host_empty(tuple(shape), np.dtype(dtype))


def gpu_workspace(nbytes: int) -> Any:
    """Temporary GPU memory for a kernel, from CuPy's pool on the current device."""
    import cupy

    return cupy.empty(int(nbytes), dtype=cupy.uint8)


class _CudaKernels:
    """fastconv._cuda with the caller's context: each kernel is called with the same
    arguments as its fastconv._cpu twin plus, last, an allocator for temporary memory
    (CuPy's pool) and CuPy's current stream, so work is ordered with the caller's."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        import cupy

        from . import _cuda  # type: ignore[attr-defined]

        kernel = getattr(_cuda, name)

        def launch(*args: Any) -> Any:
            return kernel(*args, gpu_workspace, cupy.cuda.get_current_stream().ptr)

        return launch


_CUDA_KERNELS = _CudaKernels()


def kernels(like: Any) -> Any:
    """The kernel module for `like`'s kind: fastconv._cpu, or the CUDA kernels."""
    return _CUDA_KERNELS if is_gpu(like) else _cpu


def full_shape(op: str, name: str, shape: Sequence[int], ndim: int) -> tuple:
    """`shape` (N, C, *spatial) as a tuple of `ndim` positive ints, or a clear error."""
    try:
        shape = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"{op}: {name} must be a tuple of ints, got {shape!r}") from None
    if len(shape) != ndim:
        raise ValueError(f"{op}: {name} {shape} must have {ndim} entries (N, C, *spatial)")
    if any(s < 1 for s in shape):
        raise ValueError(f"{op}: {name} {shape} must be positive in every dim")
    return shape


def check_dy(op: str, dy: Any, expected: tuple) -> None:
    """A gradient must have exactly the shape of the forward output."""
    if dy.shape != expected:
        raise ValueError(f"{op}: dy has shape {dy.shape}, expected {expected} for this geometry")


def check_nonempty(op: str, name: str, a: Any) -> None:
    if a.size == 0:
        raise ValueError(f"{op}: {name} has a zero-size dim, shape {a.shape}")
