"""fastconv.dask: conv, its input gradient and pooling of Dask arrays equal the in-memory
ops bitwise on random chunkings (chunks of one cell, smaller than the halo, included) and
its weight gradient up to rounding; map_model equals the model on the whole batch, the
.npy storage round-trips, one case runs on a dask.distributed cluster of worker
processes, and the dask-demo command checks itself."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest

import fastconv
from fastconv.detection import YOLO

da = pytest.importorskip("dask.array")
fd = pytest.importorskip("fastconv.dask")


def random_chunks(rng: np.random.Generator, shape: Tuple[int, ...],
                  max_blocks: int = 120) -> Tuple[tuple, ...]:
    """A random cut of every dim into chunks of 1 cell up to the whole dim (redrawn until
    there are at most `max_blocks` blocks, so that the tests stay fast)."""
    while True:
        chunks = []
        for n in shape:
            style = rng.integers(3)
            if style == 0:
                sizes = [n]
            else:
                cap = 2 if style == 1 else max(2, n // 2)
                sizes, left = [], n
                while left:
                    sizes.append(int(min(left, rng.integers(1, cap + 1))))
                    left -= sizes[-1]
            chunks.append(tuple(sizes))
        if np.prod([len(c) for c in chunks]) <= max_blocks:
            return tuple(chunks)


CONV_CASES = [
    # (x shape, w shape, geometry)
    ((2, 3, 29), (4, 3, 5), dict()),
    ((3, 2, 31), (2, 1, 3), dict(stride=3, padding=(2,), dilation=2, groups=2)),
    ((2, 3, 17, 19), (5, 3, 3, 3), dict(padding="same")),
    ((2, 4, 16, 15), (6, 2, 3, 2), dict(stride=2, padding="same", groups=2)),
    ((1, 2, 18, 14), (3, 2, 3, 3), dict(stride=(2, 3), padding=((2, 0), (1, 2)),
                                        dilation=(2, 1))),
    ((2, 2, 13, 12), (3, 2, 2, 4), dict(stride=(4, 5), padding=1, flip=True)),
    ((1, 2, 9, 10, 11), (3, 2, 3, 3, 3), dict(padding="same")),
    ((2, 1, 10, 9, 12), (2, 1, 3, 2, 3), dict(stride=(2, 1, 3), dilation=(1, 2, 2),
                                              padding=((1, 2), (0, 1), (4, 0)))),
    # Enough channels for the GEMM paths rather than the direct convolution.
    ((2, 16, 12, 11), (24, 16, 3, 3), dict(stride=2, padding=1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, geometry", CONV_CASES)
def test_conv_equals_in_memory_bitwise(x_shape, w_shape, geometry, dtype) -> None:
    rng = np.random.default_rng(sum(x_shape) + len(w_shape))
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    bias = rng.standard_normal(w_shape[0]).astype(dtype)
    expected = fastconv.conv(x, w, bias, **geometry)
    for _ in range(4):
        chunks = random_chunks(rng, x_shape)
        y = fd.conv(da.from_array(x, chunks=chunks), w, bias, **geometry)
        assert y.shape == expected.shape and y.chunks[:1] == chunks[:1]
        assert y.chunks[1] == (w_shape[0],)
        got = y.compute(scheduler="sync")
        assert got.dtype == expected.dtype
        assert np.array_equal(got, expected), (chunks, np.abs(got - expected).max())


@pytest.mark.parametrize("x_shape, w_shape, geometry", CONV_CASES)
def test_conv_into_out_equals_in_memory_bitwise(x_shape, w_shape, geometry) -> None:
    """Blocks computed straight into a preallocated result (C-contiguous regions) or copied
    into it (the others), from chunks that are views of one array (read without a copy)
    and from chunks of a strided view (gathered by a copy)."""
    rng = np.random.default_rng(sum(x_shape) + 7)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    bias = rng.standard_normal(w_shape[0]).astype(np.float32)
    wide = np.repeat(x, 2, axis=-1)
    for source in (x, wide[..., ::2]):
        expected = fastconv.conv(source, w, bias, **geometry)
        for _ in range(3):
            chunks = random_chunks(rng, x_shape)
            out = rng.standard_normal(expected.shape).astype(np.float32)
            y = fd.conv(da.from_array(source, chunks=chunks), w, bias, out=out, **geometry)
            assert y.chunks[2:] == fd.conv(da.from_array(source, chunks=chunks), w,
                                           **geometry).chunks[2:]
            y.persist(scheduler="threads", num_workers=2)
            assert np.array_equal(out, expected), (chunks, np.abs(out - expected).max())


@pytest.mark.parametrize("x_shape, w_shape, geometry", [
    case for case in CONV_CASES if not case[2].get("flip")])
def test_conv_backward_input_equals_in_memory_bitwise(x_shape, w_shape, geometry) -> None:
    rng = np.random.default_rng(sum(x_shape) + 2 * len(w_shape))
    w = rng.standard_normal(w_shape).astype(np.float32)
    out_shape = fastconv.conv(np.zeros(x_shape, np.float32), w, **geometry).shape
    dy = rng.standard_normal(out_shape).astype(np.float32)
    expected = fastconv.conv_backward_input(dy, w, x_shape, **geometry)
    for _ in range(3):
        chunks = random_chunks(rng, out_shape)
        dx = fd.conv_backward_input(da.from_array(dy, chunks=chunks), w, x_shape, **geometry)
        assert dx.shape == expected.shape and dx.chunks[:2] == (chunks[0], (x_shape[1],))
        got = dx.compute(scheduler="sync")
        assert np.array_equal(got, expected), (chunks, np.abs(got - expected).max())


@pytest.mark.parametrize("x_shape, w_shape, geometry", [
    case for case in CONV_CASES if not case[2].get("flip")])
def test_conv_backward_weight_equals_in_memory_up_to_rounding(x_shape, w_shape,
                                                              geometry) -> None:
    # A sum over blocks in another order than the kernel's: equal up to float rounding.
    rng = np.random.default_rng(sum(x_shape) + 3 * len(w_shape))
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    dy = rng.standard_normal(fastconv.conv(x, w, **geometry).shape)
    expected = fastconv.conv_backward_weight(x, dy, w_shape[2:], **geometry)
    for _ in range(2):
        dw = fd.conv_backward_weight(da.from_array(x, chunks=random_chunks(rng, x_shape)),
                                     da.from_array(dy, chunks=random_chunks(rng, dy.shape)),
                                     w_shape[2:], **geometry)
        assert dw.chunks == tuple((n,) for n in w_shape)
        np.testing.assert_allclose(dw.compute(scheduler="sync"), expected, rtol=1e-12,
                                   atol=1e-12 * np.abs(expected).max())


POOL_CASES = [
    # (x shape, kernel_size, geometry)
    ((2, 3, 23), 3, dict()),
    ((2, 2, 22), 4, dict(stride=3, padding=2, ceil_mode=True)),
    ((2, 3, 15, 17), 3, dict(stride=2, padding=1)),
    ((1, 2, 14, 13), (2, 3), dict(stride=1, padding=((1, 0), (1, 1)))),
    ((2, 2, 13, 16), 3, dict(stride=2, ceil_mode=True, padding="same")),
    ((2, 2, 11, 12, 13), 3, dict(stride=(3, 2, 1), padding=(1, 0, 1), ceil_mode=True)),
    ((1, 3, 9, 8, 10), (2, 3, 2), dict(stride=(2, 2, 3))),
]


@pytest.mark.parametrize("kind", ["max", "avg", "avg_exclude_pad"])
@pytest.mark.parametrize("x_shape, kernel, geometry", POOL_CASES)
def test_pool_equals_in_memory_bitwise(x_shape, kernel, geometry, kind) -> None:
    rng = np.random.default_rng(sum(x_shape))
    dtype = np.float64 if kind == "avg" else np.float32
    x = rng.standard_normal(x_shape).astype(dtype)
    if kind == "max":
        memory_op, dask_op, extra = fastconv.max_pool, fd.max_pool, {}
    else:
        memory_op, dask_op = fastconv.avg_pool, fd.avg_pool
        extra = {"count_include_pad": kind == "avg"}
    expected = memory_op(x, kernel, **geometry, **extra)
    for _ in range(4):
        chunks = random_chunks(rng, x_shape)
        y = dask_op(da.from_array(x, chunks=chunks), kernel, **geometry, **extra)
        assert y.shape == expected.shape and y.chunks[:2] == chunks[:2]
        got = y.compute(scheduler="sync")
        assert np.array_equal(got, expected), (chunks, np.abs(got - expected).max())


def test_stride_aligned_chunks_give_divided_output_chunks() -> None:
    x = da.from_array(np.random.default_rng(1).standard_normal((2, 1, 24, 36)),
                      chunks=(1, 1, 8, 12))
    w = np.ones((1, 1, 3, 3))
    assert fd.conv(x, w, padding="same").chunks[2:] == ((8, 8, 8), (12, 12, 12))
    assert fd.conv(x, w, stride=2, padding="same").chunks[2:] == ((4, 4, 4), (6, 6, 6))
    assert fd.max_pool(x, 4).chunks[2:] == ((2, 2, 2), (3, 3, 3))


def test_pipeline_of_ops_and_threaded_scheduler() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 2, 20, 21, 22)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3, 3)).astype(np.float32)
    expected = fastconv.avg_pool(fastconv.conv(x, w, padding="same"), 2, ceil_mode=True)
    y = fd.avg_pool(fd.conv(da.from_array(x, chunks=(1, 1, 7, 6, 9)), w, padding="same"), 2,
                    ceil_mode=True)
    assert np.array_equal(y.compute(scheduler="threads", num_workers=2), expected)


@pytest.mark.parametrize("call, error, words", [
    (lambda x, w: fd.conv(np.zeros((1, 1, 5)), w), TypeError, "x must be a dask"),
    (lambda x, w: fd.conv(x.astype(np.int32), w), TypeError, "x must be float32"),
    (lambda x, w: fd.conv(x, w.astype(np.float64)), TypeError, "w has dtype float64"),
    (lambda x, w: fd.conv(x, [[[1.0]]]), TypeError, "w must be a NumPy or CuPy"),
    (lambda x, w: fd.conv(x, da.from_array(w)), TypeError, "w must be a NumPy or CuPy"),
    (lambda x, w: fd.conv(x, w, np.zeros(3, np.float32)), ValueError, "bias must have shape"),
    (lambda x, w: fd.conv(x, w, groups=2), ValueError, "groups=2"),
    (lambda x, w: fd.conv(x, w, out=np.zeros((2, 2, 5), np.float32)), ValueError,
     "out must have the output's shape (2, 2, 6)"),
    (lambda x, w: fd.conv(x, w, out=np.zeros((2, 2, 6))), TypeError, "out has dtype"),
    (lambda x, w: fd.conv(x, w, padding=5), ValueError, "padding"),
    (lambda x, w: fd.conv(x, w[..., None]), ValueError, "must have 4 dims"),
    (lambda x, w: fd.conv(x, np.zeros((2, 1, 9), np.float32)), ValueError, "kernel_size"),
    (lambda x, w: fd.max_pool(x[:, :, :0], 2), ValueError, "zero-size"),
    (lambda x, w: fd.max_pool(x, 2, padding=2), ValueError, "padding"),
    (lambda x, w: fd.avg_pool(x, 0), ValueError, "kernel_size"),
    (lambda x, w: fd.conv_backward_input(x, w, (2, 1, 7)), ValueError, "dy has shape"),
    (lambda x, w: fd.conv_backward_input(x, w, (2, 1)), ValueError, "input_shape"),
    (lambda x, w: fd.conv_backward_input(x.compute(), w, (2, 1, 10)), TypeError,
     "dy must be a dask"),
    (lambda x, w: fd.conv_backward_weight(x, x, 3), ValueError, "dy has shape"),
    (lambda x, w: fd.conv_backward_weight(x, x.astype(np.float64), 1), TypeError,
     "dy has dtype"),
    (lambda x, w: fd.conv_backward_weight(x, x, (1, 1)), ValueError, "kernel_size"),
    (lambda x, w: fd.avg_pool(x, 2, stride="2"), TypeError, "stride"),
    (lambda x, w: fd.max_pool(x[0, 0], 2), ValueError, "(N, C, *spatial)"),
])
def test_bad_input_raises_naming_the_argument(call, error, words) -> None:
    x = da.from_array(np.ones((2, 1, 8), np.float32), chunks=3)
    w = np.ones((2, 1, 3), np.float32)
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)").replace(
            "*", r"\*")):
        call(x, w)


def test_map_model_equals_the_model_on_the_whole_batch() -> None:
    fastconv.manual_seed(0)
    model = fastconv.models.lenet5().eval()
    x = np.random.default_rng(3).standard_normal((13, 1, 32, 32)).astype(np.float32)
    with fastconv.no_grad():
        expected = model(fastconv.Tensor(x)).numpy()
    y = fd.map_model(model, da.from_array(x, chunks=(4, 1, 16, 32)))
    assert y.chunks == ((4, 4, 4, 1), (10,))
    # Not bitwise: a smaller batch changes how the kernels fold images into one GEMM.
    np.testing.assert_allclose(y.compute(scheduler="threads"), expected, rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(TypeError, match="model must be a fastconv.nn.Module"):
        fd.map_model(lambda t: t, da.from_array(x))


def test_detect_equals_yolo_detect_per_image() -> None:
    fastconv.manual_seed(2)
    anchors = np.array([[0.2, 0.2], [0.4, 0.25]])
    model = YOLO(3, anchors, channels=(8, 16), unpooled=1, image_size=(32, 32)).eval()
    images = np.random.default_rng(4).standard_normal((7, 3, 32, 32)).astype(np.float32)
    # A low threshold so that the random network yields detections to compare.
    expected = model.detect(images, score_threshold=0.05, iou_threshold=0.5)
    bag = fd.detect(model, da.from_array(images, chunks=(3, 3, 16, 32)), score_threshold=0.05)
    assert bag.npartitions == 3
    got = bag.compute(scheduler="threads")
    assert len(got) == 7 and sum(len(d["scores"]) for d in got) > 0
    for g, e in zip(got, expected):
        for key in ("boxes", "scores", "labels"):
            np.testing.assert_array_equal(g[key], e[key])
    with pytest.raises(TypeError, match="model must be a fastconv.detection.YOLO"):
        fd.detect(fastconv.models.lenet5(), da.from_array(images))
    with pytest.raises(ValueError, match=r"images must be \(N, C, H, W\)"):
        fd.detect(model, da.from_array(images[:, :, 0]))


def test_unpickled_arrays_and_models_run() -> None:
    # What a worker process receives: arrays whose dtype is an equal but distinct instance.
    fastconv.manual_seed(1)
    model = fastconv.models.lenet5().eval()
    x = np.random.default_rng(7).standard_normal((2, 1, 32, 32)).astype(np.float32)
    with fastconv.no_grad():
        expected = model(fastconv.Tensor(x)).numpy()
    model_copy, x_copy = pickle.loads(pickle.dumps((model, x)))
    with fastconv.no_grad():
        assert np.array_equal(model_copy(fastconv.Tensor(x_copy)).numpy(), expected)
    assert np.array_equal(fastconv.max_pool(x_copy, 2), fastconv.max_pool(x, 2))


def test_npy_storage_round_trip(tmp_path: Path) -> None:
    x = np.random.default_rng(4).standard_normal((3, 2, 10, 7)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    dx = fd.from_npy(tmp_path / "x.npy", chunks=(2, 1, 4, 7))
    assert dx.chunks == ((2, 1), (1, 1), (4, 4, 2), (7,))
    fd.to_npy(dx[:, :, ::2] * 2, tmp_path / "y.npy")
    assert np.array_equal(np.load(tmp_path / "y.npy"), x[:, :, ::2] * 2)


def test_local_cluster_of_processes() -> None:
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2, 12, 13)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    expected = fastconv.max_pool(fastconv.conv(x, w, padding="same"), 2)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None, worker_dashboard_address=None) \
            as cluster, distributed.Client(cluster, timeout="60s") as client:
        y = fd.max_pool(fd.conv(da.from_array(x, chunks=(1, 2, 5, 6)), w, padding="same"), 2)
        got = client.compute(y).result(timeout=60)
    assert np.array_equal(got, expected)


@pytest.mark.cuda
def test_cupy_chunks_run_on_the_gpu() -> None:
    import cupy

    rng = np.random.default_rng(6)
    x = cupy.asarray(rng.standard_normal((2, 3, 14, 15)).astype(np.float32))
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    expected = fastconv.max_pool(fastconv.conv(x, cupy.asarray(w), padding="same"), 3,
                                 stride=2, ceil_mode=True)
    y = fd.max_pool(fd.conv(da.from_array(x, chunks=(1, 3, 4, 6)), w, padding="same"), 3,
                    stride=2, ceil_mode=True)
    assert isinstance(y._meta, cupy.ndarray)
    got = y.compute(scheduler="sync")
    assert isinstance(got, cupy.ndarray)
    assert bool(cupy.array_equal(got, expected))


def test_dask_demo_quick_checks_itself(tmp_path: Path) -> None:
    from fastconv import cli

    assert cli.main(["dask-demo", "--quick", "--no-progress", "--dir", str(tmp_path)]) == 0
    assert not list(tmp_path.iterdir())
