"""max_pool / avg_pool and their gradients against the NumPy reference and PyTorch CPU,
and the CUDA kernels (tests marked `cuda`) against the CPU kernels, the reference and torch
CUDA: they reproduce the CPU's operation order (max: row-major scan, first max / first NaN
wins; avg: double sums in scan order, one division; backward: the CPU's summation order), so
the GPU result must equal the CPU result bit for bit, and the reference within the CPU
suite's derived tolerance.
"""

from __future__ import annotations

import itertools

import fastconv as fc
import numpy as np
import pytest
from fastconv import _cpu
from fastconv import reference as ref
from fastconv._geometry import make_window
from _cases import (POOL_CASES as CASES, POOL_KERNELS as KERNELS, POOL_SHAPES as SHAPES, cp,
                    distinct, gpu, host, make_padding, pool_geometry as geometry,
                    pool_window as window, rand, seed_of, tolerance, torch_cuda)

torch = pytest.importorskip("torch")
F = torch.nn.functional

DTYPES = [np.float32, np.float64]
TORCH_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
TORCH_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


# ----------------------------------------------------------------------------------------
# Forward against the reference
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", CASES)
def test_max_pool_matches_reference(shape, kernel, stride, padding, ceil_mode, dtype):
    x = rand(shape, dtype, seed_of("max", shape, kernel, stride, padding, ceil_mode, dtype),
             ties=True)
    win = window(shape, kernel, stride, padding, ceil_mode)
    y, idx = fc.max_pool(x, kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                         return_indices=True)
    ry, ridx = ref.max_pool(x, *geometry(win), ceil_mode)
    assert y.dtype == dtype and idx.dtype == np.int64
    assert y.shape == shape[:2] + win.out_size
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(y, ry)
    y_only = fc.max_pool(x, kernel, stride=stride, padding=padding, ceil_mode=ceil_mode)
    np.testing.assert_array_equal(y_only, y)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", CASES)
def test_avg_pool_matches_reference(shape, kernel, stride, padding, ceil_mode, dtype):
    x = rand(shape, dtype, seed_of("avg", shape, kernel, stride, padding, ceil_mode, dtype))
    win = window(shape, kernel, stride, padding, ceil_mode)
    for count_include_pad in (True, False):
        y = fc.avg_pool(x, kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                        count_include_pad=count_include_pad)
        ry = ref.avg_pool(x.astype(np.float64), *geometry(win), ceil_mode, count_include_pad)
        assert y.dtype == dtype and y.shape == ry.shape
        np.testing.assert_allclose(y, ry, **tolerance(dtype, int(np.prod(kernel))),
                                   err_msg=f"count_include_pad={count_include_pad}")


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", CASES[::3])
def test_avg_pool_backward_matches_reference(shape, kernel, stride, padding, ceil_mode, dtype,
                                             count_include_pad):
    win = window(shape, kernel, stride, padding, ceil_mode)
    dy = rand(shape[:2] + win.out_size, dtype, seed_of("avgb", shape, kernel, stride, padding))
    dx = fc.avg_pool_backward(dy, shape, kernel, stride=stride, padding=padding,
                              ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    rdx = ref.avg_pool_backward(dy.astype(np.float64), shape, *geometry(win), ceil_mode,
                                count_include_pad)
    assert dx.dtype == dtype and dx.shape == shape
    np.testing.assert_allclose(dx, rdx, **tolerance(dtype, int(np.prod(kernel))))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", CASES[1::3])
def test_max_pool_backward_matches_reference(shape, kernel, stride, padding, ceil_mode, dtype):
    x = rand(shape, dtype, seed_of("maxb", shape, kernel, stride, padding, ceil_mode), ties=True)
    y, idx = fc.max_pool(x, kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                         return_indices=True)
    dy = rand(y.shape, dtype, seed_of("maxb-dy", shape, kernel, stride, padding))
    dx = fc.max_pool_backward(dy, idx, shape)
    rdx = ref.max_pool_backward(dy.astype(np.float64), idx, shape)
    assert dx.dtype == dtype and dx.shape == shape
    np.testing.assert_allclose(dx, rdx, **tolerance(dtype, int(np.prod(kernel))))


@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", CASES[2::4])
def test_avg_pool_backward_is_adjoint(shape, kernel, stride, padding, ceil_mode):
    for count_include_pad in (True, False):
        x = rand(shape, np.float64, seed_of("adj", shape, kernel, stride, padding))
        y = fc.avg_pool(x, kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                        count_include_pad=count_include_pad)
        dy = rand(y.shape, np.float64, seed_of("adj-dy", shape, kernel, stride, padding))
        dx = fc.avg_pool_backward(dy, shape, kernel, stride=stride, padding=padding,
                                  ceil_mode=ceil_mode, count_include_pad=count_include_pad)
        assert np.vdot(y, dy) == pytest.approx(np.vdot(x, dx), rel=1e-12, abs=1e-12)


# ----------------------------------------------------------------------------------------
# Against PyTorch (symmetric padding of at most kernel // 2 only)
# ----------------------------------------------------------------------------------------

TORCH_CASES = [
    pytest.param(shape, kernel, stride, spec, ceil_mode, batch,
                 id=f"{len(kernel)}d-k{kernel}-s{stride}-{spec}-ceil{ceil_mode:d}-n{batch}")
    for dims, kernels in KERNELS.items()
    for kernel in kernels
    for stride in (1, 2, 3)
    for spec in ("zero", "half")
    for ceil_mode in (False, True)
    for batch in (1, 3)
    for shape in [(batch,) + SHAPES[dims][1:]]
    if not (spec == "half" and stride == 1 and batch == 3)
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride, spec, ceil_mode, batch", TORCH_CASES)
def test_max_pool_matches_torch(shape, kernel, stride, spec, ceil_mode, batch, dtype):
    padding = make_padding(spec, kernel)
    x = rand(shape, dtype, seed_of("tmax", shape, kernel, stride, spec, ceil_mode, dtype))
    y, idx = fc.max_pool(x, kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                         return_indices=True)
    pad = padding if isinstance(padding, int) else tuple(padding)
    ty, tidx = TORCH_MAX[len(kernel)](torch.from_numpy(x), kernel, stride, pad,
                                      ceil_mode=ceil_mode, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride, spec, ceil_mode, batch", TORCH_CASES)
def test_avg_pool_matches_torch(shape, kernel, stride, spec, ceil_mode, batch, dtype):
    padding = make_padding(spec, kernel)
    pad = padding if isinstance(padding, int) else tuple(padding)
    x = rand(shape, dtype, seed_of("tavg", shape, kernel, stride, spec, ceil_mode, dtype))
    for count_include_pad in (True, False):
        y = fc.avg_pool(x, kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                        count_include_pad=count_include_pad)
        ty = TORCH_AVG[len(kernel)](torch.from_numpy(x), kernel, stride, pad,
                                    ceil_mode=ceil_mode, count_include_pad=count_include_pad)
        np.testing.assert_allclose(y, ty.numpy(), **tolerance(dtype, int(np.prod(kernel))),
                                   err_msg=f"count_include_pad={count_include_pad}")


@pytest.mark.parametrize("shape, kernel, stride, spec, ceil_mode, batch", TORCH_CASES[::2])
def test_gradients_match_torch_autograd(shape, kernel, stride, spec, ceil_mode, batch):
    padding = make_padding(spec, kernel)
    pad = padding if isinstance(padding, int) else tuple(padding)
    dims = len(kernel)
    x = rand(shape, np.float64, seed_of("tgrad", shape, kernel, stride, spec, ceil_mode),
             ties=True)
    # max: the gradient follows the indices, ties included
    y, idx = fc.max_pool(x, kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                         return_indices=True)
    dy = rand(y.shape, np.float64, seed_of("tgrad-dy", shape, kernel, stride, spec))
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    TORCH_MAX[dims](tx, kernel, stride, pad, ceil_mode=ceil_mode).backward(torch.from_numpy(dy))
    np.testing.assert_allclose(fc.max_pool_backward(dy, idx, shape), tx.grad.numpy(),
                               rtol=1e-12, atol=1e-12)
    for count_include_pad in (True, False):
        tx = torch.from_numpy(x.copy()).requires_grad_(True)
        TORCH_AVG[dims](tx, kernel, stride, pad, ceil_mode=ceil_mode,
                        count_include_pad=count_include_pad).backward(torch.from_numpy(dy))
        dx = fc.avg_pool_backward(dy, shape, kernel, stride=stride, padding=padding,
                                  ceil_mode=ceil_mode, count_include_pad=count_include_pad)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------
# Finite differences (float64)
# ----------------------------------------------------------------------------------------

FD_CASES = [
    ((2, 2, 7), (3,), 2, 1, True),
    ((1, 2, 6, 5), (3, 2), (2, 1), ((1, 0), (0, 1)), True),
    ((1, 2, 5, 6), (2, 3), 2, "same", False),
    ((1, 1, 4, 5, 3), (2, 3, 2), (1, 2, 3), ((1, 0), (1, 1), (0, 1)), True),
]


def directional_fd(f, x, dy, seed, h=1e-6, count=4):
    """Pairs (<dy, (f(x+hv) - f(x-hv)) / 2h>, v) for random directions v."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        v = rng.standard_normal(x.shape)
        yield np.vdot(dy, (f(x + h * v) - f(x - h * v)) / (2 * h)), v


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", FD_CASES)
def test_avg_pool_backward_finite_differences(shape, kernel, stride, padding, ceil_mode,
                                              count_include_pad):
    kw = dict(stride=stride, padding=padding, ceil_mode=ceil_mode,
              count_include_pad=count_include_pad)
    x = rand(shape, np.float64, seed_of("fd", shape, kernel))
    y = fc.avg_pool(x, kernel, **kw)
    dy = rand(y.shape, np.float64, seed_of("fd-dy", shape, kernel))
    dx = fc.avg_pool_backward(dy, shape, kernel, **kw)
    for fd, v in directional_fd(lambda z: fc.avg_pool(z, kernel, **kw), x, dy, 7):
        assert np.vdot(dx, v) == pytest.approx(fd, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", FD_CASES)
def test_max_pool_backward_finite_differences(shape, kernel, stride, padding, ceil_mode):
    kw = dict(stride=stride, padding=padding, ceil_mode=ceil_mode)
    x = distinct(shape, seed_of("fdmax", shape, kernel))
    y, idx = fc.max_pool(x, kernel, return_indices=True, **kw)
    dy = rand(y.shape, np.float64, seed_of("fdmax-dy", shape, kernel))
    dx = fc.max_pool_backward(dy, idx, shape)
    # Steps far below the gap between distinct values keep every argmax in place.
    for fd, v in directional_fd(lambda z: fc.max_pool(z, kernel, **kw), x, dy, 11, h=1e-7):
        assert np.vdot(dx, v) == pytest.approx(fd, rel=1e-6, abs=1e-7)


# ----------------------------------------------------------------------------------------
# Boundary cases
# ----------------------------------------------------------------------------------------

def check_both(x, kernel, stride, padding, ceil_mode):
    """fastconv against the reference for max (exact) and avg (both divisors)."""
    win = make_window("test", x.shape[2:], kernel, stride, padding, 1, ceil_mode, pool=True)
    y, idx = fc.max_pool(x, kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                         return_indices=True)
    ry, ridx = ref.max_pool(x, *geometry(win), ceil_mode)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    for cip in (True, False):
        a = fc.avg_pool(x, kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                        count_include_pad=cip)
        ra = ref.avg_pool(x.astype(np.float64), *geometry(win), ceil_mode, cip)
        np.testing.assert_allclose(a, ra, **tolerance(x.dtype, int(np.prod(win.kernel))))
    return win, y, idx


@pytest.mark.parametrize("n, k, s, p, expected", [
    (5, 3, 2, 1, 3),   # last window starts in the input and overhangs the end padding
    (5, 3, 3, 1, 2),   # the third window would start in the end padding: dropped
    (4, 2, 2, 1, 3),   # last window starts on the last input cell
    (6, 4, 3, 2, 3),   # overhang past the end padding
    (2, 3, 2, 1, 2),   # two windows on a two-cell input
    (3, 2, 2, 1, 2),   # a third window would start in the end padding: dropped
])
@pytest.mark.parametrize("dtype", DTYPES)
def test_ceil_mode_windows_in_padding(n, k, s, p, expected, dtype):
    x = rand((2, 3, n), dtype, seed_of("ceil", n, k, s, p))
    win, y, idx = check_both(x, k, s, p, True)
    assert win.out_size == (expected,)
    ty, tidx = F.max_pool1d(torch.from_numpy(x), k, s, p, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    for cip in (True, False):
        ta = F.avg_pool1d(torch.from_numpy(x), k, s, p, ceil_mode=True, count_include_pad=cip)
        a = fc.avg_pool(x, k, stride=s, padding=p, ceil_mode=True, count_include_pad=cip)
        np.testing.assert_allclose(a, ta.numpy(), **tolerance(dtype, k))
    # 2-D with the same geometry in both dims
    x2 = rand((1, 2, n, n + 1), dtype, seed_of("ceil2", n, k, s, p))
    check_both(x2, k, s, p, True)


def test_padding_forms_agree():
    x = rand((2, 3, 9, 8), np.float64, seed_of("forms"))
    for op in (fc.max_pool, fc.avg_pool):
        np.testing.assert_array_equal(op(x, 3, stride=2, padding="valid"),
                                      op(x, 3, stride=2, padding=0))
        np.testing.assert_array_equal(op(x, 3, stride=2, padding=(1, 0)),
                                      op(x, 3, stride=2, padding=((1, 1), (0, 0))))
        # "same": output ceil(n / stride), the odd pad cell at the end
        assert op(x, 3, stride=2, padding="same").shape == (2, 3, 5, 4)
        np.testing.assert_array_equal(op(x, 2, stride=1, padding="same"),
                                      op(x, 2, stride=1, padding=((0, 1), (0, 1))))


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_equal_to_padded_input(dtype):
    x = rand((2, 3, 5, 4), dtype, seed_of("full", 5, 4))
    win, y, idx = check_both(x, (7, 6), 1, (1, 1), False)
    assert y.shape == (2, 3, 1, 1)
    np.testing.assert_array_equal(y[..., 0, 0], x.max(axis=(2, 3)))
    np.testing.assert_array_equal(idx[..., 0, 0], x.reshape(2, 3, -1).argmax(axis=2))
    a = fc.avg_pool(x, (7, 6), padding=1, count_include_pad=False)
    np.testing.assert_allclose(a[..., 0, 0], x.astype(np.float64).mean(axis=(2, 3)),
                               **tolerance(dtype, 20))
    a = fc.avg_pool(x, (7, 6), padding=1, count_include_pad=True)
    np.testing.assert_allclose(a[..., 0, 0], x.astype(np.float64).sum(axis=(2, 3)) / 42,
                               **tolerance(dtype, 42))


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_by_one_kernel_is_identity(dims, dtype):
    shape = SHAPES[dims]
    x = rand(shape, dtype, seed_of("1x1", dims))
    y, idx = fc.max_pool(x, 1, return_indices=True)
    np.testing.assert_array_equal(y, x)
    plane = int(np.prod(shape[2:]))
    np.testing.assert_array_equal(idx, np.broadcast_to(np.arange(plane).reshape(shape[2:]),
                                                       shape))
    np.testing.assert_array_equal(fc.avg_pool(x, 1), x)
    np.testing.assert_array_equal(fc.avg_pool_backward(x, shape, 1), x)
    np.testing.assert_array_equal(fc.max_pool_backward(x, idx, shape), x)
    # 1x1 windows with stride 2 pick every other cell
    sl = (Ellipsis,) + (slice(None, None, 2),) * dims
    np.testing.assert_array_equal(fc.max_pool(x, 1, stride=2), x[sl])


@pytest.mark.parametrize("dtype", DTYPES)
def test_stride_larger_than_kernel(dtype):
    x = rand((2, 2, 11, 10), dtype, seed_of("gap", 11))
    win, y, idx = check_both(x, (2, 3), (4, 5), ((1, 0), (0, 1)), False)
    # the adjoint leaves the cells between windows at zero
    dy = rand(y.shape, dtype, seed_of("gap-dy", 11))
    dx = fc.avg_pool_backward(dy, x.shape, (2, 3), stride=(4, 5), padding=((1, 0), (0, 1)))
    rdx = ref.avg_pool_backward(dy, x.shape, *geometry(win), False, True)
    np.testing.assert_allclose(dx, rdx, **tolerance(dtype, 6))
    assert np.all(dx[:, :, 1:3] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_stride_gives_one_window(dtype):
    x = rand((2, 3, 7, 6), dtype, seed_of("huge", 7))
    s = 2**40
    y, idx = fc.max_pool(x, 3, stride=s, return_indices=True)
    assert y.shape == (2, 3, 1, 1)
    np.testing.assert_array_equal(y[..., 0, 0], x[:, :, :3, :3].max(axis=(2, 3)))
    corner = x[:, :, :3, :3].reshape(2, 3, 9).argmax(axis=2)
    np.testing.assert_array_equal(idx[..., 0, 0], corner // 3 * 6 + corner % 3)
    a = fc.avg_pool(x, 3, stride=(s, s), padding=1, ceil_mode=True)
    assert a.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(a[..., 0, 0], x[:, :, :2, :2].astype(np.float64).sum(axis=(2, 3))
                               / 9, **tolerance(dtype, 9))
    dx = fc.avg_pool_backward(np.ones((2, 3, 1, 1), dtype), x.shape, 3, stride=s)
    assert dx[:, :, :3, :3].sum() == pytest.approx(6.0)
    assert np.all(dx[:, :, 3:] == 0) and np.all(dx[:, :, :, 3:] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_go_to_the_first_cell(dtype):
    x = np.zeros((1, 2, 4, 6), dtype)
    x[0, 0] = 1.0  # constant plane: every window ties everywhere
    x[0, 1, 1, 1] = x[0, 1, 1, 2] = x[0, 1, 2, 1] = 5.0  # one window, three equal maxima
    y, idx = fc.max_pool(x, 2, stride=1, padding=1, return_indices=True)
    win, ry, ridx = check_both(x, 2, 1, 1, False)
    # plane 0: the first input cell of each window (padding never wins)
    for (i, j), at in np.ndenumerate(idx[0, 0]):
        assert at == max(i - 1, 0) * 6 + max(j - 1, 0)
    assert idx[0, 1, 2, 2] == 1 * 6 + 1
    ty, tidx = F.max_pool2d(torch.from_numpy(x), 2, 1, 1, return_indices=True)
    np.testing.assert_array_equal(idx, tidx.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
def test_minus_infinity_never_loses_to_padding(dtype):
    x = np.full((1, 1, 3, 4), -np.inf, dtype)
    y, idx = fc.max_pool(x, 3, stride=2, padding=1, ceil_mode=True, return_indices=True)
    assert np.all(y == -np.inf)
    ry, ridx = ref.max_pool(x, (3, 3), (2, 2), (1, 1), (1, 1), True)
    np.testing.assert_array_equal(idx, ridx)
    ty, tidx = F.max_pool2d(torch.from_numpy(x), 3, 2, 1, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(idx, tidx.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates(dtype):
    x = rand((2, 2, 6, 7), dtype, seed_of("nan", 6))
    x[0, 0, 1, 0] = np.nan
    x[0, 0, 1, 1] = np.nan  # same window: the first NaN is the winner
    x[1, 1, 5, 6] = np.nan  # last cell, reached only by an overhanging window
    x[1, 0, 0, 0] = np.inf
    x[1, 0, 0, 1] = np.nan  # NaN beats +inf
    y, idx = fc.max_pool(x, 2, stride=2, ceil_mode=True, return_indices=True)
    ry, ridx = ref.max_pool(x, (2, 2), (2, 2), (0, 0), (0, 0), True)
    np.testing.assert_array_equal(y, ry)  # NaN positions compare equal
    np.testing.assert_array_equal(idx, ridx)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 1 * 7
    assert np.isnan(y[1, 1, 2, 3]) and np.isnan(y[1, 0, 0, 0]) and idx[1, 0, 0, 0] == 1
    assert np.isnan(y).sum() == 3
    ty = F.max_pool2d(torch.from_numpy(x), 2, 2, ceil_mode=True)
    np.testing.assert_array_equal(y, ty.numpy())
    a = fc.avg_pool(x, 2, ceil_mode=True)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(y))


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_four_and_five_spatial_dims(dtype, ceil_mode):
    x = rand((1, 2, 5, 4, 3, 6), dtype, seed_of("4d", ceil_mode))
    kernel, stride, padding = (3, 2, 2, 3), (2, 1, 2, 2), ((1, 0), (1, 1), (0, 1), (1, 1))
    win, y, idx = check_both(x, kernel, stride, padding, ceil_mode)
    dy = rand(y.shape, dtype, seed_of("4d-dy", ceil_mode))
    np.testing.assert_allclose(fc.max_pool_backward(dy, idx, x.shape),
                               ref.max_pool_backward(dy.astype(np.float64), idx, x.shape),
                               **tolerance(dtype, 36))
    for cip in (True, False):
        dx = fc.avg_pool_backward(dy, x.shape, kernel, stride=stride, padding=padding,
                                  ceil_mode=ceil_mode, count_include_pad=cip)
        rdx = ref.avg_pool_backward(dy.astype(np.float64), x.shape, *geometry(win), ceil_mode,
                                    cip)
        np.testing.assert_allclose(dx, rdx, **tolerance(dtype, 36))
    x5 = rand((1, 1, 3, 4, 3, 4, 3), dtype, seed_of("5d"))
    check_both(x5, 2, 1, 1, ceil_mode)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_inputs(dtype):
    base = rand((3, 4, 10, 12), dtype, seed_of("strided"))
    x = base.transpose(1, 0, 3, 2)[:, :, ::2]  # (4, 3, 6, 10), no unit stride anywhere
    xc = np.ascontiguousarray(x)
    y, idx = fc.max_pool(x, 3, stride=2, padding=1, return_indices=True)
    yc, idxc = fc.max_pool(xc, 3, stride=2, padding=1, return_indices=True)
    np.testing.assert_array_equal(y, yc)
    np.testing.assert_array_equal(idx, idxc)
    np.testing.assert_array_equal(fc.avg_pool(x, 2), fc.avg_pool(xc, 2))
    dy = rand(y.shape, dtype, seed_of("strided-dy"))[..., ::-1]
    np.testing.assert_array_equal(fc.max_pool_backward(dy, idx[..., ::-1], x.shape),
                                  fc.max_pool_backward(np.ascontiguousarray(dy),
                                                       np.ascontiguousarray(idx[..., ::-1]),
                                                       x.shape))
    dya = rand((4, 3, 3, 5), dtype, seed_of("strided-dya"))
    np.testing.assert_array_equal(fc.avg_pool_backward(dya.T.T[:, ::-1], x.shape, 2),
                                  fc.avg_pool_backward(np.ascontiguousarray(dya[:, ::-1]),
                                                       x.shape, 2))


def test_indices_of_any_integer_dtype():
    x = rand((2, 2, 6, 6), np.float64, seed_of("idx-dtype"))
    y, idx = fc.max_pool(x, 2, return_indices=True)
    expected = fc.max_pool_backward(y, idx, x.shape)
    for dtype in (np.int32, np.uint16, np.int16):
        np.testing.assert_array_equal(fc.max_pool_backward(y, idx.astype(dtype), x.shape),
                                      expected)


def test_deterministic():
    x = rand((3, 5, 17, 19), np.float32, seed_of("det"))
    first = [fc.avg_pool(x, 3, stride=2, padding=1),
             fc.avg_pool_backward(x[:, :, :9, :10], x.shape, 3, stride=2, padding=1)]
    for _ in range(3):
        again = [fc.avg_pool(x, 3, stride=2, padding=1),
                 fc.avg_pool_backward(x[:, :, :9, :10], x.shape, 3, stride=2, padding=1)]
        for a, b in zip(first, again):
            assert a.tobytes() == b.tobytes()


# ----------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------

X = np.ones((2, 3, 8, 8), np.float32)


@pytest.mark.parametrize("call, error, match", [
    (lambda: fc.max_pool(np.ones((3, 8), np.float32), 2), ValueError, r"x .*\(3, 8\)"),
    (lambda: fc.avg_pool(np.ones((2, 0, 8), np.float32), 2), ValueError, r"x .*zero-size"),
    (lambda: fc.max_pool(np.ones((2, 3, 8, 0)), 2), ValueError, r"zero-size.*\(2, 3, 8, 0\)"),
    (lambda: fc.max_pool(X, 3, padding=2), ValueError, r"padding .*limit of 1"),
    (lambda: fc.avg_pool(X, 2, padding=((0, 2), (0, 0))), ValueError, r"padding"),
    (lambda: fc.max_pool(X, 2, padding=-1), ValueError, r"padding .*negative"),
    (lambda: fc.max_pool(X, 2, padding="full"), ValueError, r"padding"),
    (lambda: fc.max_pool(X, 2, padding=((1, 1),)), ValueError, r"padding"),
    (lambda: fc.max_pool(X, 9), ValueError, r"kernel_size \(9, 9\).*larger than the padded"),
    (lambda: fc.avg_pool(X, (2, 2, 2)), ValueError, r"kernel_size .*3 entries"),
    (lambda: fc.max_pool(X, 0), ValueError, r"kernel_size .*positive"),
    (lambda: fc.max_pool(X, 2, stride=0), ValueError, r"stride .*positive"),
    (lambda: fc.max_pool(X, 2, stride=(1,)), ValueError, r"stride"),
    (lambda: fc.max_pool(X, 2.5), TypeError, r"kernel_size"),
    (lambda: fc.max_pool(X.astype(np.float16), 2), TypeError, r"x must be float32 or float64"),
    (lambda: fc.avg_pool(X.astype(np.int64), 2), TypeError, r"x must be float32 or float64"),
    (lambda: fc.avg_pool(X.tolist(), 2), TypeError, r"x must be a numpy.ndarray"),
    (lambda: fc.avg_pool_backward(np.ones((2, 3, 4, 5), np.float32), (2, 3, 8, 8), 2),
     ValueError, r"dy has shape \(2, 3, 4, 5\), expected \(2, 3, 4, 4\)"),
    (lambda: fc.avg_pool_backward(np.ones((2, 3, 4, 4)), (2, 3, 8), 2), ValueError,
     r"input_shape \(2, 3, 8\) must have 4 entries"),
    (lambda: fc.avg_pool_backward(np.ones((2, 3, 4, 4)), (2, 3, 8, 0), 2), ValueError,
     r"input_shape"),
    (lambda: fc.avg_pool_backward(np.ones((2, 3, 4, 4)), (2, 3, 8, 8), 2, padding=2),
     ValueError, r"padding"),
    (lambda: fc.avg_pool_backward(np.ones((4,)), (2, 3, 8, 8), 2), ValueError, r"dy .*\(4,\)"),
    (lambda: fc.avg_pool_backward(np.ones((2, 3, 4, 4), np.int32), (2, 3, 8, 8), 2), TypeError,
     r"dy must be float32 or float64"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


DY = np.ones((2, 3, 4, 4))
IDX = np.zeros((2, 3, 4, 4), np.int64)


@pytest.mark.parametrize("call, error, match", [
    (lambda: fc.max_pool_backward(DY, IDX[..., :3], (2, 3, 8, 8)), ValueError,
     r"indices has shape \(2, 3, 4, 3\) but dy has shape \(2, 3, 4, 4\)"),
    (lambda: fc.max_pool_backward(DY, IDX.astype(np.float64), (2, 3, 8, 8)), TypeError,
     r"indices must have an integer dtype, got float64"),
    (lambda: fc.max_pool_backward(DY, IDX.tolist(), (2, 3, 8, 8)), TypeError,
     r"indices must be a numpy.ndarray"),
    (lambda: fc.max_pool_backward(DY, IDX, (2, 3, 8)), ValueError,
     r"input_shape \(2, 3, 8\) must have 4 entries"),
    (lambda: fc.max_pool_backward(DY, IDX, (2, 4, 8, 8)), ValueError,
     r"input_shape \(2, 4, 8, 8\) and dy shape \(2, 3, 4, 4\)"),
    (lambda: fc.max_pool_backward(DY, IDX, (2, 3, 8, -1)), ValueError, r"input_shape"),
    (lambda: fc.max_pool_backward(DY.astype(np.float16), IDX, (2, 3, 8, 8)), TypeError,
     r"dy must be float32 or float64"),
    (lambda: fc.max_pool_backward(DY[0, 0], IDX[0, 0], (8, 8)), ValueError, r"dy .*\(4, 4\)"),
    (lambda: fc.max_pool_backward(DY, IDX - 1, (2, 3, 8, 8)), ValueError,
     r"indices must lie in \[0, 64\).*got -1"),
    (lambda: fc.max_pool_backward(DY, IDX + 64, (2, 3, 8, 8)), ValueError,
     r"indices must lie in \[0, 64\).*got 64"),
    (lambda: fc.max_pool_backward(DY, np.full((2, 3, 4, 4), 2**62), (2, 3, 8, 8)), ValueError,
     r"indices must lie in"),
    (lambda: fc.max_pool_backward(DY, np.full((2, 3, 4, 4), 2**64 - 1, np.uint64),
                                  (2, 3, 8, 8)), ValueError, r"indices must lie in"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_max_pool_backward(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("bad", [16, -1, 2**62])
def test_out_of_range_index_is_reported_and_skipped(bad):
    # Indices are checked as the scatter uses them: a bad one is never written (it would
    # land outside its plane, or outside dx) and the call fails naming it.
    dy = np.ones((1, 3, 2, 2))
    idx = np.zeros((1, 3, 2, 2), np.int64)
    idx[0, 1, 1, 1] = bad  # a plane has 16 cells
    idx[0, 2, 0, 0] = 15
    dx = np.full((1, 3, 4, 4), 7.0)
    with pytest.raises(ValueError, match=rf"indices must lie in \[0, 16\).*got {bad} at "
                                         r"flat position 7 "):
        _cpu.max_pool_backward(dy, idx, dx)
    expected = np.zeros((3, 16))
    expected[0, 0] = 4
    expected[1, 0] = 3
    expected[2, 0], expected[2, 15] = 3, 1
    np.testing.assert_array_equal(dx.reshape(3, 16), expected)


# Direct calls into the extension: every precondition is re-checked there.
K2 = ([2, 2], [2, 2], [0, 0], [0, 0])


@pytest.mark.parametrize("call, error, match", [
    (lambda: _cpu.max_pool_forward(X, np.empty((2, 3, 4, 5), np.float32), None, *K2, False),
     ValueError, r"out has shape \(2, 3, 4, 5\), expected \(2, 3, 4, 4\)"),
    (lambda: _cpu.max_pool_forward(X, np.empty((2, 3, 4, 4), np.float32),
                                   np.empty((2, 3, 4, 4), np.int32), *K2, False),
     TypeError, r"indices must have dtype int64"),
    (lambda: _cpu.max_pool_forward(X, np.empty((2, 3, 4, 4), np.float32),
                                   np.empty((2, 3, 4, 3), np.int64), *K2, False),
     ValueError, r"indices has shape"),
    (lambda: _cpu.max_pool_forward(X, np.empty((2, 3, 4, 4)), None, *K2, False),
     TypeError, r"out must have dtype float32"),
    (lambda: _cpu.max_pool_forward(X[0, 0], np.empty((4, 4), np.float32), None, *K2, False),
     ValueError, r"x must be \(N, C, \*spatial\).*\(8, 8\)"),
    (lambda: _cpu.max_pool_forward(X, np.empty((2, 3, 4), np.float32), None, [2], [2], [0],
                                   [0], False), ValueError, r"kernel_size has 1 entries"),
    (lambda: _cpu.max_pool_forward(X, np.empty((2, 3, 2, 2), np.float32), None, [4, 4],
                                   [4, 4], [3, 3], [0, 0], False), ValueError,
     r"padding .*limit of 2"),
    (lambda: _cpu.max_pool_forward(X[..., ::2], np.empty((2, 3, 4, 2), np.float32), None, *K2,
                                   False), ValueError, r"x must be C-contiguous"),
    (lambda: _cpu.max_pool_forward(X.astype(np.float16), np.empty((2, 3, 4, 4), np.float16),
                                   None, *K2, False), TypeError, r"x must be float32"),
    (lambda: _cpu.avg_pool_forward(X, np.empty((2, 3, 4, 4), np.float32), [20, 20], [1, 1],
                                   [0, 0], [0, 0], False, True), ValueError,
     r"kernel_size \(20, 20\).*larger"),
    (lambda: _cpu.avg_pool_forward(X, np.empty((2, 3, 4, 4), np.float32).T, *K2, False, True),
     ValueError, r"out has shape"),
    (lambda: _cpu.avg_pool_forward(X, np.empty((2, 3, 4, 4), np.float32), [2, 2], [0, 2],
                                   [0, 0], [0, 0], False, True), ValueError, r"stride"),
    (lambda: _cpu.avg_pool_backward(np.ones((2, 3, 4, 3), np.float32),
                                    np.empty((2, 3, 8, 8), np.float32), *K2, False, True),
     ValueError, r"dy has shape \(2, 3, 4, 3\), expected \(2, 3, 4, 4\)"),
    (lambda: _cpu.avg_pool_backward(np.ones((2, 3, 4, 4), np.float32),
                                    np.empty((2, 3, 8, 8)), *K2, False, True),
     TypeError, r"dx must have dtype float32"),
    (lambda: _cpu.avg_pool_backward(np.ones((2, 3, 4, 4)), np.empty((2, 3, 0, 8)), *K2, False,
                                    True), ValueError, r"input spatial size \(0, 8\)"),
    (lambda: _cpu.max_pool_backward(np.ones((2, 3, 4, 4)), np.zeros((2, 3, 4, 4), np.int32),
                                    np.empty((2, 3, 8, 8))), TypeError,
     r"indices must have dtype int64"),
    (lambda: _cpu.max_pool_backward(np.ones((2, 3, 4, 4)), np.zeros((2, 3, 4, 4), np.int64),
                                    np.empty((2, 3, 8))), ValueError,
     r"dx shape \(2, 3, 8\) and dy shape"),
    (lambda: _cpu.max_pool_backward(np.ones((2, 3, 4, 4)), np.zeros((2, 3, 4, 4), np.int64),
                                    np.empty((2, 4, 8, 8))), ValueError, r"agree in N and C"),
    (lambda: _cpu.max_pool_backward(np.ones((2, 3, 4, 4)), np.zeros((2, 3, 4), np.int64),
                                    np.empty((2, 3, 8, 8))), ValueError, r"indices has shape"),
    (lambda: _cpu.max_pool_backward(np.ones((2, 3, 0, 4)), np.zeros((2, 3, 0, 4), np.int64),
                                    np.empty((2, 3, 8, 8))), ValueError, r"zero-size"),
    (lambda: _cpu.max_pool_backward(np.ones((2, 3, 4, 4)), np.zeros((2, 3, 4, 4), np.int64),
                                    np.empty((2, 3, 8, 8), np.float32)), TypeError,
     r"dx must have dtype float64"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_extension_rejects_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_extension_rejects_read_only_output():
    out = np.empty((2, 3, 4, 4), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match=r"out must be writeable"):
        _cpu.avg_pool_forward(X, out, *K2, False, True)


# ----------------------------------------------------------------------------------------
# Wide rows: the stride-2 vector chunks (up to 32 outputs each, so rows need well over 64
# cells), their ends at the row edge, ties, NaNs, padding and ceil_mode
# ----------------------------------------------------------------------------------------

WIDE_CASES = [
    pytest.param((2, 3, 5, 71), (2, 2), 2, 0, False, id="2d-k2-w71"),
    pytest.param((2, 3, 5, 112), (2, 2), 2, 0, False, id="2d-k2-w112"),
    pytest.param((2, 3, 5, 113), (3, 3), 2, 1, False, id="2d-k3-p1-w113"),
    pytest.param((2, 3, 6, 100), (3, 3), 2, 0, True, id="2d-k3-ceil-w100"),
    pytest.param((1, 2, 77), (3,), 2, ((0, 1),), True, id="1d-k3-asym-ceil-w77"),
    pytest.param((1, 2, 3, 4, 66), (2, 2, 2), 2, 0, False, id="3d-k2-w66"),
    pytest.param((1, 2, 3, 5, 97), (3, 3, 3), 2, 1, True, id="3d-k3-p1-ceil-w97"),
]


def check_every_pooling(shape, kernel, stride, padding, ceil_mode, dtype, x_max, seed):
    """max_pool of x_max (values, indices, and without indices) equals the reference; then
    avg_pool and its adjoint on fresh inputs drawn from `seed`, with and without the padding
    counted, are within rounding of the float64 reference."""
    win = window(shape, kernel, stride, padding, ceil_mode)
    y, idx = fc.max_pool(x_max, kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                         return_indices=True)
    ry, ridx = ref.max_pool(x_max, *geometry(win), ceil_mode)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(
        fc.max_pool(x_max, kernel, stride=stride, padding=padding, ceil_mode=ceil_mode), ry)

    x = rand(shape, dtype, seed)
    dy = rand(y.shape, dtype, seed + 1)
    tol = tolerance(dtype, int(np.prod(kernel)))
    for count_include_pad in (True, False):
        y = fc.avg_pool(x, kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                        count_include_pad=count_include_pad)
        ry = ref.avg_pool(x.astype(np.float64), *geometry(win), ceil_mode, count_include_pad)
        np.testing.assert_allclose(y, ry, **tol, err_msg=f"count_include_pad={count_include_pad}")
        dx = fc.avg_pool_backward(dy, shape, kernel, stride=stride, padding=padding,
                                  ceil_mode=ceil_mode, count_include_pad=count_include_pad)
        rdx = ref.avg_pool_backward(dy.astype(np.float64), shape, *geometry(win), ceil_mode,
                                    count_include_pad)
        np.testing.assert_allclose(dx, rdx, **tol, err_msg=f"count_include_pad={count_include_pad}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", WIDE_CASES)
def test_wide_stride2_rows_match_reference(shape, kernel, stride, padding, ceil_mode, dtype):
    seed = seed_of("wide", shape, kernel, padding, ceil_mode, dtype)
    x = rand(shape, dtype, seed, ties=True)
    x.reshape(-1)[::37] = np.nan  # NaNs at scattered lanes: the first one in a window wins
    check_every_pooling(shape, kernel, stride, padding, ceil_mode, dtype, x, seed + 1)


@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", WIDE_CASES[:4])
def test_wide_stride2_rows_match_torch(shape, kernel, stride, padding, ceil_mode):
    x = rand(shape, np.float32, seed_of("wide-torch", shape, kernel, padding, ceil_mode))
    tx = torch.from_numpy(x)
    y, idx = fc.max_pool(x, kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                         return_indices=True)
    ty, tidx = F.max_pool2d(tx, kernel, stride, padding, ceil_mode=ceil_mode, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    y = fc.avg_pool(x, kernel, stride=stride, padding=padding, ceil_mode=ceil_mode)
    ty = F.avg_pool2d(tx, kernel, stride, padding, ceil_mode=ceil_mode)
    np.testing.assert_allclose(y, ty.numpy(), **tolerance(np.float32, int(np.prod(kernel))))


@pytest.mark.parametrize("stride", [1, 2**40])
def test_huge_kernel_with_same_padding_covers_the_whole_row(stride: int) -> None:
    """A kernel of 2**40 cells ("same" padding keeps it legal) must not size anything by the
    kernel: every window covers the whole input row."""
    x = np.random.default_rng(7).standard_normal((2, 3, 5))
    y, idx = fc.max_pool(x, 2**40, stride=stride, padding="same", return_indices=True)
    out = 5 if stride == 1 else 1
    assert y.shape == (2, 3, out)
    np.testing.assert_array_equal(y, np.repeat(x.max(axis=-1, keepdims=True), out, axis=-1))
    np.testing.assert_array_equal(idx, np.repeat(x.argmax(axis=-1)[..., None], out, axis=-1))
    avg = fc.avg_pool(x, 2**40, stride=stride, padding="same", count_include_pad=False)
    np.testing.assert_allclose(avg, np.repeat(x.mean(axis=-1, keepdims=True), out, axis=-1),
                               rtol=1e-12)
    dx = fc.avg_pool_backward(np.ones_like(avg), x.shape, 2**40, stride=stride,
                                    padding="same", count_include_pad=False)
    np.testing.assert_allclose(dx, np.full(x.shape, out / 5), rtol=1e-12)


# ----------------------------------------------------------------------------------------
# Short stride-2 rows (at most one vector of outputs, as LeNet's 14 and 5): narrower
# chunks, overlapping chunks and the scalar path, up to the last rows of the array
# ----------------------------------------------------------------------------------------

SHORT_CASES = [
    pytest.param((5, 6, 28, 28), 2, None, 0, False, id="lenet-s2"),
    pytest.param((5, 16, 10, 10), 2, None, 0, False, id="lenet-s4"),
    pytest.param((3, 4, 9, 31), 2, 2, 0, True, id="ceil-w31"),
    pytest.param((3, 4, 9, 29), 3, 2, 1, False, id="k3-p1-w29"),
    pytest.param((2, 3, 8, 17), (2, 3), 2, ((1, 0), (0, 1)), True, id="asym-ceil"),
    pytest.param((2, 3, 5, 6, 12), 2, 2, 1, False, id="3d-p1"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", SHORT_CASES)
def test_short_stride2_rows(shape, kernel, stride, padding, ceil_mode, dtype):
    x = rand(shape, dtype, seed_of("short", shape, kernel, padding, ceil_mode, dtype))
    win = window(shape, kernel, stride, padding, ceil_mode)
    for count_include_pad in (True, False):
        y = fc.avg_pool(x, kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                        count_include_pad=count_include_pad)
        ry = ref.avg_pool(x.astype(np.float64), *geometry(win), ceil_mode, count_include_pad)
        if dtype == np.float32 and np.prod(win.kernel) <= 4:
            # A few float32 values sum exactly in float64, so the mean rounds exactly as
            # the reference's does.
            np.testing.assert_array_equal(y, ry.astype(dtype))
        else:
            np.testing.assert_allclose(y, ry, **tolerance(dtype, int(np.prod(win.kernel))))
        if len(shape) == 4 and count_include_pad and win.pad_before == win.pad_after:
            ty = F.avg_pool2d(torch.from_numpy(x), win.kernel, win.stride, win.pad_before,
                              ceil_mode=ceil_mode).numpy()
            np.testing.assert_allclose(y, ty, **tolerance(dtype, int(np.prod(win.kernel))))


# ----------------------------------------------------------------------------------------
# Row lengths around the chunk widths (4 to 32 outputs per chunk, by instruction set and
# dtype) for the vectorized last-dim strides 1 and 2: full chunks, the overlapping last
# chunk, stride-2 loads that must start a cell early at the row end, border outputs
# ----------------------------------------------------------------------------------------

# last-dim kernel, stride, padding (before, after), ceil_mode
ROW_GEOMETRIES = [(2, 1, (0, 0), False), (3, 1, (1, 1), False), (4, 1, (2, 1), False),
                  (2, 2, (0, 0), False), (3, 2, (1, 1), False), (3, 2, (0, 1), True),
                  (4, 2, (2, 1), True)]
ROW_OUTPUTS = [3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65]


def row_cases():
    cases = []
    for (k, s, pads, ceil_mode), outputs, dims in itertools.product(ROW_GEOMETRIES,
                                                                    ROW_OUTPUTS, (1, 2)):
        n = (outputs - 1) * s + k - sum(pads)
        shape = (2, 3, n) if dims == 1 else (1, 3, 3, n)
        kernel, stride, padding = ((k,), (s,), (pads,)) if dims == 1 else \
            ((2, k), (2, s), ((0, 1), pads))
        cases.append(pytest.param(shape, kernel, stride, padding, ceil_mode,
                                  id=f"{dims}d-k{k}-s{s}-p{pads}-ceil{ceil_mode:d}-n{n}"))
    return cases


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", row_cases())
def test_row_lengths_around_chunk_widths(shape, kernel, stride, padding, ceil_mode, dtype):
    seed = seed_of("rows", shape, kernel, stride, padding, ceil_mode, dtype)
    x = rand(shape, dtype, seed, ties=True)
    flat = x.reshape(-1)
    flat[::23] = np.nan  # scattered NaNs: the first one in a window wins
    flat[5::29] = np.nan
    check_every_pooling(shape, kernel, stride, padding, ceil_mode, dtype, x, seed + 1)


@pytest.mark.parametrize("n", [17, 33, 66, 112])
@pytest.mark.parametrize("kernel, padding", [(2, 0), (3, 1)])
def test_stride1_rows_match_torch(n, kernel, padding):
    x = rand((2, 3, 5, n), np.float32, seed_of("stride1-torch", n, kernel))
    tx = torch.from_numpy(x)
    y, idx = fc.max_pool(x, kernel, stride=1, padding=padding, return_indices=True)
    ty, tidx = F.max_pool2d(tx, kernel, 1, padding, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    y = fc.avg_pool(x, kernel, stride=1, padding=padding)
    ty = F.avg_pool2d(tx, kernel, 1, padding)
    np.testing.assert_allclose(y, ty.numpy(), **tolerance(np.float32, kernel * kernel))
    dy = rand(y.shape, np.float32, seed_of("stride1-torch-dy", n, kernel))
    tx.requires_grad_(True)
    tdx, = torch.autograd.grad(F.avg_pool2d(tx, kernel, 1, padding), tx, torch.from_numpy(dy))
    dx = fc.avg_pool_backward(dy, x.shape, kernel, stride=1, padding=padding)
    np.testing.assert_allclose(dx, tdx.numpy(), **tolerance(np.float32, kernel * kernel))


@pytest.mark.parametrize("height", [40, 2**18 + 3])
def test_avg_backward_long_inner_dims_short_rows(height):
    """3-D windows over a tall, narrow volume: the adjoint's cache of dy rows would need
    every row of the inner dim; beyond its memory cap it keeps only the current box."""
    shape, kernel, stride = (1, 2, 3, height, 3), (2, 2, 2), (1, 2, 2)
    win = window(shape, kernel, stride, 0, True)
    dy = rand(shape[:2] + win.out_size, np.float64, seed_of("tall", height))
    for count_include_pad in (True, False):
        dx = fc.avg_pool_backward(dy, shape, kernel, stride=stride, ceil_mode=True,
                                  count_include_pad=count_include_pad)
        rdx = ref.avg_pool_backward(dy, shape, *geometry(win), True, count_include_pad)
        np.testing.assert_allclose(dx, rdx, **tolerance(np.float64, 8))


# ----------------------------------------------------------------------------------------
# The CUDA kernels
# ----------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", CASES)
def test_cuda_max_pool_gpu_equals_cpu(shape, kernel, stride, padding, ceil_mode, dtype):
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


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", CASES)
def test_cuda_avg_pool_gpu_equals_cpu(shape, kernel, stride, padding, ceil_mode, dtype):
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

@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", CASES[::2])
def test_cuda_max_pool_backward_gpu_equals_cpu(shape, kernel, stride, padding, ceil_mode, dtype):
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


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_max_pool_backward_many_hits_on_one_cell(dtype):
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


@pytest.mark.cuda
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", CASES[::2])
def test_cuda_avg_pool_backward_gpu_equals_cpu(shape, kernel, stride, padding, ceil_mode, dtype,
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

@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_nan_and_infinities_as_cpu(dtype):
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


@pytest.mark.cuda
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_four_and_five_spatial_dims(dtype, ceil_mode):
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


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_large_planes_and_grid_stride(dtype):
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

@pytest.mark.cuda
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

@pytest.mark.cuda
def test_cuda_non_default_stream_and_results_stay_on_gpu():
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


@pytest.mark.cuda
def test_cuda_errors_match_cpu():
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


@pytest.mark.cuda
def test_cuda_extension_rejects_bad_input_directly():
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
