"""Shared test helpers: dtype-derived tolerances and torch padding glue."""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np


def assert_within_rounding(result: np.ndarray, exact: np.ndarray, magnitude: np.ndarray,
                           terms: int, dtype: np.dtype) -> None:
    """Check `result` against a float64 `exact` value with a tolerance derived from `dtype`.

    `magnitude` is the sum of |products| behind each output element and `terms` the number
    of additions; any summation order stays within terms * eps * magnitude (the classic
    bound), so the test holds for a correct kernel yet fails on any real indexing error.
    """
    assert result.shape == exact.shape, (result.shape, exact.shape)
    assert result.dtype == dtype, (result.dtype, dtype)
    eps = np.finfo(dtype).eps
    bound = (terms + 2) * eps * np.asarray(magnitude, dtype=np.float64) + np.finfo(dtype).tiny
    err = np.abs(result.astype(np.float64) - exact)
    worst = np.argmax(err - bound) if err.size else 0
    assert np.all(err <= bound), (
        f"max error {err.max():.3e} exceeds bound at flat index {worst}: "
        f"err {err.flat[worst]:.3e} > bound {bound.flat[worst]:.3e}")


def torch_pad_arg(before: Sequence[int], after: Sequence[int]) -> Tuple[int, ...]:
    """torch.nn.functional.pad wants (last_before, last_after, prev_before, ...)."""
    out: list = []
    for b, a in zip(reversed(before), reversed(after)):
        out += [b, a]
    return tuple(out)


def random_array(rng: np.random.Generator, shape: Sequence[int], dtype) -> np.ndarray:
    """Fresh standard-normal data (never all zero) in `dtype`."""
    return rng.standard_normal(tuple(shape)).astype(dtype)


def gpu_time_ms(fn, reps: int = 10) -> float:
    """Mean milliseconds of fn() on the current CuPy stream, by CUDA events, after one
    warm-up call (CuPy's pool, lazy module loading)."""
    import cupy as cp

    fn()
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    for _ in range(reps):
        fn()
    stop.record()
    stop.synchronize()
    return cp.cuda.get_elapsed_time(start, stop) / reps
