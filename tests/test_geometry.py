"""The shared output-size formula: Python and C++ agree, and match PyTorch's shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _cpu
from fastconv._geometry import MAX_EXTENT, make_window, output_length


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 10**6), kernel=st.integers(1, 50), stride=st.integers(1, 2**41),
       dilation=st.integers(1, 5), pad_b=st.integers(0, 200), pad_a=st.integers(0, 200),
       ceil_mode=st.booleans(), pool=st.booleans())
def test_python_and_cpp_agree(n, kernel, stride, dilation, pad_b, pad_a, ceil_mode, pool):
    if pool:
        dilation = 1
    try:
        expected = make_window("op", (n,), kernel, stride, ((pad_b, pad_a),),
                               dilation, ceil_mode, pool).out_size
    except ValueError:
        with pytest.raises(ValueError):
            _cpu.output_size([n], [kernel], [stride], [pad_b], [pad_a], [dilation],
                             ceil_mode, pool)
        return
    got = _cpu.output_size([n], [kernel], [stride], [pad_b], [pad_a], [dilation], ceil_mode,
                           pool)
    assert tuple(got) == expected


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("n,k,s,p", [(7, 3, 2, 1), (8, 2, 2, 0), (5, 3, 3, 1), (10, 4, 3, 2),
                                     (1, 1, 1, 0), (6, 3, 4, 1), (9, 2, 5, 1)])
def test_matches_torch_pooling_shapes(n, k, s, p, ceil_mode) -> None:
    x = torch.zeros(1, 1, n) + 1
    expected = F.max_pool1d(x, k, s, p, ceil_mode=ceil_mode).shape[-1]
    assert fastconv.output_size((n,), k, stride=s, padding=p, ceil_mode=ceil_mode) == \
        (expected,)


@pytest.mark.parametrize("n,k,s,p,d", [(10, 3, 1, 1, 1), (17, 5, 3, 2, 2), (4, 4, 1, 0, 1),
                                       (9, 2, 4, 1, 3)])
def test_matches_torch_conv_shapes(n, k, s, p, d) -> None:
    out = F.conv1d(torch.ones(1, 1, n), torch.ones(1, 1, k), stride=s, padding=p,
                   dilation=d).shape[-1]
    assert fastconv.output_size(n, k, stride=s, padding=p, dilation=d) == (out,)


def test_output_size_forms() -> None:
    assert fastconv.output_size((32, 32), 5) == (28, 28)
    assert fastconv.output_size((224, 224), 7, stride=2, padding=3) == (112, 112)
    assert fastconv.output_size((10, 11), (3, 4), stride=(2, 3), padding="same") == (5, 4)
    assert fastconv.output_size((10,), 3, padding=((2, 0),)) == (10,)
    assert fastconv.output_size((5,), 2, stride=2, ceil_mode=True) == (3,)
    assert fastconv.output_size((2**50,), 1, stride=2**40) == (2**10,)


def test_ceil_mode_drops_window_starting_in_end_padding() -> None:
    # n=5, k=2, s=2, pad 1: ceil gives 4 windows but the 4th starts at padded index 6 >= 5+1.
    assert output_length(5, 2, 2, 1, 1, 1, True) == 3
    assert tuple(_cpu.output_size([5], [2], [2], [1], [1], [1], True, True)) == (3,)


def test_extent_limit_is_enforced_in_both() -> None:
    with pytest.raises(ValueError, match="stride"):
        fastconv.output_size((10,), 3, stride=MAX_EXTENT + 1)
    with pytest.raises(ValueError, match="stride"):
        _cpu.output_size([10], [3], [MAX_EXTENT + 1], [0], [0], [1], False, False)
    with pytest.raises(ValueError, match="dilation"):
        _cpu.output_size([10], [2**40], [1], [0], [0], [2**40], False, False)
    assert np.int64(MAX_EXTENT) > 0


def test_memoized_windows_still_check_argument_types() -> None:
    """A window validated once is reused for equal arguments, but never for an argument of
    another type that compares equal (True == 1), and never after a failure."""
    first = make_window("conv", (9, 9), (3, 3), 1, 1)
    assert make_window("conv", (9, 9), (3, 3), 1, 1) == first
    with pytest.raises(TypeError, match="stride"):
        make_window("conv", (9, 9), (3, 3), True, 1)
    with pytest.raises(TypeError, match="padding"):
        make_window("conv", (9, 9), (3, 3), 1, (True, 1))
    assert make_window("conv", (9, 9), (3, 3), np.int64(1), 1) == first
    for _ in range(2):
        with pytest.raises(ValueError, match="padding"):
            make_window("conv", (9, 9), (3, 3), 1, 3)
