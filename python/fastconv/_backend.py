"""Array checks shared by every public op: kind (NumPy or GPU), dtype and layout."""

from __future__ import annotations

import operator
from typing import Optional, Sequence

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


def check_dy(op: str, dy: np.ndarray, expected: tuple) -> None:
    """A gradient must have exactly the shape of the forward output."""
    if dy.shape != expected:
        raise ValueError(f"{op}: dy has shape {dy.shape}, expected {expected} for this geometry")


def check_nonempty(op: str, name: str, a: np.ndarray) -> None:
    if a.size == 0:
        raise ValueError(f"{op}: {name} has a zero-size dim, shape {a.shape}")
