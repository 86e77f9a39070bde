"""im2col / col2im against the reference and torch unfold/fold, and col2im as the exact
adjoint of im2col."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastconv
from fastconv import reference
from fastconv._geometry import make_window

DTYPES = [np.float32, np.float64]

# (shape, kernel, stride, padding, dilation)
CASES = [
    ((2, 3, 10), 3, 1, 0, 1),
    ((1, 2, 17), 4, 3, ((2, 1),), 2),
    ((2, 3, 9, 8), 3, 1, 1, 1),
    ((3, 2, 11, 7), (3, 2), (2, 1), ((1, 2), (0, 1)), (1, 2)),
    ((1, 4, 6, 6), 1, 2, 0, 1),
    ((2, 1, 5, 9), (5, 1), (1, 3), "same", 1),
    ((2, 2, 8, 8), 2, 3, "valid", 3),
    ((1, 2, 5, 6, 4), (2, 3, 2), (1, 2, 1), 1, 1),
    ((2, 2, 6, 5, 7), 3, (2, 1, 3), ((0, 2), (1, 1), (2, 0)), (2, 1, 1)),
    ((1, 3, 4, 3, 5, 2), (2, 2, 3, 1), 1, ((1, 0), (0, 1), (1, 1), (0, 0)), 1),
]


def window(shape, kernel, stride, padding, dilation):
    return make_window("im2col", shape[2:], kernel, stride, padding, dilation)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_im2col_matches_reference_exactly(case, dtype) -> None:
    shape, kernel, stride, padding, dilation = case
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    cols = fastconv.im2col(x, kernel, stride=stride, padding=padding, dilation=dilation)
    win = window(*case)
    expected = reference.im2col(x, win.kernel, win.stride, win.pad_before, win.pad_after,
                                win.dilation)
    assert cols.dtype == dtype
    np.testing.assert_array_equal(cols, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_col2im_matches_reference(case, dtype) -> None:
    shape, kernel, stride, padding, dilation = case
    win = window(*case)
    rows = shape[1] * int(np.prod(win.kernel))
    cols = np.random.default_rng(2).standard_normal(
        (shape[0], rows, int(np.prod(win.out_size)))).astype(dtype)
    image = fastconv.col2im(cols, shape[2:], kernel, stride=stride, padding=padding,
                            dilation=dilation)
    expected = reference.col2im(cols.astype(np.float64), shape[2:], win.kernel, win.stride,
                                win.pad_before, win.pad_after, win.dilation)
    overlaps = int(np.prod(win.kernel))
    np.testing.assert_allclose(image, expected, rtol=overlaps * np.finfo(dtype).eps,
                               atol=overlaps * np.finfo(dtype).eps * 4)


@pytest.mark.parametrize("case", [c for c in CASES if len(c[0]) == 4 and not isinstance(c[3], str)
                                  and not isinstance(c[3], tuple)], ids=str)
def test_against_torch_unfold_fold(case) -> None:
    shape, kernel, stride, padding, dilation = case
    x = np.random.default_rng(3).standard_normal(shape)
    cols = fastconv.im2col(x, kernel, stride=stride, padding=padding, dilation=dilation)
    expected = F.unfold(torch.from_numpy(x), kernel, dilation=dilation, padding=padding,
                        stride=stride).numpy()
    np.testing.assert_array_equal(cols, expected)
    image = fastconv.col2im(cols, shape[2:], kernel, stride=stride, padding=padding,
                            dilation=dilation)
    folded = F.fold(torch.from_numpy(cols), shape[2:], kernel, dilation=dilation,
                    padding=padding, stride=stride).numpy()
    np.testing.assert_allclose(image, folded, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_col2im_is_the_adjoint_of_im2col(case) -> None:
    """<im2col(x), c> == <x, col2im(c)> for random x and c (float64)."""
    shape, kernel, stride, padding, dilation = case
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape)
    cols = fastconv.im2col(x, kernel, stride=stride, padding=padding, dilation=dilation)
    c = rng.standard_normal(cols.shape)
    back = fastconv.col2im(c, shape[2:], kernel, stride=stride, padding=padding,
                           dilation=dilation)
    assert np.isclose(np.sum(cols * c), np.sum(x * back), rtol=1e-12)


def test_im2col_stride_of_2_pow_40() -> None:
    x = np.random.default_rng(5).standard_normal((1, 2, 7, 7))
    cols = fastconv.im2col(x, 3, stride=2**40, padding=1)
    assert cols.shape == (1, 18, 1)
    np.testing.assert_array_equal(cols[0, :, 0].reshape(2, 3, 3)[:, 1:, 1:], x[0, :, :2, :2])
    np.testing.assert_array_equal(cols[0, :, 0].reshape(2, 3, 3)[:, 0, :], 0)
