"""GPU pooling (fastconv._cuda) against the CPU kernels, the NumPy reference and torch CUDA.

The CUDA kernels reproduce the CPU's operation order (max: row-major scan, first max / first
NaN wins; avg: double sums in scan order, one division; backward: the CPU's summation
order), so the GPU result must equal the CPU result bit for bit; the reference comparison
uses the CPU suite's derived tolerance. Cases, inputs and seeds come from tests/test_pool.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
from fastconv import reference as ref
from _helpers import gpu_time_ms
from test_pool import CASES, DTYPES, geometry, rand, seed_of, tolerance, window

try:  # present wherever the cuda-marked tests run (fastconv.cuda.is_available needs it)
    import cupy as cp
except ImportError:  # pragma: no cover - collection on machines without CuPy
    cp = None

pytestmark = pytest.mark.cuda


def gpu(a: np.ndarray):
    return cp.asarray(a)


def host(a) -> np.ndarray:
    assert isinstance(a, cp.ndarray), type(a)
    return cp.asnumpy(a)


def torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return torch


# ----------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", CASES)
def test_max_pool_gpu_equals_cpu(shape, kernel, stride, padding, ceil_mode, dtype):
    x = rand(shape, dtype, seed_of("max", shape, kernel, stride, padding, ceil_mode, dtype),
             ties=True)
    kw = dict(stride=stride, padding=padding, ceil_mode=ceil_mode)
    y, idx = fc.max_pool(x, kernel, return_indices=True, **kw)
    gy, gidx = fc.max_pool(gpu(x), kernel, return_indices=True, **kw)
    assert gy.dtype == dtype and gidx.dtype == np.int64
    np.testing.assert_array_equal(host(gy), y)
    np.testing.assert_array_equal(host(gidx), idx)
    np.testing.assert_array_equal(host(fc.max_pool(gpu(x), kernel, **kw)), y)
    win = window(shape, kernel, stride, padding, ceil_mode)
    ry, ridx = ref.max_pool(x, *geometry(win), ceil_mode)
    np.testing.assert_array_equal(host(gy), ry)
    np.testing.assert_array_equal(host(gidx), ridx)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", CASES)
def test_avg_pool_gpu_equals_cpu(shape, kernel, stride, padding, ceil_mode, dtype):
    x = rand(shape, dtype, seed_of("avg", shape, kernel, stride, padding, ceil_mode, dtype))
    win = window(shape, kernel, stride, padding, ceil_mode)
    for cip in (True, False):
        kw = dict(stride=stride, padding=padding, ceil_mode=ceil_mode, count_include_pad=cip)
        y = fc.avg_pool(x, kernel, **kw)
        gy = host(fc.avg_pool(gpu(x), kernel, **kw))
        np.testing.assert_array_equal(gy, y, err_msg=f"count_include_pad={cip}")
        ry = ref.avg_pool(x.astype(np.float64), *geometry(win), ceil_mode, cip)
        np.testing.assert_allclose(gy, ry, **tolerance(dtype, int(np.prod(kernel))))


# ----------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", CASES[::2])
def test_max_pool_backward_gpu_equals_cpu(shape, kernel, stride, padding, ceil_mode, dtype):
    # Ties and overlapping windows: many cells take several contributions, whose order
    # matters in floating point; the GPU must sum in the CPU's order.
    x = rand(shape, dtype, seed_of("maxb", shape, kernel, stride, padding), ties=True)
    kw = dict(stride=stride, padding=padding, ceil_mode=ceil_mode)
    y, idx = fc.max_pool(x, kernel, return_indices=True, **kw)
    dy = rand(y.shape, dtype, seed_of("maxb-dy", shape, kernel, stride, padding))
    dx = fc.max_pool_backward(dy, idx, shape)
    gdx = host(fc.max_pool_backward(gpu(dy), gpu(idx), shape))
    np.testing.assert_array_equal(gdx, dx)
    rdx = ref.max_pool_backward(dy.astype(np.float64), idx, shape)
    np.testing.assert_allclose(gdx, rdx, **tolerance(dtype, int(np.prod(kernel))))


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_backward_many_hits_on_one_cell(dtype):
    """Arbitrary indices (not from a forward pass): long runs on a few cells, any order."""
    rng = np.random.default_rng(17)
    dy = rand((3, 2, 40, 50), dtype, 18)
    idx = rng.integers(0, 6, dy.shape).astype(np.int64)  # 2000 hits on 6 cells per plane
    idx[1, 1] = 11  # one cell takes a whole plane
    shape = (3, 2, 3, 4)
    np.testing.assert_array_equal(host(fc.max_pool_backward(gpu(dy), gpu(idx), shape)),
                                  fc.max_pool_backward(dy, idx, shape))
    idx32 = gpu(idx.astype(np.int32))  # any integer dtype, converted on the device
    np.testing.assert_array_equal(host(fc.max_pool_backward(gpu(dy), idx32, shape)),
                                  fc.max_pool_backward(dy, idx, shape))


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", CASES[::2])
def test_avg_pool_backward_gpu_equals_cpu(shape, kernel, stride, padding, ceil_mode, dtype,
                                          count_include_pad):
    win = window(shape, kernel, stride, padding, ceil_mode)
    dy = rand(shape[:2] + win.out_size, dtype, seed_of("avgb", shape, kernel, stride, padding))
    kw = dict(stride=stride, padding=padding, ceil_mode=ceil_mode,
              count_include_pad=count_include_pad)
    dx = fc.avg_pool_backward(dy, shape, kernel, **kw)
    gdx = host(fc.avg_pool_backward(gpu(dy), shape, kernel, **kw))
    np.testing.assert_array_equal(gdx, dx)
    rdx = ref.avg_pool_backward(dy.astype(np.float64), shape, *geometry(win), ceil_mode,
                                count_include_pad)
    np.testing.assert_allclose(gdx, rdx, **tolerance(dtype, int(np.prod(kernel))))


# ----------------------------------------------------------------------------------------
# Special values and shapes
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_infinities_as_cpu(dtype):
    x = rand((2, 2, 6, 7), dtype, seed_of("nan", 6))
    x[0, 0, 1, 0] = np.nan
    x[0, 0, 1, 1] = np.nan  # same window: the first NaN wins
    x[1, 1, 5, 6] = np.nan  # reached only by an overhanging ceil-mode window
    x[1, 0, 0, 0] = np.inf
    x[1, 0, 0, 1] = np.nan  # NaN beats +inf
    x[0, 1] = -np.inf  # a plane of -inf: padding must never win
    for kw in (dict(stride=2, ceil_mode=True), dict(stride=1, padding=1)):
        y, idx = fc.max_pool(x, 3 if "padding" in kw else 2, return_indices=True, **kw)
        gy, gidx = fc.max_pool(gpu(x), 3 if "padding" in kw else 2, return_indices=True, **kw)
        np.testing.assert_array_equal(host(gy), y)
        np.testing.assert_array_equal(host(gidx), idx)
        a = fc.avg_pool(x, 2, ceil_mode=True)
        np.testing.assert_array_equal(host(fc.avg_pool(gpu(x), 2, ceil_mode=True)), a)


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_four_and_five_spatial_dims(dtype, ceil_mode):
    """More than 3 spatial dims take the generic (runtime-dims) kernels."""
    for shape, kernel, stride, padding in (
            ((1, 2, 5, 4, 3, 6), (3, 2, 2, 3), (2, 1, 2, 2), ((1, 0), (1, 1), (0, 1), (1, 1))),
            ((2, 1, 3, 4, 2, 3, 5), (2, 2, 1, 2, 3), (1, 2, 1, 1, 2), 0)):
        x = rand(shape, dtype, seed_of("nd", shape, ceil_mode), ties=True)
        kw = dict(stride=stride, padding=padding, ceil_mode=ceil_mode)
        y, idx = fc.max_pool(x, kernel, return_indices=True, **kw)
        gy, gidx = fc.max_pool(gpu(x), kernel, return_indices=True, **kw)
        np.testing.assert_array_equal(host(gy), y)
        np.testing.assert_array_equal(host(gidx), idx)
        dy = rand(y.shape, dtype, seed_of("nd-dy", shape, ceil_mode))
        np.testing.assert_array_equal(host(fc.max_pool_backward(gpu(dy), gidx, shape)),
                                      fc.max_pool_backward(dy, idx, shape))
        for cip in (True, False):
            np.testing.assert_array_equal(
                host(fc.avg_pool(gpu(x), kernel, count_include_pad=cip, **kw)),
                fc.avg_pool(x, kernel, count_include_pad=cip, **kw))
            np.testing.assert_array_equal(
                host(fc.avg_pool_backward(gpu(dy), shape, kernel, count_include_pad=cip, **kw)),
                fc.avg_pool_backward(dy, shape, kernel, count_include_pad=cip, **kw))


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_planes_and_grid_stride(dtype):
    """More outputs than one grid covers (grid-stride loops) and int32-overflowing strides
    are not needed here, but planes * positions well above the block count are."""
    x = rand((4, 8, 300, 301), dtype, 99)
    y, idx = fc.max_pool(x, 3, stride=1, padding=1, return_indices=True)
    gy, gidx = fc.max_pool(gpu(x), 3, stride=1, padding=1, return_indices=True)
    np.testing.assert_array_equal(host(gy), y)
    np.testing.assert_array_equal(host(gidx), idx)
    np.testing.assert_array_equal(host(fc.avg_pool(gpu(x), 3, stride=2)),
                                  fc.avg_pool(x, 3, stride=2))


# ----------------------------------------------------------------------------------------
# torch CUDA
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_torch_cuda(dtype):
    torch = torch_cuda()
    F = torch.nn.functional
    x = rand((3, 4, 17, 19), dtype, 5)
    tx = torch.as_tensor(x, device="cuda")
    gy, gidx = fc.max_pool(gpu(x), 3, stride=2, padding=1, ceil_mode=True, return_indices=True)
    ty, tidx = F.max_pool2d(tx, 3, 2, 1, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(host(gy), ty.cpu().numpy())
    np.testing.assert_array_equal(host(gidx), tidx.cpu().numpy())
    ga = host(fc.avg_pool(gpu(x), 3, stride=2, padding=1, count_include_pad=False))
    ta = F.avg_pool2d(tx, 3, 2, 1, count_include_pad=False).cpu().numpy()
    np.testing.assert_allclose(ga, ta, **tolerance(dtype, 9))
    # Gradients through torch autograd on the GPU.
    txg = tx.clone().requires_grad_(True)
    out = F.max_pool2d(txg, 3, 2, 1, ceil_mode=True)
    dy = rand(tuple(out.shape), dtype, 6)
    out.backward(torch.as_tensor(dy, device="cuda"))
    gdx = host(fc.max_pool_backward(gpu(dy), gidx, x.shape))
    np.testing.assert_allclose(gdx, txg.grad.cpu().numpy(), **tolerance(dtype, 9))


# ----------------------------------------------------------------------------------------
# Streams, result kinds, errors
# ----------------------------------------------------------------------------------------

def test_non_default_stream_and_results_stay_on_gpu():
    x = rand((2, 3, 33, 35), np.float32, 8)
    expected_y, expected_idx = fc.max_pool(x, 2, return_indices=True)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        gx = gpu(x)
        gy, gidx = fc.max_pool(gx, 2, return_indices=True)
        ga = fc.avg_pool(gx, 3, stride=2)
        gdx = fc.max_pool_backward(gy, gidx, x.shape)
        gadx = fc.avg_pool_backward(ga, x.shape, 3, stride=2)
    stream.synchronize()
    for a in (gy, gidx, ga, gdx, gadx):
        assert isinstance(a, cp.ndarray)
    np.testing.assert_array_equal(host(gy), expected_y)
    np.testing.assert_array_equal(host(gidx), expected_idx)
    np.testing.assert_array_equal(host(ga), fc.avg_pool(x, 3, stride=2))
    np.testing.assert_array_equal(host(gdx), fc.max_pool_backward(expected_y, expected_idx,
                                                                  x.shape))
    np.testing.assert_array_equal(host(gadx), fc.avg_pool_backward(fc.avg_pool(x, 3, stride=2),
                                                                   x.shape, 3, stride=2))


def test_errors_match_cpu():
    x = rand((1, 2, 8, 8), np.float32, 1)
    gx = gpu(x)
    with pytest.raises(TypeError, match=r"indices must be a GPU array"):
        fc.max_pool_backward(gpu(x[:, :, :4, :4]), np.zeros((1, 2, 4, 4), np.int64), x.shape)
    with pytest.raises(TypeError, match=r"float32 or float64"):
        fc.max_pool(gpu(x.astype(np.float16)), 2)
    with pytest.raises(ValueError, match=r"pad"):
        fc.max_pool(gx, 2, padding=2)
    y, idx = fc.max_pool(gx, 2, return_indices=True)
    for bad, shown in ((-1, -1), (64, 64)):
        broken = idx.copy()
        broken[0, 1, 2, 3] = bad
        with pytest.raises(ValueError, match=rf"indices must lie in \[0, 64\).*got {shown} at "
                           rf"flat position {16 + 2 * 4 + 3}"):
            fc.max_pool_backward(y, broken, x.shape)
    with pytest.raises(ValueError, match=r"indices has shape"):
        fc.max_pool_backward(y, idx[:, :, :2], x.shape)


def test_extension_rejects_bad_input_directly():
    from fastconv import _cuda
    from fastconv._backend import gpu_workspace

    stream = cp.cuda.get_current_stream().ptr
    x = cp.zeros((1, 1, 4, 4), cp.float32)
    out = cp.empty((1, 1, 2, 2), cp.float32)
    geo = ((2, 2), (2, 2), (0, 0), (0, 0), False)
    with pytest.raises(ValueError,
                       match=r"out has shape \(1, 1, 3, 3\), expected \(1, 1, 2, 2\)"):
        _cuda.max_pool_forward(x, cp.empty((1, 1, 3, 3), cp.float32), None, *geo,
                               gpu_workspace, stream)
    with pytest.raises(TypeError, match=r"out must have dtype float32"):
        _cuda.avg_pool_forward(x, out.astype(cp.float64), *geo, True, gpu_workspace, stream)
    with pytest.raises(TypeError, match=r"indices must have dtype int64"):
        _cuda.max_pool_forward(x, out, cp.empty((1, 1, 2, 2), cp.int32), *geo, gpu_workspace,
                               stream)
    with pytest.raises(TypeError, match=r"must be a GPU array"):
        _cuda.max_pool_forward(np.zeros((1, 1, 4, 4), np.float32), out, None, *geo,
                               gpu_workspace, stream)
    with pytest.raises(ValueError, match=r"C-contiguous"):
        _cuda.max_pool_forward(cp.zeros((1, 1, 4, 8), cp.float32)[..., ::2], out, None, *geo,
                               gpu_workspace, stream)
    with pytest.raises(ValueError, match=r"at least one spatial dim"):
        _cuda.avg_pool_forward(cp.zeros((1, 4), cp.float32), out, (2,), (2,), (0,), (0,),
                               False, True, gpu_workspace, stream)


# ----------------------------------------------------------------------------------------
# Timings (printed for a human; target: >= 70% of device-to-device copy bandwidth)
# ----------------------------------------------------------------------------------------

def test_report_pool_bandwidth(capsys):
    x = cp.asarray(rand((32, 64, 112, 112), np.float32, 3))
    src, dst = cp.empty_like(x), cp.empty_like(x)
    t_copy = gpu_time_ms(lambda: cp.copyto(dst, src))
    copy_bw = 2 * x.nbytes / t_copy / 1e6
    y, idx = fc.max_pool(x, 3, stride=2, padding=1, return_indices=True)
    a = fc.avg_pool(x, 2)
    cases = {
        "max_pool 3/2/1 + indices": (lambda: fc.max_pool(x, 3, stride=2, padding=1,
                                                         return_indices=True),
                                     x.nbytes + y.nbytes + idx.nbytes),
        "max_pool 2/2": (lambda: fc.max_pool(x, 2), x.nbytes + a.nbytes),
        "avg_pool 2/2": (lambda: fc.avg_pool(x, 2), x.nbytes + a.nbytes),
        "avg_pool_backward 2/2": (lambda: fc.avg_pool_backward(a, x.shape, 2),
                                  x.nbytes + a.nbytes),
        "max_pool_backward 3/2/1": (lambda: fc.max_pool_backward(y, idx, x.shape),
                                    x.nbytes + y.nbytes + idx.nbytes),
    }
    lines = [f"copy: {copy_bw:.0f} GB/s"]
    for name, (fn, nbytes) in cases.items():
        t = gpu_time_ms(fn)
        bw = nbytes / t / 1e6
        lines.append(f"{name}: {t:.3f} ms, {bw:.0f} GB/s ({bw / copy_bw:.2f} of copy)")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert copy_bw > 0
