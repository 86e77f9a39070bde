"""CUDA conv, conv_backward_input and conv_backward_weight on CuPy arrays.

Every case of the CPU tests (tests/test_conv.py's CASES) runs through every CUDA kernel
path (the auto choice, the 64x64, 64x128 and 128x128 implicit GEMM tiles, the direct
kernels) and is checked against the float64 NumPy reference with the summation-rounding
bound the CPU tests use, and against fastconv's CPU result; PyTorch CUDA (TF32 off) is a
third opinion. Extra cases hit the GEMM tiles' tails, groups, depthwise, 1x1, 4-D and 8-D,
a ResNet-50 3x3 layer, non-default streams, determinism and argument errors.
"""

from __future__ import annotations

import zlib

import fastconv
import numpy as np
import pytest
from _helpers import assert_within_rounding, random_array, torch_pad_arg
from fastconv import reference
from test_conv import (
    CASES,
    ConvCase,
    geometry,
    make_inputs,
    reduction_terms,
    reference_conv,
)

pytestmark = pytest.mark.cuda

DTYPES = [np.float32, np.float64]
PATHS = ["auto", "gemm", "gemm_wide", "gemm_large", "direct"]

# Shapes the CPU cases (at most 9 channels per group) do not reach: GEMM-sized groups with
# tails in every tile dim, groups of 16, depthwise with a channel multiplier, 1x1, 3-D,
# strided "same" padding, and a batch whose positions straddle tiles.
WIDE_CASES = [
    ConvCase(2, 20, 136, (9, 7), (3, 3), (1, 1), 1, (1, 1), 1, True),
    ConvCase(3, 72, 72, (13,), (5,), (2,), ((2, 1),), (2,), 1, True),
    ConvCase(2, 64, 64, (10, 11), (3, 3), (1, 1), "same", (2, 1), 4, False),
    ConvCase(2, 32, 64, (12, 9), (3, 3), (2, 2), "same", (1, 1), 32, True),
    ConvCase(4, 64, 256, (7, 7), (1, 1), (1, 1), 0, (1, 1), 1, True),
    ConvCase(2, 16, 24, (6, 5, 7), (3, 2, 3), (1, 2, 1), ((1, 0), (0, 1), (1, 1)),
             (1, 1, 2), 1, False),
    ConvCase(5, 9, 130, (3, 3), (3, 3), (1, 1), 1, (1, 1), 1, True),
    ConvCase(1, 129, 9, (17, 17), (3, 3), (3, 3), ((0, 2), (1, 0)), (1, 2), 1, False),
]


@pytest.fixture(scope="module")
def cp():
    return pytest.importorskip("cupy")


@pytest.fixture(params=PATHS)
def path(request):
    """Forces one family of conv kernels for the test, then restores the automatic choice."""
    from fastconv import _cuda

    previous = _cuda._set_conv_path(request.param)
    yield request.param
    _cuda._set_conv_path(previous)


def torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA here")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return torch


def conv_kwargs(case: ConvCase) -> dict:
    return dict(stride=case.stride, padding=case.padding, dilation=case.dilation,
                groups=case.groups)


def on_gpu(cp, *arrays):
    return [None if a is None else cp.asarray(a) for a in arrays]


def back(cp, a) -> np.ndarray:
    assert isinstance(a, cp.ndarray), type(a)
    return cp.asnumpy(a)


def backward_reference(case: ConvCase, x, w, dy):
    win = geometry(case)
    args = (win.stride, win.pad_before, win.pad_after, win.dilation, case.groups)
    x64, w64, dy64 = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)
    dx = (reference.conv_backward_input(dy64, w64, x.shape, *args),
          reference.conv_backward_input(np.abs(dy64), np.abs(w64), x.shape, *args))
    dw = (reference.conv_backward_weight(x64, dy64, case.kernel, *args),
          reference.conv_backward_weight(np.abs(x64), np.abs(dy64), case.kernel, *args))
    terms_dx = case.out_channels // case.groups * int(np.prod(case.kernel))
    terms_dw = case.batch * int(np.prod(win.out_size))
    return dx, dw, terms_dx, terms_dw


def check_forward(cp, case: ConvCase, dtype) -> np.ndarray:
    x, w, b = make_inputs(case, dtype, seed=zlib.crc32(str(case).encode()))
    y = back(cp, fastconv.conv(*on_gpu(cp, x, w, b), **conv_kwargs(case)))
    exact, magnitude = reference_conv(case, x, w, b)
    terms = reduction_terms(case)
    assert_within_rounding(y, exact, magnitude, terms, np.dtype(dtype))
    y_cpu = fastconv.conv(x, w, b, **conv_kwargs(case))
    # Both within rounding of the exact value, so within twice that of each other.
    eps = np.finfo(dtype).eps
    assert np.all(np.abs(y.astype(np.float64) - y_cpu) <=
                  2 * (terms + 2) * eps * magnitude + np.finfo(dtype).tiny)
    return y


def check_backward(cp, case: ConvCase, dtype):
    x, w, _ = make_inputs(case, dtype, seed=11)
    win = geometry(case)
    dy = random_array(np.random.default_rng(12), (case.batch, case.out_channels) + win.out_size,
                      dtype)
    xg, wg, dyg = on_gpu(cp, x, w, dy)
    dx = back(cp, fastconv.conv_backward_input(dyg, wg, x.shape, **conv_kwargs(case)))
    dw = back(cp, fastconv.conv_backward_weight(xg, dyg, case.kernel, **conv_kwargs(case)))
    (dx_exact, dx_mag), (dw_exact, dw_mag), terms_dx, terms_dw = backward_reference(case, x, w,
                                                                                   dy)
    assert_within_rounding(dx, dx_exact, dx_mag, terms_dx, np.dtype(dtype))
    assert_within_rounding(dw, dw_exact, dw_mag, terms_dw, np.dtype(dtype))
    eps, tiny = np.finfo(dtype).eps, np.finfo(dtype).tiny
    dx_cpu = fastconv.conv_backward_input(dy, w, x.shape, **conv_kwargs(case))
    dw_cpu = fastconv.conv_backward_weight(x, dy, case.kernel, **conv_kwargs(case))
    assert np.all(np.abs(dx.astype(np.float64) - dx_cpu) <= 2 * (terms_dx + 2) * eps * dx_mag + tiny)
    assert np.all(np.abs(dw.astype(np.float64) - dw_cpu) <= 2 * (terms_dw + 2) * eps * dw_mag + tiny)
    return dx, dw


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES + WIDE_CASES, ids=str)
def test_forward_matches_reference_and_cpu(cp, path, case: ConvCase, dtype) -> None:
    check_forward(cp, case, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES + WIDE_CASES, ids=str)
def test_backward_matches_reference_and_cpu(cp, path, case: ConvCase, dtype) -> None:
    check_backward(cp, case, dtype)


@pytest.mark.parametrize("case", CASES[::7] + WIDE_CASES, ids=str)
def test_paths_agree(cp, case: ConvCase) -> None:
    """Forward and input gradient are one FMA chain in reduction order in every kernel
    family, so the GEMMs and the direct kernels agree bit for bit; the weight gradient's
    split-K / tree orders differ, so it only agrees within rounding (checked above)."""
    from fastconv import _cuda

    results = {}
    try:
        for name in PATHS:
            _cuda._set_conv_path(name)
            y = check_forward(cp, case, np.float32)
            dx, _ = check_backward(cp, case, np.float32)
            results[name] = (y, dx)
    finally:
        _cuda._set_conv_path("auto")
    for name in PATHS[1:]:
        np.testing.assert_array_equal(results[name][0], results["auto"][0], err_msg=name)
        np.testing.assert_array_equal(results[name][1], results["auto"][1], err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES[::4] + WIDE_CASES, ids=str)
def test_against_torch_cuda(cp, case: ConvCase, dtype) -> None:
    torch = torch_cuda()
    import torch.nn.functional as F

    x, w, b = make_inputs(case, dtype, seed=3)
    win = geometry(case)
    dy = random_array(np.random.default_rng(4), (case.batch, case.out_channels) + win.out_size,
                      dtype)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(case.spatial)]
    xt = torch.tensor(x, device="cuda", requires_grad=True)
    wt = torch.tensor(w, device="cuda", requires_grad=True)
    bt = None if b is None else torch.tensor(b, device="cuda")
    yt = fn(F.pad(xt, torch_pad_arg(win.pad_before, win.pad_after)), wt, bt, stride=win.stride,
            dilation=win.dilation, groups=case.groups)
    yt.backward(torch.tensor(dy, device="cuda"))

    xg, wg, bg, dyg = on_gpu(cp, x, w, b, dy)
    y = back(cp, fastconv.conv(xg, wg, bg, **conv_kwargs(case)))
    dx = back(cp, fastconv.conv_backward_input(dyg, wg, x.shape, **conv_kwargs(case)))
    dw = back(cp, fastconv.conv_backward_weight(xg, dyg, case.kernel, **conv_kwargs(case)))

    exact, magnitude = reference_conv(case, x, w, b)
    (dx_exact, dx_mag), (dw_exact, dw_mag), terms_dx, terms_dw = backward_reference(case, x, w,
                                                                                   dy)
    d = np.dtype(dtype)
    for ours, theirs, ex, mag, terms in [
            (y, yt.detach().cpu().numpy(), exact, magnitude, reduction_terms(case)),
            (dx, xt.grad.cpu().numpy(), dx_exact, dx_mag, terms_dx),
            (dw, wt.grad.cpu().numpy(), dw_exact, dw_mag, terms_dw)]:
        assert_within_rounding(ours, ex, mag, terms, d)
        assert_within_rounding(theirs.astype(dtype), ex, mag, terms, d)


@pytest.mark.parametrize("dtype,forced", [(np.float32, "auto"), (np.float32, "gemm_wide"),
                                          (np.float32, "gemm_large"), (np.float64, "auto")])
def test_resnet_3x3_layer(cp, dtype, forced) -> None:
    """ResNet-50 stage-1 3x3 conv (64 -> 64 channels, 56x56, batch 2) through the float32
    tile shapes. The GPU's worst error against float64 stays within a few times the CPU
    kernel's (and PyTorch CUDA's)."""
    from fastconv import _cuda

    case = ConvCase(2, 64, 64, (56, 56), (3, 3), (1, 1), 1, (1, 1), 1, True)
    previous = _cuda._set_conv_path(forced)
    try:
        y = check_forward(cp, case, dtype)
        check_backward(cp, case, dtype)
    finally:
        _cuda._set_conv_path(previous)
    x, w, b = make_inputs(case, dtype, seed=zlib.crc32(str(case).encode()))
    exact, magnitude = reference_conv(case, x, w, b)
    y_cpu = fastconv.conv(x, w, b, **conv_kwargs(case))
    err_gpu = np.abs(y.astype(np.float64) - exact).max()
    err_cpu = np.abs(y_cpu.astype(np.float64) - exact).max()
    floor = 4 * np.finfo(dtype).eps * float(np.median(magnitude))
    assert err_gpu <= 4 * err_cpu + floor, (err_gpu, err_cpu)
    torch = torch_cuda()
    import torch.nn.functional as F

    yt = F.conv2d(torch.tensor(x, device="cuda"), torch.tensor(w, device="cuda"),
                  torch.tensor(b, device="cuda"), padding=1).cpu().numpy()
    err_torch = np.abs(yt.astype(np.float64) - exact).max()
    assert err_gpu <= 4 * err_torch + floor, (err_gpu, err_torch)


def test_four_and_eight_spatial_dims(cp) -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 4, 5, 4, 6, 3))
    w = rng.standard_normal((6, 2, 2, 3, 2, 2))
    b = rng.standard_normal(6)
    kwargs = dict(stride=(1, 2, 1, 2), padding=((1, 0), (0, 2), (1, 1), (0, 1)),
                  dilation=(2, 1, 1, 1), groups=2)
    y = back(cp, fastconv.conv(*on_gpu(cp, x, w, b), **kwargs))
    np.testing.assert_allclose(y, fastconv.conv(x, w, b, **kwargs), rtol=1e-12, atol=1e-12)

    x8 = rng.standard_normal((1, 3) + (2, 1, 2, 1, 2, 1, 2, 3))
    w8 = rng.standard_normal((5, 3) + (2, 1, 1, 1, 2, 1, 1, 2))
    kwargs8 = dict(stride=(1,) * 7 + (2,), padding=1)
    with pytest.raises(ValueError):  # padding 1 exceeds the reach of the size-1 kernel dims
        fastconv.conv(*on_gpu(cp, x8, w8), **kwargs8)
    kwargs8["padding"] = ((0, 0),) * 4 + ((1, 0),) + ((0, 0),) * 2 + ((1, 0),)
    y8 = back(cp, fastconv.conv(*on_gpu(cp, x8, w8), **kwargs8))
    np.testing.assert_allclose(y8, fastconv.conv(x8, w8, **kwargs8), rtol=1e-12, atol=1e-12)
    dy8 = rng.standard_normal(y8.shape)
    dx8 = back(cp, fastconv.conv_backward_input(cp.asarray(dy8), cp.asarray(w8), x8.shape,
                                                **kwargs8))
    np.testing.assert_allclose(dx8, fastconv.conv_backward_input(dy8, w8, x8.shape, **kwargs8),
                               rtol=1e-12, atol=1e-12)
    dw8 = back(cp, fastconv.conv_backward_weight(cp.asarray(x8), cp.asarray(dy8), w8.shape[2:],
                                                 **kwargs8))
    np.testing.assert_allclose(dw8, fastconv.conv_backward_weight(x8, dy8, w8.shape[2:],
                                                                  **kwargs8),
                               rtol=1e-12, atol=1e-12)


def test_nine_spatial_dims_rejected(cp) -> None:
    x = cp.zeros((1, 1) + (2,) * 9)
    w = cp.zeros((1, 1) + (1,) * 9)
    with pytest.raises(ValueError, match="at most 8 spatial dims"):
        fastconv.conv(x, w)


def test_huge_stride_gives_one_window(cp) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 9, 7))
    w = rng.standard_normal((3, 2, 3, 3))
    y = back(cp, fastconv.conv(cp.asarray(x), cp.asarray(w), stride=2**40, padding=1))
    np.testing.assert_allclose(y, fastconv.conv(x, w, stride=2**40, padding=1), rtol=1e-12,
                               atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx = back(cp, fastconv.conv_backward_input(cp.asarray(dy), cp.asarray(w), x.shape,
                                               stride=2**40, padding=1))
    np.testing.assert_allclose(dx, fastconv.conv_backward_input(dy, w, x.shape, stride=2**40,
                                                                padding=1),
                               rtol=1e-12, atol=1e-12)


def test_non_default_stream_and_determinism(cp) -> None:
    """Work is queued on CuPy's current stream; repeated runs (split-K included) are
    bit-identical."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((4, 32, 20, 20)).astype(np.float32)
    w = rng.standard_normal((48, 32, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((4, 48, 20, 20)).astype(np.float32)
    xg, wg, dyg = on_gpu(cp, x, w, dy)

    def run():
        return [back(cp, fastconv.conv(xg, wg, padding=1)),
                back(cp, fastconv.conv_backward_input(dyg, wg, x.shape, padding=1)),
                back(cp, fastconv.conv_backward_weight(xg, dyg, 3, padding=1))]

    first = run()
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        outs = [fastconv.conv(xg, wg, padding=1),
                fastconv.conv_backward_input(dyg, wg, x.shape, padding=1),
                fastconv.conv_backward_weight(xg, dyg, 3, padding=1)]
        stream.synchronize()
    for a, b in zip(first, outs):
        np.testing.assert_array_equal(a, back(cp, b))
    for _ in range(2):
        for a, b in zip(first, run()):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(first[0], fastconv.conv(x, w, padding=1), rtol=1e-4, atol=1e-4)


def test_errors(cp) -> None:
    from fastconv import _cuda

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 8, 8))
    w = rng.standard_normal((6, 4, 3, 3))
    xg, wg = cp.asarray(x), cp.asarray(w)
    with pytest.raises(TypeError, match="host memory"):
        fastconv.conv(xg, w)
    with pytest.raises(TypeError, match="host memory"):
        fastconv.conv_backward_weight(x, cp.zeros((2, 6, 6, 6)), 3)
    with pytest.raises(TypeError, match="float32 or float64"):
        fastconv.conv(xg.astype(cp.float16), wg.astype(cp.float16))
    with pytest.raises(TypeError, match="pass one dtype"):
        fastconv.conv(xg, wg.astype(cp.float32))
    with pytest.raises(ValueError, match="C/groups"):
        fastconv.conv(xg, wg[:, :3])
    with pytest.raises(ValueError, match="dy has shape"):
        fastconv.conv_backward_input(cp.zeros((2, 6, 5, 5)), wg, x.shape)

    # The module re-checks everything when called directly.
    def direct(*args):
        return _cuda.conv_forward(*args, [1, 1], [0, 0], [0, 0], [1, 1], 1,
                                  lambda n: cp.empty(n, cp.uint8), 0)
    with pytest.raises(ValueError, match="out has shape"):
        direct(xg, wg, None, cp.empty((2, 6, 5, 5)))
    with pytest.raises(ValueError, match="bias has shape"):
        direct(xg, wg, cp.zeros(5), cp.empty((2, 6, 6, 6)))
    with pytest.raises(TypeError, match="dtype float64"):
        direct(xg, wg.astype(cp.float32), None, cp.empty((2, 6, 6, 6)))
    with pytest.raises(TypeError, match="__cuda_array_interface__"):
        direct(x, wg, None, cp.empty((2, 6, 6, 6)))
    with pytest.raises(ValueError, match="C-contiguous"):
        direct(cp.asarray(rng.standard_normal((2, 8, 8, 4))).transpose(0, 3, 1, 2), wg, None,
               cp.empty((2, 6, 6, 6)))
    with pytest.raises(ValueError):
        _cuda._set_conv_path("fastest")
