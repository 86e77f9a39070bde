"""Tensors of more than 2**31 elements (opt-in: `pytest -m large tests/test_large.py`; at
most 13 GiB of memory each): a single plane of more than 2**31 cells for conv and pooling,
spot-checked against the NumPy reference on slices (the reference on the whole array would
need several times the memory). CI runs the 2**40
stride and index cases of the other test files instead."""

from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import reference as ref

pytestmark = pytest.mark.large

BIG = 2**31 + 4099  # elements of one plane: past the int32 range, not a multiple of 64
POOL_PLANE = (2**16 + 3, 2**15 + 5)  # rows x columns: 2**31 + 425,999 cells
CHUNK = 1 << 26


def _available_gib() -> float:
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) / 2**20


def _random(shape, seed: int) -> np.ndarray:
    out = np.empty(shape, np.float32)
    flat = out.reshape(-1)
    rng = np.random.default_rng(seed)
    for start in range(0, flat.size, CHUNK):
        stop = min(flat.size, start + CHUNK)
        flat[start:stop] = rng.standard_normal(stop - start, dtype=np.float32)
    return out


def _need(gib: float) -> None:
    if _available_gib() < gib:
        pytest.skip(f"needs {gib} GiB of free memory, {_available_gib():.1f} available")


def _windows(length: int, out_len: int, stride: int, kernel: int, picks):
    """(output slice, input slice) pairs at the start, the middle, past 2**31 and the end."""
    for o in picks(out_len):
        o = max(0, min(out_len - 64, o))
        yield slice(o, o + 64), slice(o * stride, min(length, (o + 63) * stride + kernel))


def _picks(n: int):
    return (0, n // 2, (2**31) // 2 - 32, 2**31 // 2 + 5, n - 64)


def test_conv_one_plane_past_int32() -> None:
    _need(14)
    x = _random((1, 1, BIG), 0)
    w = np.array([[[0.5, -1.25, 2.0]]], np.float32)
    y = fastconv.conv(x, w, stride=2)
    out_len = (BIG - 3) // 2 + 1
    assert y.shape == (1, 1, out_len)
    for out_slice, in_slice in _windows(BIG, out_len, 2, 3, _picks):
        expect = ref.conv(x[..., in_slice].astype(np.float64), w.astype(np.float64), None,
                          (2,), (0,), (0,), (1,))
        np.testing.assert_allclose(y[..., out_slice], expect[..., :64], rtol=1e-5, atol=1e-5)
    # the last output reads the last inputs
    np.testing.assert_allclose(y[0, 0, -1], np.dot(x[0, 0, 2 * (out_len - 1):][:3], w[0, 0]),
                               rtol=1e-5)


def test_pool_one_plane_past_int32() -> None:
    """A 2-D plane of more than 2**31 cells: flat indices past the int32 range. (A 1-D plane
    that long would also work, but pooling keeps one row per thread in a workspace, and a
    1-D row is the whole plane: twice the memory of x on two threads.)"""
    _need(13)
    h, w = POOL_PLANE
    x = _random((1, 1, h, w), 1)
    y, idx = fastconv.max_pool(x, 3, stride=4, return_indices=True)
    out = ((h - 3) // 4 + 1, (w - 3) // 4 + 1)
    assert y.shape == (1, 1) + out and idx.shape == y.shape
    for r in (0, out[0] // 2, out[0] - 1):
        rows = x[:, :, 4 * r:4 * r + 3]
        expect, expect_idx = ref.max_pool(rows.astype(np.float64), (3, 3), (4, 4), (0, 0),
                                          (0, 0), False)
        np.testing.assert_array_equal(y[:, :, r], expect[:, :, 0])
        np.testing.assert_array_equal(idx[:, :, r], expect_idx[:, :, 0] + 4 * r * w)
    assert idx.max() > 2**31
    del y, idx
    avg = fastconv.avg_pool(x, 2)
    oh, ow = h // 2, w // 2  # odd sizes: the last row and column of x are dropped
    corner = x[0, 0, 2 * oh - 2:2 * oh, 2 * ow - 10:2 * ow].astype(np.float64)
    np.testing.assert_allclose(avg[0, 0, -1, -5:], corner.reshape(2, 5, 2).mean(axis=(0, 2)),
                               rtol=1e-6)
