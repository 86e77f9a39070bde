"""CUDA im2col / col2im on CuPy arrays, over the CPU tests' cases (tests/test_im2col.py):
im2col is a copy, so it must equal the reference exactly; col2im gathers each image
element's contributions tap by tap, the CPU kernel's order, so it must equal the CPU result
bit for bit and the float64 reference within rounding. Plus torch unfold/fold on CUDA, the
adjoint identity, a non-default stream and argument errors."""

from __future__ import annotations

import fastconv
import numpy as np
import pytest
from fastconv import reference
from test_im2col import CASES, window

pytestmark = pytest.mark.cuda

DTYPES = [np.float32, np.float64]


@pytest.fixture(scope="module")
def cp():
    return pytest.importorskip("cupy")


def unpack(case):
    shape, kernel, stride, padding, dilation = case
    return shape, kernel, dict(stride=stride, padding=padding, dilation=dilation)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_im2col_matches_reference_and_cpu_exactly(cp, case, dtype) -> None:
    shape, kernel, kwargs = unpack(case)
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    cols = fastconv.im2col(cp.asarray(x), kernel, **kwargs)
    assert isinstance(cols, cp.ndarray) and cols.dtype == dtype
    win = window(*case)
    expected = reference.im2col(x, win.kernel, win.stride, win.pad_before, win.pad_after,
                                win.dilation)
    np.testing.assert_array_equal(cp.asnumpy(cols), expected)
    np.testing.assert_array_equal(cp.asnumpy(cols), fastconv.im2col(x, kernel, **kwargs))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_col2im_matches_reference_and_cpu(cp, case, dtype) -> None:
    shape, kernel, kwargs = unpack(case)
    win = window(*case)
    rows = shape[1] * int(np.prod(win.kernel))
    cols = np.random.default_rng(2).standard_normal(
        (shape[0], rows, int(np.prod(win.out_size)))).astype(dtype)
    image = fastconv.col2im(cp.asarray(cols), shape[2:], kernel, **kwargs)
    assert isinstance(image, cp.ndarray) and image.dtype == dtype
    image = cp.asnumpy(image)
    expected = reference.col2im(cols.astype(np.float64), shape[2:], win.kernel, win.stride,
                                win.pad_before, win.pad_after, win.dilation)
    magnitude = reference.col2im(np.abs(cols.astype(np.float64)), shape[2:], win.kernel,
                                 win.stride, win.pad_before, win.pad_after, win.dilation)
    overlaps = int(np.prod(win.kernel))
    eps = np.finfo(dtype).eps
    assert np.all(np.abs(image - expected) <= (overlaps + 1) * eps * magnitude)
    np.testing.assert_array_equal(image, fastconv.col2im(cols, shape[2:], kernel, **kwargs))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_col2im_is_the_adjoint_of_im2col(cp, case) -> None:
    shape, kernel, kwargs = unpack(case)
    rng = np.random.default_rng(4)
    x = cp.asarray(rng.standard_normal(shape))
    cols = fastconv.im2col(x, kernel, **kwargs)
    c = cp.asarray(rng.standard_normal(cols.shape))
    back = fastconv.col2im(c, shape[2:], kernel, **kwargs)
    assert np.isclose(float(cp.sum(cols * c)), float(cp.sum(x * back)), rtol=1e-12)


@pytest.mark.parametrize("case", [c for c in CASES if len(c[0]) == 4 and not isinstance(c[3], str)
                                  and not isinstance(c[3], tuple)], ids=str)
def test_against_torch_unfold_fold_on_cuda(cp, case) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA here")
    import torch.nn.functional as F

    shape, kernel, stride, padding, dilation = case
    x = np.random.default_rng(3).standard_normal(shape)
    cols = fastconv.im2col(cp.asarray(x), kernel, stride=stride, padding=padding,
                           dilation=dilation)
    expected = F.unfold(torch.tensor(x, device="cuda"), kernel, dilation=dilation,
                        padding=padding, stride=stride).cpu().numpy()
    np.testing.assert_array_equal(cp.asnumpy(cols), expected)
    image = fastconv.col2im(cols, shape[2:], kernel, stride=stride, padding=padding,
                            dilation=dilation)
    folded = F.fold(torch.tensor(cp.asnumpy(cols), device="cuda"), shape[2:], kernel,
                    dilation=dilation, padding=padding, stride=stride).cpu().numpy()
    np.testing.assert_allclose(cp.asnumpy(image), folded, rtol=1e-13, atol=1e-13)


def test_stride_of_2_pow_40(cp) -> None:
    x = np.random.default_rng(5).standard_normal((1, 2, 7, 7))
    cols = cp.asnumpy(fastconv.im2col(cp.asarray(x), 3, stride=2**40, padding=1))
    np.testing.assert_array_equal(cols, fastconv.im2col(x, 3, stride=2**40, padding=1))
    image = cp.asnumpy(fastconv.col2im(cp.asarray(cols), (7, 7), 3, stride=2**40, padding=1))
    np.testing.assert_array_equal(image, fastconv.col2im(cols, (7, 7), 3, stride=2**40,
                                                         padding=1))


def test_non_default_stream(cp) -> None:
    x = np.random.default_rng(6).standard_normal((2, 3, 30, 20)).astype(np.float32)
    xg = cp.asarray(x)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        cols = fastconv.im2col(xg, 3, stride=2, padding=1)
        image = fastconv.col2im(cols, (30, 20), 3, stride=2, padding=1)
        stream.synchronize()
    np.testing.assert_array_equal(cp.asnumpy(cols), fastconv.im2col(x, 3, stride=2, padding=1))
    np.testing.assert_array_equal(
        cp.asnumpy(image), fastconv.col2im(fastconv.im2col(x, 3, stride=2, padding=1), (30, 20),
                                           3, stride=2, padding=1))


def test_errors(cp) -> None:
    from fastconv import _cuda

    x = cp.zeros((2, 3, 8, 8))
    with pytest.raises(TypeError, match="float32 or float64"):
        fastconv.im2col(x.astype(cp.int32), 3)
    with pytest.raises(ValueError, match="does not fit"):
        fastconv.col2im(cp.zeros((2, 10, 36)), (8, 8), 3)
    alloc = lambda n: cp.empty(n, cp.uint8)
    args = ([3, 3], [1, 1], [0, 0], [0, 0], [1, 1], alloc, 0)
    with pytest.raises(ValueError, match="cols has shape"):
        _cuda.im2col(x, cp.empty((2, 27, 35)), *args)
    with pytest.raises(TypeError, match="dtype float64"):
        _cuda.im2col(x, cp.empty((2, 27, 36), cp.float32), *args)
    with pytest.raises(TypeError, match="__cuda_array_interface__"):
        _cuda.col2im(np.zeros((2, 27, 36)), x, *args)
    with pytest.raises(ValueError, match="padding"):
        _cuda.im2col(x, cp.empty((2, 27, 36)), [3, 3], [1, 1], [3, 0], [0, 0], [1, 1], alloc, 0)
