"""im2col / col2im on every device against the reference and torch unfold/fold, and col2im
as the exact adjoint of im2col. im2col is a copy, so it must equal the reference exactly on
every device; col2im sums each image element's contributions tap by tap (the same order on
the CPU and the GPU), so the GPU must equal the CPU bit for bit and both the float64
reference within rounding. GPU cases are marked `cuda` (see _cases.cpu_and_cuda)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastconv
from fastconv import reference
from _cases import IM2COL_CASES as CASES, cp, cpu_and_cuda, im2col_window as window
from _cases import on_device, to_host

DTYPES = [np.float32, np.float64]
TORCH_CASES = [c for c in CASES if len(c[0]) == 4 and not isinstance(c[3], (str, tuple))]


def unpack(case):
    shape, kernel, stride, padding, dilation = case
    return shape, kernel, dict(stride=stride, padding=padding, dilation=dilation)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_im2col_matches_reference_exactly(device, case, dtype) -> None:
    shape, kernel, kwargs = unpack(case)
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    cols = to_host(fastconv.im2col(on_device(device, x), kernel, **kwargs), device)
    assert cols.dtype == dtype
    win = window(*case)
    expected = reference.im2col(x, win.kernel, win.stride, win.pad_before, win.pad_after,
                                win.dilation)
    np.testing.assert_array_equal(cols, expected)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_col2im_matches_reference(device, case, dtype) -> None:
    shape, kernel, kwargs = unpack(case)
    win = window(*case)
    rows = shape[1] * int(np.prod(win.kernel))
    cols = np.random.default_rng(2).standard_normal(
        (shape[0], rows, int(np.prod(win.out_size)))).astype(dtype)
    image = to_host(fastconv.col2im(on_device(device, cols), shape[2:], kernel, **kwargs),
                    device)
    assert image.dtype == dtype
    expected = reference.col2im(cols.astype(np.float64), shape[2:], win.kernel, win.stride,
                                win.pad_before, win.pad_after, win.dilation)
    overlaps = int(np.prod(win.kernel))
    np.testing.assert_allclose(image, expected, rtol=overlaps * np.finfo(dtype).eps,
                               atol=overlaps * np.finfo(dtype).eps * 4)
    if device == "cuda":
        np.testing.assert_array_equal(image, fastconv.col2im(cols, shape[2:], kernel, **kwargs))


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("case", TORCH_CASES, ids=str)
def test_against_torch_unfold_fold(device, case) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA here")
    shape, kernel, kwargs = unpack(case)
    x = np.random.default_rng(3).standard_normal(shape)
    cols = fastconv.im2col(on_device(device, x), kernel, **kwargs)
    expected = F.unfold(torch.tensor(x, device=device), kernel, **kwargs).cpu().numpy()
    np.testing.assert_array_equal(to_host(cols, device), expected)
    image = fastconv.col2im(cols, shape[2:], kernel, **kwargs)
    folded = F.fold(torch.tensor(to_host(cols, device), device=device), shape[2:], kernel,
                    **kwargs).cpu().numpy()
    np.testing.assert_allclose(to_host(image, device), folded, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("case", CASES, ids=str)
def test_col2im_is_the_adjoint_of_im2col(device, case) -> None:
    """<im2col(x), c> == <x, col2im(c)> for random x and c (float64)."""
    shape, kernel, kwargs = unpack(case)
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape)
    cols = to_host(fastconv.im2col(on_device(device, x), kernel, **kwargs), device)
    c = rng.standard_normal(cols.shape)
    back = to_host(fastconv.col2im(on_device(device, c), shape[2:], kernel, **kwargs), device)
    assert np.isclose(np.sum(cols * c), np.sum(x * back), rtol=1e-12)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_stride_of_2_pow_40(device) -> None:
    x = np.random.default_rng(5).standard_normal((1, 2, 7, 7))
    cols = to_host(fastconv.im2col(on_device(device, x), 3, stride=2**40, padding=1), device)
    assert cols.shape == (1, 18, 1)
    np.testing.assert_array_equal(cols[0, :, 0].reshape(2, 3, 3)[:, 1:, 1:], x[0, :, :2, :2])
    np.testing.assert_array_equal(cols[0, :, 0].reshape(2, 3, 3)[:, 0, :], 0)
    image = to_host(fastconv.col2im(on_device(device, cols), (7, 7), 3, stride=2**40,
                                    padding=1), device)
    expected = np.zeros_like(x)
    expected[0, :, :2, :2] = x[0, :, :2, :2]
    np.testing.assert_array_equal(image, expected)


@pytest.mark.cuda
def test_cuda_non_default_stream() -> None:
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


@pytest.mark.cuda
def test_cuda_errors() -> None:
    from fastconv import _cuda

    x = cp.zeros((2, 3, 8, 8))
    with pytest.raises(TypeError, match="float32 or float64"):
        fastconv.im2col(x.astype(cp.int32), 3)
    with pytest.raises(ValueError, match="does not fit"):
        fastconv.col2im(cp.zeros((2, 10, 36)), (8, 8), 3)
    alloc = lambda n: cp.empty(n, cp.uint8)  # noqa: E731
    args = ([3, 3], [1, 1], [0, 0], [0, 0], [1, 1], alloc, 0)
    with pytest.raises(ValueError, match="cols has shape"):
        _cuda.im2col(x, cp.empty((2, 27, 35)), *args)
    with pytest.raises(TypeError, match="dtype float64"):
        _cuda.im2col(x, cp.empty((2, 27, 36), cp.float32), *args)
    with pytest.raises(TypeError, match="__cuda_array_interface__"):
        _cuda.col2im(np.zeros((2, 27, 36)), x, *args)
    with pytest.raises(ValueError, match="padding"):
        _cuda.im2col(x, cp.empty((2, 27, 36)), [3, 3], [1, 1], [3, 0], [0, 0], [1, 1], alloc, 0)
