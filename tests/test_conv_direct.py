"""The direct convolution kernels (cpp/conv_direct.cpp): layers with few channels per group,
which conv.cpp routes away from im2col + GEMM. Every shape here has at most 8 output channels
per group and C/groups * prod(kernel) <= 27, so it takes the direct path (as does its input
gradient, for unit strides and (K/groups) * prod(kernel) <= 160); results are checked against
the float64 NumPy reference and PyTorch, over 1-D/2-D/3-D (and 4-D) geometry, both dtypes,
vector tails, job splits and padding on every side."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

import fastconv
from fastconv import reference
from _cases import ConvCase, check_backward, check_forward, run_backward

DTYPES = [np.float32, np.float64]


def random_direct_case(seed: int) -> ConvCase:
    """A valid random geometry with at most 27 multiply-adds per output (C/groups *
    prod(kernel)), widths from 1 to 70 so that every vector tail length occurs."""
    rng = np.random.default_rng(1000 + seed)
    dims = 1 + seed % 3
    cg = int(rng.choice([1, 1, 1, 2, 3]))
    groups = int(rng.choice([1, 2, 3, 4]))
    multiplier = int(rng.integers(1, 4))
    max_kernel = {1: 9, 2: 3, 3: 3}[dims]
    while True:
        kernel = tuple(int(k) for k in rng.integers(1, max_kernel + 1, dims))
        if cg * int(np.prod(kernel)) <= 27:
            break
    dilation = tuple(int(d) for d in rng.integers(1, 4, dims))
    stride = tuple(int(s) for s in rng.integers(1, 4, dims))
    reach = [d * (k - 1) for k, d in zip(kernel, dilation)]
    form = seed % 4
    if form == 0:
        padding: object = tuple((int(rng.integers(0, r + 1)), int(rng.integers(0, r + 1)))
                                for r in reach)
    elif form == 1:
        padding = "same"
    elif form == 2:
        padding = tuple(int(rng.integers(0, r + 1)) for r in reach)
    else:
        padding = "valid"
    outer_max = {1: 0, 2: 12, 3: 6}[dims]
    spatial = tuple(int(rng.integers(r + 1, r + 2 + outer_max)) for r in reach[:-1])
    spatial += (int(rng.integers(reach[-1] + 1, reach[-1] + 71)),)
    return ConvCase(int(rng.integers(1, 4)), cg * groups, multiplier * groups, spatial, kernel,
                    stride, padding, dilation, groups, bool(rng.random() < 0.5))


CASES = [random_direct_case(seed) for seed in range(45)] + [
    # The two layers the direct path was built for.
    ConvCase(2, 16, 16, (28, 28), (3, 3), (1, 1), 1, (1, 1), 16, True),       # depthwise
    ConvCase(3, 1, 6, (32, 32), (5, 5), (1, 1), 0, (1, 1), 1, True),          # LeNet C1
    # Depthwise with a channel multiplier, stride 2 and "same" (extra pad at the end).
    ConvCase(2, 6, 12, (15, 14), (3, 3), (2, 2), "same", (1, 1), 6, False),
    # 1-D signals long enough to be cut into several jobs along their only dim.
    ConvCase(1, 2, 5, (300,), (7,), (1,), "same", (2,), 1, True),
    ConvCase(1, 1, 3, (1000,), (5,), (3,), ((4, 1),), (1,), 1, False),
    ConvCase(2, 3, 3, (777,), (9,), (1,), 4, (1,), 3, True),
    # 3-D depthwise, asymmetric padding; 3-D with the first dim's taps partly in padding.
    ConvCase(2, 4, 4, (5, 7, 9), (3, 3, 3), (1, 1, 1), ((1, 1), (0, 2), (2, 0)), (1, 1, 1), 4,
             True),
    ConvCase(1, 2, 4, (9, 6, 13), (3, 2, 3), (2, 1, 2), ((2, 2), (1, 0), (1, 1)), (2, 1, 1), 2,
             False),
    # Plane larger than one job's scratch: the rows are split across jobs.
    ConvCase(1, 1, 2, (700, 300), (3, 3), (1, 1), 1, (1, 1), 1, True),
    ConvCase(1, 3, 3, (333, 250), (3, 3), (2, 3), ((0, 2), (1, 1)), (1, 2), 3, False),
    # Width 1 and 2 outputs; kernel as large as the padded input.
    ConvCase(3, 2, 4, (6, 1), (3, 1), (1, 1), ((1, 1), (0, 0)), (1, 1), 2, True),
    ConvCase(2, 1, 2, (4, 5), (5, 5), (1, 1), ((1, 0), (0, 0)), (1, 1), 1, True),
    ConvCase(2, 3, 6, (2, 3), (1, 1), (1, 1), 0, (1, 1), 1, True),
]


def random_plane_case(seed: int) -> ConvCase:
    """A 2-D layer for the plane kernels (one input channel per output channel, square
    kernel of 1..7, unit strides and dilations): every kernel size, widths on both sides of
    the vector and two-vector chunk boundaries of each instruction set (4, 8, 16 lanes),
    heights from a single row up, every padding form."""
    rng = np.random.default_rng(2000 + seed)
    k = 1 + seed % 7
    form = seed // 7 % 4
    if form == 0:
        padding: object = tuple((int(rng.integers(0, k)), int(rng.integers(0, k)))
                                for _ in range(2))
        pads = [sum(p) for p in padding]
    elif form == 1:
        padding, pads = "same", [k - 1, k - 1]
    elif form == 2:
        pad = int(rng.integers(0, k))
        padding, pads = pad, [2 * pad, 2 * pad]
    else:
        padding, pads = "valid", [0, 0]
    widths = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 70]
    height = int(rng.integers(max(1, k - pads[0]), k + 12))
    width = max(int(rng.choice(widths)), k - pads[1])
    groups = int(rng.integers(1, 5))
    multiplier = int(rng.choice([1, 1, 2]))
    return ConvCase(int(rng.integers(1, 4)), groups, multiplier * groups, (height, width),
                    (k, k), (1, 1), padding, (1, 1), groups, bool(rng.random() < 0.5))


PLANE_CASES = [random_plane_case(seed) for seed in range(56)] + [
    # The depthwise layer of issue 5, and a plane taller and wider than one chunk.
    ConvCase(2, 256, 256, (28, 28), (3, 3), (1, 1), 1, (1, 1), 256, True),
    ConvCase(1, 2, 2, (131, 97), (5, 5), (1, 1), "same", (1, 1), 2, False),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", PLANE_CASES, ids=str)
def test_plane_forward_matches_reference_and_torch(case: ConvCase, dtype) -> None:
    check_forward(case, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", PLANE_CASES, ids=str)
def test_plane_backward_matches_reference_and_torch(case: ConvCase, dtype) -> None:
    """conv_backward_input of a depthwise layer is itself a plane convolution (flipped
    kernel); conv_backward_weight correlates each input plane with its dy plane."""
    x, w, dy, dx, dw, _ = run_backward(case, dtype,
                                       input_seed=zlib.crc32(str(case).encode()) + 1,
                                       dy_seed=33)
    check_backward(case, x, w, dy, dx, dw)


@pytest.mark.parametrize("disabled", ["AVX512F", "AVX512F,AVX2"])
def test_plane_kernels_on_the_lower_cpu_paths(disabled: str) -> None:
    """The plane kernels use masked loads on AVX2 and lane-by-lane borders on the baseline:
    rerun their tests with those paths forced."""
    env = dict(os.environ, FASTCONV_DISABLE_CPU_FEATURES=disabled,
               PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           __file__, "-k", "plane and (forward or backward)"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_direct_forward_matches_reference_and_torch(case: ConvCase, dtype) -> None:
    check_forward(case, dtype)


def test_four_spatial_dims() -> None:
    """Dims before the last two keep only real input rows and drop their padded taps."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 4, 3, 5, 19))
    w = rng.standard_normal((8, 1, 2, 1, 3, 3))
    b = rng.standard_normal(8)
    y = fastconv.conv(x, w, b, stride=(1, 2, 1, 2), padding=((1, 2), (0, 0), (1, 1), (2, 0)),
                      dilation=(2, 1, 1, 1), groups=4)
    exact = reference.conv(x, w, b, (1, 2, 1, 2), (1, 0, 1, 2), (2, 0, 1, 0), (2, 1, 1, 1), 4)
    np.testing.assert_allclose(y, exact, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_direct_results_are_identical_run_to_run(dtype) -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 32, 23, 41)).astype(dtype)
    w = rng.standard_normal((64, 1, 3, 3)).astype(dtype)
    b = rng.standard_normal(64).astype(dtype)
    first = fastconv.conv(x, w, b, padding=1, groups=32)
    for _ in range(3):
        np.testing.assert_array_equal(fastconv.conv(x, w, b, padding=1, groups=32), first)


@pytest.mark.parametrize("kernel", [(3, 5), (3, 3)])  # general and plane kernels
def test_direct_result_does_not_depend_on_thread_count(tmp_path, kernel) -> None:
    """Every output is summed in one fixed order, whichever job (and thread) computes it."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 2, 57, 301)).astype(np.float32)
    w = rng.standard_normal((6, 1) + kernel).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", w)
    script = ("import sys, numpy as np, fastconv; d = sys.argv[1]; "
              "np.save(d + '/y.npy', fastconv.conv(np.load(d + '/x.npy'), "
              "np.load(d + '/w.npy'), padding=(1, 2), groups=2))")
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, env=env)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"),
                                  fastconv.conv(x, w, padding=(1, 2), groups=2))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES[::2], ids=str)
def test_direct_backward_matches_reference_and_torch(case: ConvCase, dtype) -> None:
    """With unit strides conv_backward_input runs the direct kernels on dy (the swapped
    problem has K/groups input channels per group and C/groups outputs)."""
    x, w, dy, dx, dw, kwargs = run_backward(case, dtype, input_seed=31, dy_seed=32)
    np.testing.assert_array_equal(fastconv.conv_backward_input(dy, w, x.shape, **kwargs), dx)
    np.testing.assert_array_equal(fastconv.conv_backward_weight(x, dy, case.kernel, **kwargs),
                                  dw)

    check_backward(case, x, w, dy, dx, dw)


def test_padding_far_beyond_the_input_stays_correct() -> None:
    """A dilation of 2**40 pads ~2**40 cells; no path may materialize them."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 2, 5))
    w = rng.standard_normal((2, 1, 2))
    b = rng.standard_normal(2)
    # "same" puts 2**39 cells on each side: both taps of every window read padding.
    y = fastconv.conv(x, w, b, padding="same", dilation=2**40, groups=2)
    np.testing.assert_array_equal(y, np.broadcast_to(b[None, :, None], (1, 2, 5)))
    # All the padding after: the first tap reads the input, the second the padding.
    y = fastconv.conv(x, w, padding=((0, 2**40),), dilation=2**40, groups=2)
    np.testing.assert_allclose(y, x * w[None, :, 0, :1], rtol=1e-15, atol=0)
