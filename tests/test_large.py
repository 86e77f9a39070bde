"""Tensors of more than 2**31 elements (opt-in: `pytest -m large tests/test_large.py`; at
most 13 GiB of memory each): a single plane longer than 2**31 and a batch whose offsets pass
2**31, for conv and pooling, spot-checked against the NumPy reference on slices (the
reference on the whole array would need several times the memory). CI runs the 2**40
stride and index cases of the other test files instead."""

from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import reference as ref

pytestmark = pytest.mark.large

BIG = 2**31 + 4099  # elements of one plane: past the int32 range, not a multiple of 64
POOL_PLANE = 2**30 + 77  # two channels: the second ends past 2**31
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


def test_max_pool_batch_offsets_past_int32() -> None:
    _need(14)
    plane = POOL_PLANE
    x = _random((1, 2, plane), 1)  # channel 1 starts past 2**30; its end past 2**31
    # Stride 4 keeps the int64 indices at a quarter of x (x 8 GiB, y 1 GiB, indices 2 GiB).
    y, idx = fastconv.max_pool(x, 5, stride=4, return_indices=True)
    out_len = (plane - 5) // 4 + 1
    assert y.shape == (1, 2, out_len) and idx.shape == y.shape
    for c in (0, 1):
        for o in (0, out_len // 2, out_len - 64):
            seg = x[0, c, 4 * o:4 * o + 4 * 63 + 5]
            expect, expect_idx = ref.max_pool(seg[None, None].astype(np.float64), (5,), (4,),
                                              (0,), (0,), False)
            np.testing.assert_array_equal(y[0, c, o:o + 64], expect[0, 0, :64])
            np.testing.assert_array_equal(idx[0, c, o:o + 64], expect_idx[0, 0, :64] + 4 * o)
    del y, idx
    avg = fastconv.avg_pool(x, 2)
    np.testing.assert_allclose(avg[0, 1, -5:], x[0, 1, 2 * (plane // 2 - 5):2 * (plane // 2)]
                               .reshape(5, 2).mean(axis=1), rtol=1e-6)
