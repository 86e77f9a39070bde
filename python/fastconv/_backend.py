"""Array checks shared by every public op: kind (NumPy or GPU), dtype and layout."""

from __future__ import annotations

from typing import Optional

import numpy as np

from . import cuda

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _is_gpu_array(a: object) -> bool:
    return hasattr(a, "__cuda_array_interface__")


def float_arrays(op: str, **arrays: Optional[object]) -> list:
    """Check that every named array is a NumPy float32/float64 array of one common dtype.

    Returns C-contiguous versions in argument order (None stays None). GPU arrays raise
    RuntimeError while the CUDA backend is absent; mixing NumPy and GPU arrays, other
    array types and other or mixed dtypes raise TypeError naming the argument.
    """
    present = {name: a for name, a in arrays.items() if a is not None}
    gpu = [name for name, a in present.items() if _is_gpu_array(a)]
    if gpu and len(gpu) != len(present):
        host = [name for name in present if name not in gpu]
        raise TypeError(f"{op}: {', '.join(gpu)} on the GPU but {', '.join(host)} in host "
                        "memory; pass all NumPy arrays or all GPU arrays")
    if gpu:
        cuda.require(op)
    dtype = None
    for name, a in present.items():
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(a).__name__}")
        if a.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{op}: {name} must be float32 or float64, got {a.dtype} "
                            f"(shape {a.shape})")
        if dtype is None:
            dtype = a.dtype
        elif a.dtype != dtype:
            first = next(iter(present))
            raise TypeError(f"{op}: {name} has dtype {a.dtype} but {first} has {dtype}; "
                            "pass one dtype")
    return [None if a is None else np.ascontiguousarray(a) for a in arrays.values()]


def check_ndim(op: str, name: str, a: np.ndarray, ndim: int, what: str) -> None:
    if a.ndim != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dims ({what}), got shape {a.shape}")


def check_nonempty(op: str, name: str, a: np.ndarray) -> None:
    if a.size == 0:
        raise ValueError(f"{op}: {name} has a zero-size dim, shape {a.shape}")
