"""Bad input to the convolution family and the shared argument handling: every case raises
ValueError or TypeError naming the argument, from the public API and from the C++ module
called directly (which must re-check, never crash)."""

from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import _cpu

rng = np.random.default_rng(0)
X = rng.standard_normal((2, 4, 8, 8))
W = rng.standard_normal((6, 4, 3, 3))


class FakeGpuArray:
    """Anything exposing __cuda_array_interface__ is routed to the (absent) CUDA backend."""

    __cuda_array_interface__ = {"shape": (2, 4, 8, 8), "typestr": "<f8", "data": (0, False),
                                "version": 3}


@pytest.mark.parametrize("call,exc,match", [
    (lambda: fastconv.conv(X[0], W), ValueError, r"x shape \(4, 8, 8\).*w shape"),
    (lambda: fastconv.conv(X, W[:, :3]), ValueError, r"w shape \(6, 3, 3, 3\).*C/groups = 4"),
    (lambda: fastconv.conv(X, W, groups=3), ValueError, r"groups=3 must divide"),
    (lambda: fastconv.conv(X, W, groups=0), ValueError, r"groups must be positive"),
    (lambda: fastconv.conv(None, W), TypeError, r"conv: x must be an array, got None"),
    (lambda: fastconv.conv(X, None), TypeError, r"conv: w must be an array, got None"),
    (lambda: fastconv.im2col(None, 3), TypeError, r"im2col: x must be an array"),
    (lambda: fastconv.max_pool(None, 2), TypeError, r"max_pool: x must be an array"),
    (lambda: fastconv.box_iou(None, np.ones((1, 4))), TypeError, r"box_iou: a must be an array"),
    (lambda: fastconv.max_pool(X, 2**62), ValueError, r"kernel_size .* exceeds the largest "
     r"supported extent"),
    (lambda: fastconv.conv(X, W, groups=1.5), TypeError, r"groups"),
    (lambda: fastconv.conv(X, W, groups=True), TypeError, r"groups"),
    (lambda: fastconv.conv(X, W, padding=-1), ValueError, r"padding .* must not be negative"),
    (lambda: fastconv.conv(X, W, padding=3), ValueError, r"padding .* exceeds the limit of 2"),
    (lambda: fastconv.conv(X, W, padding=((0, 3), (0, 0))), ValueError, r"padding"),
    (lambda: fastconv.conv(X, W, padding=(1, 1, 1)), ValueError, r"padding .* 3 entries"),
    (lambda: fastconv.conv(X, W, padding=((1,), (1, 1))), ValueError, r"padding"),
    (lambda: fastconv.conv(X, W, padding="full"), ValueError, r"padding must be"),
    (lambda: fastconv.conv(X, W, stride=0), ValueError, r"stride .* positive"),
    (lambda: fastconv.conv(X, W, stride=(1, 2, 3)), ValueError, r"stride .* 3 entries"),
    (lambda: fastconv.conv(X, W, stride="2"), TypeError, r"stride"),
    (lambda: fastconv.conv(X, W, dilation=0), ValueError, r"dilation .* positive"),
    (lambda: fastconv.conv(X[:, :, :2, :2], W), ValueError, r"kernel_size .* larger than the "
     r"padded input"),
    (lambda: fastconv.conv(X[:, :, :0], W), ValueError, r"zero-size"),
    (lambda: fastconv.conv(X, W[:0]), ValueError, r"zero-size"),
    (lambda: fastconv.conv(X, W, np.ones(5)), ValueError, r"bias must have shape \(6,\)"),
    (lambda: fastconv.conv(X.astype(np.float32), W), TypeError, r"w has dtype float64"),
    (lambda: fastconv.conv(X.astype(np.int64), W), TypeError, r"x must be float32 or float64"),
    (lambda: fastconv.conv(X.astype(np.float16), W), TypeError, r"x must be float32"),
    (lambda: fastconv.conv(X.tolist(), W), TypeError, r"x must be a numpy.ndarray"),
    (lambda: fastconv.conv(X, W, np.ones(6, np.float32)), TypeError, r"bias has dtype"),
    (lambda: fastconv.conv(FakeGpuArray(), W), TypeError, r"x on the GPU but w"),
    (lambda: fastconv.conv(FakeGpuArray(), FakeGpuArray()), RuntimeError, r"CUDA"),
    (lambda: fastconv.conv_backward_input(np.ones((2, 6, 5, 5)), W, X.shape), ValueError,
     r"dy has shape \(2, 6, 5, 5\), expected \(2, 6, 6, 6\)"),
    (lambda: fastconv.conv_backward_input(np.ones((2, 6, 6, 6)), W, (2, 4, 8)), ValueError,
     r"input_shape"),
    (lambda: fastconv.conv_backward_input(np.ones((2, 6, 6, 6)), W, (2, 4, 8, 0)), ValueError,
     r"input_shape"),
    (lambda: fastconv.conv_backward_input(np.ones((2, 6, 6, 6)), W, "2,4,8,8"), TypeError,
     r"input_shape"),
    (lambda: fastconv.conv_backward_weight(X, np.ones((2, 6, 6, 7)), 3), ValueError,
     r"dy has shape"),
    (lambda: fastconv.conv_backward_weight(X, np.ones((2, 6, 6)), 3), ValueError, r"dy shape"),
    (lambda: fastconv.conv_backward_weight(X, np.ones((2, 6, 6, 6)), (3, 3, 3)), ValueError,
     r"kernel_size"),
    (lambda: fastconv.conv_backward_weight(X, np.ones((2, 6, 6, 6)), 3, groups=4), ValueError,
     r"groups=4"),
    (lambda: fastconv.im2col(X, 9), ValueError, r"kernel_size .* larger"),
    (lambda: fastconv.im2col(X[0, 0], 3), ValueError, r"x must be \(N, C, \*spatial\)"),
    (lambda: fastconv.im2col(X, 0), ValueError, r"kernel_size .* positive"),
    (lambda: fastconv.col2im(np.ones((2, 36, 35)), (8, 8), 3), ValueError,
     r"cols shape \(2, 36, 35\)"),
    (lambda: fastconv.col2im(np.ones((2, 36)), (8, 8), 3), ValueError, r"cols must be"),
    (lambda: fastconv.col2im(np.ones((2, 36, 36), np.int32), (8, 8), 3), TypeError, r"cols"),
    (lambda: fastconv.output_size((10,), 3, padding=5), ValueError, r"padding"),
    (lambda: fastconv.output_size((0,), 1), ValueError, r"input spatial size"),
    (lambda: fastconv.output_size((4,), 5), ValueError, r"larger than the padded input"),
])
def test_public_api_rejects(call, exc, match) -> None:
    with pytest.raises(exc, match=match):
        call()


OUT = np.zeros((2, 6, 6, 6))
STD = ([1, 1], [0, 0], [0, 0], [1, 1])  # stride, pad_before, pad_after, dilation


@pytest.mark.parametrize("call,exc,match", [
    (lambda: _cpu.conv_forward(X, W, None, np.empty((2, 6, 6, 5)), *STD, 1), ValueError,
     r"out has shape"),
    (lambda: _cpu.conv_forward(X, W, None, OUT[..., ::2].copy(), *STD, 1), ValueError, "out"),
    (lambda: _cpu.conv_forward(X, W, None, np.empty((2, 6, 6, 12))[..., ::2], *STD, 1),
     ValueError, r"out must be C-contiguous"),
    (lambda: _cpu.conv_forward(X, W, None, OUT.astype(np.float32), *STD, 1), TypeError,
     r"out must have dtype float64"),
    (lambda: _cpu.conv_forward(X.astype(np.int32), W, None, OUT, *STD, 1), TypeError,
     r"x must be float32 or float64"),
    (lambda: _cpu.conv_forward(X, W, np.ones(3), OUT, *STD, 1), ValueError, r"bias"),
    (lambda: _cpu.conv_forward(X, W, None, OUT, [1], [0], [0], [1], 1), ValueError, r"stride"),
    (lambda: _cpu.conv_forward(X, W, None, OUT, [1, 1], [-1, 0], [0, 0], [1, 1], 1), ValueError,
     r"padding"),
    (lambda: _cpu.conv_forward(X, W, None, OUT, *STD, 0), ValueError, r"groups"),
    (lambda: _cpu.conv_forward(X, W, None, OUT, *STD, 3), ValueError, r"groups=3"),
    (lambda: _cpu.conv_forward(X[0], W, None, OUT, *STD, 1), ValueError, r"input shape"),
    (lambda: _cpu.conv_forward(X, W, None, OUT, [0, 1], [0, 0], [0, 0], [1, 1], 1), ValueError,
     r"stride"),
    (lambda: _cpu.conv_forward(X, W, None, OUT, [2**61, 1], [0, 0], [0, 0], [1, 1], 1),
     ValueError, r"stride"),
    (lambda: _cpu.conv_backward_input(np.ones((2, 6, 6, 5)), W, np.empty(X.shape), *STD, 1),
     ValueError, r"dy has shape"),
    (lambda: _cpu.conv_backward_weight(X, np.ones((2, 6, 6, 6)), np.empty((6, 4, 3)), *STD, 1),
     ValueError, r"input shape"),
    (lambda: _cpu.im2col(X, np.empty((2, 36, 35)), [3, 3], *STD), ValueError, r"cols has shape"),
    (lambda: _cpu.col2im(np.empty((2, 36, 36)), np.empty((2, 4, 8)), [3, 3], *STD), ValueError,
     r"padding|kernel_size|entries"),
    (lambda: _cpu.im2col(X, np.empty((2, 36, 36)), [3, 3], *STD[:3], [1, 2**60]), ValueError,
     r"dilation"),
])
def test_cpp_module_rechecks(call, exc, match) -> None:
    with pytest.raises(exc, match=match):
        call()


def test_read_only_output_is_refused() -> None:
    out = np.empty((2, 6, 6, 6))
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        _cpu.conv_forward(X, W, None, out, *STD, 1)
