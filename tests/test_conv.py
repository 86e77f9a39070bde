"""conv, conv_backward_input and conv_backward_weight against the NumPy reference and
PyTorch, over randomized 1-D/2-D/3-D geometry, both dtypes, plus boundary cases and
finite-difference gradients.

On the GPU (tests marked `cuda`): every case of CASES runs through every CUDA kernel path
(the auto choice, the 64x64, 64x128 and 128x128 implicit GEMM tiles, the direct kernels)
and is checked against the float64 NumPy reference with the summation-rounding bound the CPU
tests use, and against fastconv's CPU result; PyTorch CUDA (TF32 off) is a third opinion.
Extra cases hit the GEMM tiles' tails, groups, depthwise, 1x1, 4-D and 8-D, a ResNet-50
3x3 layer, non-default streams, determinism and argument errors.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastconv
from fastconv import reference
from fastconv._geometry import make_window
from _cases import (CONV_CASES as CASES, ConvCase, assert_within_rounding, call_conv,
                    check_backward, check_forward, conv_geometry as geometry, make_inputs,
                    random_array, reduction_terms, reference_conv, run_backward, torch_conv,
                    torch_cuda, torch_pad_arg)

DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_conv_forward(case: ConvCase, dtype) -> None:
    check_forward(case, dtype)


@pytest.mark.parametrize("case", CASES[:20], ids=str)
def test_conv_flip_is_textbook_convolution(case: ConvCase) -> None:
    x, w, b = make_inputs(case, np.float64, seed=7)
    flipped = np.flip(w, axis=tuple(range(2, w.ndim)))
    np.testing.assert_allclose(call_conv(case, x, w, b, flip=True),
                               call_conv(case, x, np.ascontiguousarray(flipped), b),
                               rtol=0, atol=0)
    if case.groups == 1 and len(case.spatial) == 1 and case.stride == (1,) and \
            case.dilation == (1,) and case.padding == "valid":
        # Independent check: numpy.convolve is the textbook (flipped) convolution.
        expected = np.stack([np.stack([
            sum(np.convolve(x[n, c], w[k, c], mode="valid") for c in range(case.channels))
            for k in range(case.out_channels)]) for n in range(case.batch)])
        if b is not None:
            expected = expected + b[None, :, None]
        np.testing.assert_allclose(call_conv(case, x, w, b, flip=True), expected, rtol=1e-12,
                                   atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_conv_backward(case: ConvCase, dtype) -> None:
    x, w, dy, dx, dw, _ = run_backward(case, dtype, input_seed=11, dy_seed=12)
    check_backward(case, x, w, dy, dx, dw)


@pytest.mark.parametrize("case", CASES[::3], ids=str)
def test_conv_gradients_by_finite_differences(case: ConvCase) -> None:
    """<dy, d conv/dx . v> by central differences equals <dx, v> (and likewise for w)."""
    x, w, b = make_inputs(case, np.float64, seed=21)
    rng = np.random.default_rng(22)
    y = call_conv(case, x, w, b)
    dy = rng.standard_normal(y.shape)
    vx, vw = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    h = 1e-3
    kwargs = dict(stride=case.stride, padding=case.padding, dilation=case.dilation,
                  groups=case.groups)

    def loss(xv, wv):
        return float(np.sum(dy * call_conv(case, xv, wv, b)))

    fd_x = (loss(x + h * vx, w) - loss(x - h * vx, w)) / (2 * h)
    fd_w = (loss(x, w + h * vw) - loss(x, w - h * vw)) / (2 * h)
    dx = fastconv.conv_backward_input(dy, w, x.shape, **kwargs)
    dw = fastconv.conv_backward_weight(x, dy, case.kernel, **kwargs)
    assert np.isclose(np.sum(dx * vx), fd_x, rtol=1e-7, atol=1e-8)
    assert np.isclose(np.sum(dw * vw), fd_w, rtol=1e-7, atol=1e-8)


# ---- boundary cases ---------------------------------------------------------------------

def check_against_reference(x, w, b, **kwargs) -> np.ndarray:
    y = fastconv.conv(x, w, b, **kwargs)
    win = make_window("conv", x.shape[2:], w.shape[2:], kwargs.get("stride", 1),
                      kwargs.get("padding", 0), kwargs.get("dilation", 1))
    exact = reference.conv(x, w, b, win.stride, win.pad_before, win.pad_after, win.dilation,
                           kwargs.get("groups", 1))
    np.testing.assert_allclose(y, exact, rtol=1e-12, atol=1e-12)
    return y


def test_windows_made_only_of_padding_give_the_bias() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 1, 6))
    w = rng.standard_normal((5, 3, 2, 3))
    b = rng.standard_normal(5)
    # Along dim 0 the two taps of every window sit at -1 and 2: both in the padding.
    y = check_against_reference(x, w, b, padding=((1, 2), (1, 1)), dilation=(3, 1))
    assert y.shape == (2, 5, 1, 6)
    np.testing.assert_array_equal(y, np.broadcast_to(b[None, :, None, None], y.shape))


def test_kernel_equal_to_padded_input_gives_one_output() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 2, 5, 3))
    w = rng.standard_normal((4, 2, 7, 5))
    y = check_against_reference(x, w, None, padding=1)
    assert y.shape == (2, 4, 1, 1)


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_pointwise_kernels(dims: int, stride: int) -> None:
    rng = np.random.default_rng(3 + dims)
    x = rng.standard_normal((3, 6) + (5,) * dims)
    w = rng.standard_normal((4, 6) + (1,) * dims)
    y = check_against_reference(x, w, rng.standard_normal(4), stride=stride)
    assert y.shape[2:] == (-(-5 // stride),) * dims


def test_stride_larger_than_kernel() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 17, 13))
    w = rng.standard_normal((2, 3, 2, 3))
    check_against_reference(x, w, None, stride=(5, 4), padding=1)


def test_stride_of_2_pow_40_gives_one_window_per_dim() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 9, 7))
    w = rng.standard_normal((3, 2, 3, 3))
    y = check_against_reference(x, w, None, stride=2**40, padding=1)
    assert y.shape == (1, 3, 1, 1)


def test_four_spatial_dims_against_reference() -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 4, 5, 4, 6, 3))
    w = rng.standard_normal((6, 2, 2, 3, 2, 2))
    check_against_reference(x, w, rng.standard_normal(6), stride=(1, 2, 1, 2),
                            padding=((1, 0), (0, 2), (1, 1), (0, 1)), dilation=(2, 1, 1, 1),
                            groups=2)


def test_same_padding_keeps_ceil_of_size_over_stride() -> None:
    rng = np.random.default_rng(7)
    for size, k, s, d in [(10, 3, 1, 1), (11, 4, 2, 1), (9, 3, 3, 2), (8, 2, 1, 3)]:
        x = rng.standard_normal((1, 1, size))
        w = rng.standard_normal((1, 1, k))
        y = check_against_reference(x, w, None, stride=s, padding="same", dilation=d)
        assert y.shape[-1] == -(-size // s)


def test_large_image_is_tiled_in_bounded_memory() -> None:
    """A conv whose full column matrix would be ~150 MB still matches torch."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 16, 384, 384)).astype(np.float32)
    w = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    y = fastconv.conv(x, w, padding=1)
    expected = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                        padding=1).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_non_contiguous_inputs() -> None:
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 10, 3, 14))[:, ::2].transpose(0, 1, 3, 2)
    w = rng.standard_normal((4, 3, 5, 10)).transpose(0, 2, 1, 3)[..., ::2]
    assert not x.flags.c_contiguous and not w.flags.c_contiguous
    check_against_reference(x, w, None, padding=1)


def test_results_are_identical_run_to_run() -> None:
    rng = np.random.default_rng(10)
    x = rng.standard_normal((4, 32, 20, 20)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((4, 32, 20, 20)).astype(np.float32)
    first = [fastconv.conv(x, w, padding=1),
             fastconv.conv_backward_input(dy, w, x.shape, padding=1),
             fastconv.conv_backward_weight(x, dy, 3, padding=1)]
    for _ in range(3):
        again = [fastconv.conv(x, w, padding=1),
                 fastconv.conv_backward_input(dy, w, x.shape, padding=1),
                 fastconv.conv_backward_weight(x, dy, 3, padding=1)]
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)


# ---- GEMM paths at layer-like sizes -----------------------------------------------------
# The random cases above are small; these reach the paths that only larger layers take:
# depth blocks (C*prod(kernel) > 256), row counts and widths that leave every tail of the
# register tile (rows not a multiple of 6 or 8; 1, 2 or 3 vectors of columns), column
# chunks, output-channel splits at batch 1, batch chunks of the weight gradient, strided
# layers (stride phases; im2col into panels when a stride exceeds the kernel reach) and
# pointwise ones (GEMM straight on the input).

MEDIUM_CASES = [
    ConvCase(1, 40, 70, (13, 11), (3, 3), (1, 1), 1, (1, 1), 1, True),
    ConvCase(2, 24, 9, (29, 31), (3, 3), (1, 1), "same", (2, 1), 1, False),
    ConvCase(1, 64, 96, (6, 7), (3, 3), (1, 1), 1, (1, 1), 1, True),
    ConvCase(3, 12, 17, (40, 23), (5, 5), (1, 1), 2, (1, 1), 1, True),
    ConvCase(1, 3, 33, (61, 45), (7, 7), (2, 2), 3, (1, 1), 1, True),
    ConvCase(2, 48, 50, (23,), (7,), (1,), 3, (1,), 2, True),
    ConvCase(1, 30, 7, (300,), (5,), (1,), ((4, 0),), (1,), 1, False),
    ConvCase(2, 6, 13, (9, 10, 11), (3, 3, 3), (1, 1, 1), 1, (1, 1, 1), 1, True),
    ConvCase(4, 20, 36, (17, 19), (1, 1), (1, 1), 0, (1, 1), 1, True),
    ConvCase(1, 20, 36, (17, 19), (1, 1), (2, 1), 0, (1, 1), 1, False),
    ConvCase(2, 18, 12, (15, 15), (3, 3), (3, 2), 1, (1, 1), 3, True),
    ConvCase(1, 8, 20, (21, 18), (3, 3), (2, 2), 2, (2, 2), 1, False),
    ConvCase(2, 5, 10, (11, 12, 9), (3, 2, 3), (2, 3, 1), 1, (2, 1, 1), 1, True),
    # Weight gradient: many small images per dot-product pass (a position tail in each),
    # grouped dot products, and the packed GEMM above 64 output channels per group.
    ConvCase(9, 12, 20, (5, 6), (3, 3), (1, 1), 1, (1, 1), 1, True),
    ConvCase(5, 16, 40, (7, 9), (3, 3), (1, 1), 1, (1, 1), 2, False),
    ConvCase(3, 10, 136, (9, 8), (3, 3), (1, 1), 1, (1, 1), 1, True),
    # Weights of 2 MiB and more are read in place by the forward GEMM (and by the input
    # gradient, a forward over transposed weights) instead of being packed: every forward
    # path with such weights, output-channel counts that leave row tails, and groups.
    ConvCase(1, 520, 130, (6, 7), (3, 3), (1, 1), 1, (1, 1), 1, True),  # shifted windows
    ConvCase(2, 1040, 262, (5, 5), (3, 3), (1, 1), 1, (1, 1), 2, False),  # grouped
    ConvCase(1, 4100, 130, (5, 4), (1, 1), (1, 1), 0, (1, 1), 1, True),  # pointwise
    ConvCase(9, 600, 100, (3, 3), (3, 3), (1, 1), 0, (1, 1), 1, True),  # folded images
    ConvCase(1, 700, 203, (9, 9), (2, 2), (3, 3), 0, (1, 1), 1, False),  # im2col panels
    # Weights over 2 MiB and more images than threads: each thread takes a block of output
    # channels for every image (ResNet's 256ch 7x7), with a row tail.
    ConvCase(4, 260, 250, (7, 8), (3, 3), (1, 1), 1, (1, 1), 1, True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MEDIUM_CASES, ids=str)
def test_layer_sized_forward(case: ConvCase, dtype) -> None:
    test_conv_forward(case, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MEDIUM_CASES, ids=str)
def test_layer_sized_backward(case: ConvCase, dtype) -> None:
    test_conv_backward(case, dtype)


def test_workspace_reuse_across_shapes_and_threads() -> None:
    """Per-thread workspaces are reused between calls of different shapes and from several
    Python threads at once; every result must equal the one computed alone."""
    import threading

    rng = np.random.default_rng(13)
    problems = []
    for c, k, size, kern in [(32, 40, 30, 3), (8, 16, 9, 5), (64, 24, 12, 3), (5, 9, 41, 1)]:
        x = rng.standard_normal((2, c, size, size)).astype(np.float32)
        w = rng.standard_normal((k, c, kern, kern)).astype(np.float32)
        problems.append((x, w, kern // 2))
    alone = [fastconv.conv(x, w, padding=p) for x, w, p in problems]
    for (x, w, p), y in zip(problems[::-1], alone[::-1]):
        np.testing.assert_array_equal(fastconv.conv(x, w, padding=p), y)
    results: dict = {}

    def work(index: int) -> None:
        x, w, p = problems[index % len(problems)]
        results[index] = [fastconv.conv(x, w, padding=p) for _ in range(3)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for index, ys in results.items():
        for y in ys:
            np.testing.assert_array_equal(y, alone[index % len(problems)])


def outputs_at_thread_counts(script: str, counts: tuple) -> list:
    """What `script` writes to stdout, run in a fresh interpreter at each OMP_NUM_THREADS."""
    import os
    import subprocess
    import sys

    return [subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                           env=dict(os.environ, OMP_NUM_THREADS=threads)).stdout
            for threads in counts]


def test_forward_does_not_depend_on_the_thread_count() -> None:
    """Each output element is summed by one job in one order, whatever the job split."""
    script = (
        "import numpy as np, fastconv, sys\n"
        "rng = np.random.default_rng(14)\n"
        "x = rng.standard_normal((1, 64, 14, 14)).astype(np.float32)\n"
        "w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)\n"
        "sys.stdout.buffer.write(fastconv.conv(x, w, padding=1).tobytes())\n"
        # Output channels split across threads for every image (weights over 2 MiB).
        "x = rng.standard_normal((4, 256, 7, 7)).astype(np.float32)\n"
        "w = rng.standard_normal((256, 256, 3, 3)).astype(np.float32)\n"
        "sys.stdout.buffer.write(fastconv.conv(x, w, padding=1).tobytes())\n")
    outputs = outputs_at_thread_counts(script, ("1", "2", "3"))
    assert len(outputs[0]) == (64 * 14 * 14 + 4 * 256 * 7 * 7) * 4
    assert outputs[0] == outputs[1] == outputs[2]


# ----------------------------------------------------------------------------------------
# Small layers with a batch (few output positions per image): the images share GEMMs
# whose columns are gathered through an offset table. More images than threads, and more
# than 8 output channels per group so that one image alone takes a GEMM path too.
# ----------------------------------------------------------------------------------------

FOLDED_CASES = [
    ConvCase(9, 16, 120, (5, 5), (5, 5), (1, 1), 0, (1, 1), 1, True),  # LeNet C5
    ConvCase(9, 4, 10, (6, 6), (3, 3), (2, 2), 1, (1, 1), 1, True),
    ConvCase(9, 3, 12, (7, 5), (2, 3), (1, 1), ((1, 0), (0, 2)), (2, 1), 1, False),
    ConvCase(9, 6, 27, (4, 4), (3, 3), (1, 1), 0, (1, 1), 3, True),
    ConvCase(9, 5, 11, (12,), (3,), (3,), "same", (1,), 1, True),
    ConvCase(9, 2, 10, (4, 4, 4), (2, 2, 2), (2, 2, 2), 0, (1, 1, 1), 1, True),
    ConvCase(9, 3, 10, (20, 20), (2, 2), (3, 3), 0, (1, 1), 1, True),  # 49 positions
    ConvCase(9, 3, 9, (3, 3), (5, 5), (1, 1), 2, (1, 1), 1, False),  # windows mostly padding
    # Deep columns: the gradients take their images a few at a time.
    ConvCase(17, 300, 20, (5, 5), (3, 3), (1, 1), 1, (1, 1), 1, True),
    # Weights over 2 MiB: the output channels are split across threads (ResNet's 4x4).
    ConvCase(9, 256, 256, (4, 4), (3, 3), (1, 1), 1, (1, 1), 1, True),
    ConvCase(9, 512, 512, (4, 4), (3, 3), (1, 1), 1, (1, 1), 2, False),
    # More columns than one pass of shared panels holds.
    ConvCase(130, 128, 40, (4, 4), (3, 3), (1, 1), 1, (1, 1), 1, True),
    # Strided, 7x7 and 7x6 outputs: the forward keeps shifted windows, the input gradient
    # folds.
    ConvCase(9, 24, 40, (14, 14), (3, 3), (2, 2), 1, (1, 1), 1, True),
    ConvCase(5, 12, 20, (14, 12), (3, 3), (2, 2), ((1, 0), (1, 1)), (1, 1), 2, False),
]


def batched_forward(case: ConvCase, dtype) -> tuple:
    """(x, w, b, y) for the case, y checked against the float64 reference and torch."""
    x, w, b = make_inputs(case, dtype, seed=zlib.crc32(str(case).encode()))
    y = call_conv(case, x, w, b)
    exact, magnitude = reference_conv(case, x, w, b)
    assert_within_rounding(y, exact, magnitude, reduction_terms(case), np.dtype(dtype))
    np.testing.assert_allclose(y, torch_conv(case, x, w, b), rtol=1e-4 if dtype == np.float32
                               else 1e-10, atol=1e-4 if dtype == np.float32 else 1e-10)
    return x, w, b, y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", FOLDED_CASES, ids=str)
def test_folded_small_layers(case: ConvCase, dtype) -> None:
    x, w, b, y = batched_forward(case, dtype)
    # The same micro-kernel sums each output in the same order either way, so the shared
    # GEMMs give exactly what each image gives alone.
    alone = np.concatenate([call_conv(case, x[i:i + 1], w, b) for i in range(case.batch)])
    np.testing.assert_array_equal(y, alone)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", FOLDED_CASES, ids=str)
def test_folded_small_layers_backward(case: ConvCase, dtype) -> None:
    # Both gradients fold images exactly where the forward does.
    test_conv_backward(case, dtype)


# ----------------------------------------------------------------------------------------
# Paths whose register tiles run across the images of the batch. Gathered windows: the
# GEMM broadcasts window values straight from the padded images (the forward at small maps
# with enough positions in the batch, the weight gradient from 256 (channel, tap) rows, 128
# when strided). Output channel counts leave lane tails (33, 40, 50, 72), strides, dilation,
# asymmetric padding, groups, 1-D and 3-D, and a batch larger than one pass of padded images.
# ----------------------------------------------------------------------------------------

GATHERED_CASES = [
    ConvCase(16, 64, 72, (7, 7), (3, 3), (1, 1), 1, (1, 1), 1, True),
    ConvCase(12, 40, 50, (14, 13), (3, 3), (2, 2), 1, (1, 1), 1, False),
    ConvCase(10, 64, 96, (8, 8), (3, 3), (1, 1), 1, (1, 1), 2, True),
    ConvCase(9, 30, 33, (11, 9), (3, 3), (1, 1), ((2, 1), (0, 2)), (2, 1), 1, True),
    ConvCase(20, 64, 40, (30,), (5,), (1,), 2, (1,), 1, True),
    ConvCase(6, 16, 36, (6, 6, 6), (3, 3, 3), (1, 1, 1), 1, (1, 1, 1), 1, True),
    ConvCase(34, 512, 32, (14, 14), (3, 3), (1, 1), 1, (1, 1), 1, True),  # two passes
    # A ResNet stem: 147 (channel, tap) rows, stride 2 (the weight gradient gathers).
    ConvCase(4, 3, 40, (30, 29), (7, 7), (2, 2), 3, (1, 1), 1, True),
    # From 512 output positions the weight gradient gathers an image at a time and adds the
    # images' partial sums in order: a stem-like layer (992 positions) and a 3x3 one (552).
    ConvCase(6, 3, 40, (64, 62), (7, 7), (2, 2), 3, (1, 1), 1, True),
    ConvCase(5, 32, 40, (24, 23), (3, 3), (1, 1), 1, (1, 1), 1, False),
]

# Batch lanes: the forward (and the stride-1 input gradient, a forward) with the images in
# the vector lanes, under 32 positions per image and a batch of whole vectors (16 float32
# or 8 float64 lanes with AVX-512; 130 images fill 144 lanes). Register tiles within one
# row of outputs skip the taps that row reads only as padding (4x4 and 3x3x3 maps); 5x5 maps
# put tiles across rows, which sum every tap. Either way the bits equal the other paths'.
LANE_CASES = [
    ConvCase(32, 64, 40, (4, 4), (3, 3), (1, 1), 1, (1, 1), 1, True),
    ConvCase(16, 64, 64, (4, 4), (3, 3), (1, 1), 1, (1, 1), 2, True),
    ConvCase(16, 32, 48, (8,), (5,), (1,), 2, (1,), 1, True),
    ConvCase(16, 8, 40, (3, 3, 3), (3, 3, 3), (1, 1, 1), 1, (1, 1, 1), 1, False),
    ConvCase(32, 32, 33, (5, 5), (3, 3), (1, 1), 2, (2, 2), 1, True),
    ConvCase(130, 128, 40, (4, 4), (3, 3), (1, 1), 1, (1, 1), 1, True),
    ConvCase(96, 1024, 32, (4, 4), (3, 3), (1, 1), 1, (1, 1), 1, True),  # several passes
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GATHERED_CASES + LANE_CASES, ids=str)
def test_paths_across_the_batch(case: ConvCase, dtype) -> None:
    x, w, b, y = batched_forward(case, dtype)
    # Every forward path sums the depth in the same blocks and order, so an image gives the
    # same bits in the gathered batch, alone (another path) and in a smaller batch.
    alone = np.concatenate([call_conv(case, x[i:i + 1], w, b) for i in range(2)])
    np.testing.assert_array_equal(y[:2], alone)
    half = case.batch // 2
    np.testing.assert_array_equal(y[half:], call_conv(case, x[half:], w, b))
    test_conv_backward(case, dtype)


def test_gathered_weight_gradient_does_not_depend_on_the_thread_count() -> None:
    """Each element of dW is summed by one job over the images in order, whatever the split."""
    script = (
        "import numpy as np, fastconv, sys\n"
        "rng = np.random.default_rng(15)\n"
        "x = rng.standard_normal((8, 64, 9, 9)).astype(np.float32)\n"
        "dy = rng.standard_normal((8, 72, 9, 9)).astype(np.float32)\n"
        "sys.stdout.buffer.write(fastconv.conv_backward_weight(x, dy, (3, 3), padding=1)"
        ".tobytes())\n"
        # 576 positions per image: one image at a time, the partials added in image order.
        "x = rng.standard_normal((8, 32, 24, 24)).astype(np.float32)\n"
        "dy = rng.standard_normal((8, 40, 24, 24)).astype(np.float32)\n"
        "sys.stdout.buffer.write(fastconv.conv_backward_weight(x, dy, (3, 3), padding=1)"
        ".tobytes())\n")
    outputs = outputs_at_thread_counts(script, ("1", "2", "3"))
    assert len(outputs[0]) == (72 * 64 + 40 * 32) * 9 * 4
    assert outputs[0] == outputs[1] == outputs[2]


# ----------------------------------------------------------------------------------------
# The CUDA kernels
# ----------------------------------------------------------------------------------------

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


def cuda_check_forward(cp, case: ConvCase, dtype) -> np.ndarray:
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


def cuda_check_backward(cp, case: ConvCase, dtype):
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


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES + WIDE_CASES, ids=str)
def test_cuda_forward_matches_reference_and_cpu(cp, path, case: ConvCase, dtype) -> None:
    cuda_check_forward(cp, case, dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES + WIDE_CASES, ids=str)
def test_cuda_backward_matches_reference_and_cpu(cp, path, case: ConvCase, dtype) -> None:
    cuda_check_backward(cp, case, dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("case", CASES[::7] + WIDE_CASES, ids=str)
def test_cuda_paths_agree(cp, case: ConvCase) -> None:
    """Forward and input gradient are one FMA chain in reduction order in every kernel
    family, so the GEMMs and the direct kernels agree bit for bit; the weight gradient's
    split-K / tree orders differ, so it only agrees within rounding (checked above)."""
    from fastconv import _cuda

    results = {}
    try:
        for name in PATHS:
            _cuda._set_conv_path(name)
            y = cuda_check_forward(cp, case, np.float32)
            dx, _ = cuda_check_backward(cp, case, np.float32)
            results[name] = (y, dx)
    finally:
        _cuda._set_conv_path("auto")
    for name in PATHS[1:]:
        np.testing.assert_array_equal(results[name][0], results["auto"][0], err_msg=name)
        np.testing.assert_array_equal(results[name][1], results["auto"][1], err_msg=name)


@pytest.mark.cuda
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


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,forced", [(np.float32, "auto"), (np.float32, "gemm_wide"),
                                          (np.float32, "gemm_large"), (np.float64, "auto")])
def test_cuda_resnet_3x3_layer(cp, dtype, forced) -> None:
    """ResNet-50 stage-1 3x3 conv (64 -> 64 channels, 56x56, batch 2) through the float32
    tile shapes. The GPU's worst error against float64 stays within a few times the CPU
    kernel's (and PyTorch CUDA's)."""
    from fastconv import _cuda

    case = ConvCase(2, 64, 64, (56, 56), (3, 3), (1, 1), 1, (1, 1), 1, True)
    previous = _cuda._set_conv_path(forced)
    try:
        y = cuda_check_forward(cp, case, dtype)
        cuda_check_backward(cp, case, dtype)
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


@pytest.mark.cuda
def test_cuda_four_and_eight_spatial_dims(cp) -> None:
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


@pytest.mark.cuda
def test_cuda_nine_spatial_dims_rejected(cp) -> None:
    x = cp.zeros((1, 1) + (2,) * 9)
    w = cp.zeros((1, 1) + (1,) * 9)
    with pytest.raises(ValueError, match="at most 8 spatial dims"):
        fastconv.conv(x, w)


@pytest.mark.cuda
def test_cuda_huge_stride_gives_one_window(cp) -> None:
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


@pytest.mark.cuda
def test_cuda_non_default_stream_and_determinism(cp) -> None:
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


@pytest.mark.cuda
def test_cuda_errors(cp) -> None:
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
