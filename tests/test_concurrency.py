"""Every op family and nn inference called from 8 Python threads at once gives the same bits
as serial calls (the GIL is released around compute; workspaces, plan caches and the host
cache are shared), and the package keeps working in a forked child after use (OpenMP's
pool and the host cache are rebuilt there).

The op list is the benchmark's: a family that adds its cases to fastconv.bench.cases is
covered here without an edit."""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any, Callable, List

import numpy as np
import pytest

import fastconv
from fastconv import models, nn
from fastconv.bench.cases import cases

THREADS = 8


def _as_arrays(result: Any) -> List[np.ndarray]:
    if isinstance(result, tuple):
        return [np.asarray(part) for part in result]
    if isinstance(result, dict):  # mean_average_precision's report
        return [np.asarray(result[key], dtype=np.float64) for key in sorted(result)
                if isinstance(result[key], (float, int, np.floating, np.ndarray))]
    return [np.asarray(result)]


def _calls() -> List[Callable[[], List[np.ndarray]]]:
    """One call per smoke-sized benchmark case of every op, plus two networks' inference."""
    rng = np.random.default_rng(20)
    calls = []
    for case in cases("smoke", device="cpu"):
        problem = case.setup(rng)
        calls.append(lambda p=problem: _as_arrays(p.fastconv(*p.inputs)))
    fastconv.manual_seed(3)
    for model, shape in ((models.lenet5().eval(), (4, 1, 32, 32)),
                         (nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                                        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                        nn.Linear(8 * 8 * 8, 5)).eval(), (3, 3, 16, 16))):
        x = fastconv.Tensor(rng.standard_normal(shape).astype(np.float32))

        def infer(model=model, x=x) -> List[np.ndarray]:
            with fastconv.no_grad():
                return [model(x).data]
        calls.append(infer)
    return calls


def test_every_family_from_eight_threads_matches_serial_bits() -> None:
    calls = _calls()
    ops = {case.op for case in cases("smoke", device="cpu")}
    assert {"conv", "max_pool", "im2col", "nms", "roi_align"} <= ops
    serial = [call() for call in calls]
    results: dict = {}
    errors: list = []
    start = threading.Barrier(THREADS)

    def work(worker: int) -> None:
        start.wait()
        try:
            # Each thread walks the calls from its own offset, so different ops overlap.
            for step in range(2 * len(calls)):
                index = (worker * 3 + step) % len(calls)
                results[(worker, step)] = (index, calls[index]())
        except Exception as error:  # reported below with the thread's context
            errors.append((worker, repr(error)))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    assert errors == []
    assert len(results) == THREADS * 2 * len(calls)
    for index, got in results.values():
        assert len(got) == len(serial[index])
        for a, b in zip(got, serial[index]):
            np.testing.assert_array_equal(a, b)


def _child(queue: Any) -> None:
    rng = np.random.default_rng(21)
    x = rng.standard_normal((2, 4, 12, 12)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    from_new_thread: list = []  # a thread started in the child gets its own OpenMP pool
    worker = threading.Thread(
        target=lambda: from_new_thread.append(fastconv.conv(x, w, padding=1)))
    worker.start()
    worker.join()
    queue.put((fastconv.conv(x, w, padding=1), fastconv.max_pool(x, 2), from_new_thread[0]))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                    reason="fork start method not available on this platform")
def test_fork_after_use_gives_the_same_results() -> None:
    rng = np.random.default_rng(21)
    x = rng.standard_normal((2, 4, 12, 12)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    # Use the OpenMP pool and the host cache in the parent first.
    expected = (fastconv.conv(x, w, padding=1), fastconv.max_pool(x, 2))
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_child, args=(queue,)) for _ in range(2)]
    for child in children:
        child.start()
    got = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    for conv_out, pool_out, thread_out in got:
        np.testing.assert_array_equal(conv_out, expected[0])
        np.testing.assert_array_equal(thread_out, expected[0])
        np.testing.assert_array_equal(pool_out, expected[1])
    # And the parent still works after its children.
    np.testing.assert_array_equal(fastconv.conv(x, w, padding=1), expected[0])
