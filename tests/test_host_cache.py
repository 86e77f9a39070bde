"""The output cache behind the CPU ops (cpp/host_cache.cpp): a released output's memory is
reused, a live one's never, and the results of the ops that use it stay right."""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastconv
from fastconv import _cpu, reference

CACHED = (64, 6, 28, 28)  # 1.2 MB of float32: above the 128 KiB floor


def _address_range(a: np.ndarray) -> range:
    start = a.__array_interface__["data"][0]
    return range(start, start + a.nbytes)


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    ra, rb = _address_range(a), _address_range(b)
    return ra.start < rb.stop and rb.start < ra.stop


def test_large_outputs_come_from_the_cache_small_ones_from_numpy() -> None:
    large = _cpu.host_empty(CACHED, np.dtype(np.float32))
    small = _cpu.host_empty((7, 5), np.dtype(np.float64))
    assert type(large.base).__name__ == "_HostBlock"
    assert small.base is None
    for a, shape, dtype in ((large, CACHED, np.float32), (small, (7, 5), np.float64)):
        assert a.shape == shape and a.dtype == dtype
        assert a.flags.c_contiguous and a.flags.writeable and a.flags.aligned
    assert large.__array_interface__["data"][0] % 64 == 0


def test_released_block_is_reused_and_live_ones_are_not() -> None:
    rng = np.random.default_rng()
    a = _cpu.host_empty(CACHED, np.dtype(np.float32))
    a[...] = rng.standard_normal(CACHED)
    keep = a.copy()
    b = _cpu.host_empty(CACHED, np.dtype(np.float32))
    b[...] = -1.0
    assert not _overlap(a, b)
    np.testing.assert_array_equal(a, keep)

    start = a.__array_interface__["data"][0]
    reuses = _cpu.host_cache_stats()["reuses"]
    del a
    # A slightly smaller array of the same size class takes the released block.
    c = _cpu.host_empty((64, 6, 28, 27), np.dtype(np.float32))
    assert c.__array_interface__["data"][0] == start
    assert _cpu.host_cache_stats()["reuses"] == reuses + 1
    del b, c


def test_a_view_keeps_the_block_alive() -> None:
    a = _cpu.host_empty(CACHED, np.dtype(np.float32))
    a[...] = np.arange(a.size, dtype=np.float32).reshape(CACHED)
    view = a[3:5, ::2]
    expected = view.copy()
    del a
    others = [_cpu.host_empty(CACHED, np.dtype(np.float32)) for _ in range(3)]
    for other in others:
        other[...] = 7.0
        assert not _overlap(other, view.base)
    np.testing.assert_array_equal(view, expected)


def test_release_hands_idle_memory_back() -> None:
    arrays = [_cpu.host_empty(CACHED, np.dtype(np.float32)) for _ in range(3)]
    del arrays
    assert _cpu.host_cache_stats()["idle_bytes"] > 0
    assert _cpu.host_cache_release() > 0
    stats = _cpu.host_cache_stats()
    assert stats["idle_bytes"] == 0 and stats["idle_blocks"] == 0


def test_cached_outputs_pickle_and_share_with_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng()
    x = rng.standard_normal((2, 8, 40, 40)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    y = fastconv.conv(x, w, padding=1)
    assert type(y.base).__name__ == "_HostBlock"
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(y)), y)
    t = torch.from_numpy(y)
    assert t.data_ptr() == y.__array_interface__["data"][0]
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1)
    np.testing.assert_allclose(t.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)


def test_ops_on_reused_memory_stay_right() -> None:
    """Outputs written into recycled (dirty) blocks: every element must be overwritten."""
    rng = np.random.default_rng()
    for _ in range(4):
        x = rng.standard_normal((4, 8, 30, 30)).astype(np.float32)
        w = rng.standard_normal((12, 8, 3, 3)).astype(np.float32)
        dirty = [_cpu.host_empty((4, 12, 30, 30), np.dtype(np.float32)) for _ in range(2)]
        for d in dirty:
            d[...] = np.nan
        del dirty
        one, two = (1, 1), (2, 2)
        np.testing.assert_allclose(fastconv.conv(x, w, padding=1),
                                   reference.conv(x, w, None, one, one, one, one),
                                   rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(fastconv.max_pool(x, 2),
                                      reference.max_pool(x, two, two, (0, 0), (0, 0), False)[0])
        np.testing.assert_array_equal(fastconv.im2col(x, (3, 3), padding=1),
                                      reference.im2col(x, (3, 3), one, one, one, one))


def test_threads_never_share_a_live_block() -> None:
    rng = np.random.default_rng()
    x = rng.standard_normal((2, 8, 32, 32)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    one = (1, 1)
    expected = reference.conv(x, w, None, one, one, one, one)
    failures: list = []

    def work(seed: int) -> None:
        held = []
        for i in range(40):
            y = fastconv.conv(x, w, padding=1)
            y *= 1.0  # touch it while others allocate
            held.append(y)
            if len(held) > 3:
                held.pop(0)
            if not np.allclose(y, expected, rtol=1e-4, atol=1e-4):
                failures.append((seed, i))

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def _run(code: str, env_value: str) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, FASTCONV_HOST_CACHE_MB=env_value)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)


def test_limit_and_off_switch_from_the_environment() -> None:
    code = ("import numpy as np; from fastconv import _cpu\n"
            "arrays = [_cpu.host_empty((1 << 18,), np.dtype(np.float32)) for _ in range(8)]\n"
            "del arrays\n"
            "s = _cpu.host_cache_stats()\n"
            "a = _cpu.host_empty((1 << 18,), np.dtype(np.float32))\n"
            "print(s['idle_bytes'], s['limit_bytes'], type(a.base).__name__)\n")
    capped = _run(code, "2")
    assert capped.returncode == 0, capped.stderr
    idle, limit, base = capped.stdout.split()
    assert int(limit) == 2 << 20 and 0 < int(idle) <= 2 << 20 and base == "_HostBlock"

    off = _run(code, "0")
    assert off.returncode == 0, off.stderr
    assert off.stdout.split() == ["0", "0", "NoneType"]

    bad = _run(code, "lots")
    assert bad.returncode != 0
    assert "FASTCONV_HOST_CACHE_MB" in bad.stderr and "ValueError" in bad.stderr
