"""conv, conv_backward_input and conv_backward_weight against the NumPy reference and
PyTorch, over randomized 1-D/2-D/3-D geometry, both dtypes, plus boundary cases and
finite-difference gradients."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastconv
from fastconv import reference
from fastconv._geometry import make_window
from _helpers import assert_within_rounding, random_array, torch_pad_arg

DTYPES = [np.float32, np.float64]


@dataclass(frozen=True)
class ConvCase:
    batch: int
    channels: int
    out_channels: int
    spatial: Tuple[int, ...]
    kernel: Tuple[int, ...]
    stride: Tuple[int, ...]
    padding: object
    dilation: Tuple[int, ...]
    groups: int
    bias: bool

    def __str__(self) -> str:
        return (f"n{self.batch}c{self.channels}k{self.out_channels}s{self.spatial}"
                f"f{self.kernel}st{self.stride}p{self.padding}d{self.dilation}g{self.groups}"
                f"{'b' if self.bias else ''}").replace(" ", "")


def random_case(seed: int) -> ConvCase:
    """A valid random geometry: 1-3 spatial dims, strides 1-3, every padding form."""
    rng = np.random.default_rng(seed)
    dims = 1 + seed % 3
    groups = int(rng.choice([1, 1, 2, 3]))
    depthwise = rng.random() < 0.15
    cg = 1 if depthwise else int(rng.integers(1, 4))
    kg = int(rng.integers(1, 4))
    max_size = {1: 20, 2: 11, 3: 6}[dims]
    kernel = tuple(int(k) for k in rng.integers(1, 4, dims))
    dilation = tuple(int(d) for d in rng.integers(1, 3, dims))
    stride = tuple(int(s) for s in rng.integers(1, 4, dims))
    reach = [d * (k - 1) for k, d in zip(kernel, dilation)]
    form = seed % 5
    if form == 0:
        padding: object = int(rng.integers(0, min(reach) + 1))
    elif form == 1:
        padding = tuple(int(rng.integers(0, r + 1)) for r in reach)
    elif form == 2:
        padding = tuple((int(rng.integers(0, r + 1)), int(rng.integers(0, r + 1)))
                        for r in reach)
    elif form == 3:
        padding = "same"
    else:
        padding = "valid"
    spatial = tuple(int(rng.integers(r + 1, max(r + 2, max_size))) for r in reach)
    return ConvCase(int(rng.integers(1, 4)), cg * groups, kg * groups, spatial, kernel, stride,
                    padding, dilation, groups, bool(rng.random() < 0.6))


CASES = [random_case(seed) for seed in range(60)]


def geometry(case: ConvCase):
    return make_window("conv", case.spatial, case.kernel, case.stride, case.padding,
                       case.dilation)


def make_inputs(case: ConvCase, dtype, seed: int):
    rng = np.random.default_rng(seed)
    x = random_array(rng, (case.batch, case.channels) + case.spatial, dtype)
    w = random_array(rng, (case.out_channels, case.channels // case.groups) + case.kernel, dtype)
    b = random_array(rng, (case.out_channels,), dtype) if case.bias else None
    return x, w, b


def call_conv(case: ConvCase, x, w, b, **extra):
    return fastconv.conv(x, w, b, stride=case.stride, padding=case.padding,
                         dilation=case.dilation, groups=case.groups, **extra)


def reference_conv(case: ConvCase, x, w, b):
    """Exact (float64) result and the magnitude sum(|x||w|) behind each output element."""
    win = geometry(case)
    args = (win.stride, win.pad_before, win.pad_after, win.dilation, case.groups)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    b64 = None if b is None else b.astype(np.float64)
    exact = reference.conv(x64, w64, b64, *args)
    magnitude = reference.conv(np.abs(x64), np.abs(w64),
                               None if b is None else np.abs(b64), *args)
    return exact, magnitude


def reduction_terms(case: ConvCase) -> int:
    return (case.channels // case.groups) * int(np.prod(case.kernel)) + 1


def torch_conv(case: ConvCase, x, w, b):
    win = geometry(case)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(case.spatial)]
    xt = F.pad(torch.from_numpy(x), torch_pad_arg(win.pad_before, win.pad_after))
    return fn(xt, torch.from_numpy(w), None if b is None else torch.from_numpy(b),
              stride=win.stride, dilation=win.dilation, groups=case.groups).numpy()


def check_forward(case: ConvCase, dtype) -> None:
    """fastconv.conv and torch both within the rounding bound of the float64 reference, on
    inputs seeded by the case."""
    x, w, b = make_inputs(case, dtype, seed=zlib.crc32(str(case).encode()))
    y = call_conv(case, x, w, b)
    exact, magnitude = reference_conv(case, x, w, b)
    assert_within_rounding(y, exact, magnitude, reduction_terms(case), np.dtype(dtype))
    assert_within_rounding(torch_conv(case, x, w, b).astype(dtype), exact, magnitude,
                           reduction_terms(case), np.dtype(dtype))


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


def torch_grads(case: ConvCase, x, w, dy):
    win = geometry(case)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(case.spatial)]
    xt = torch.from_numpy(x).requires_grad_(True)
    wt = torch.from_numpy(w).requires_grad_(True)
    yt = fn(F.pad(xt, torch_pad_arg(win.pad_before, win.pad_after)), wt, stride=win.stride,
            dilation=win.dilation, groups=case.groups)
    yt.backward(torch.from_numpy(dy))
    return xt.grad.numpy(), wt.grad.numpy()


def check_backward(case: ConvCase, x: np.ndarray, w: np.ndarray, dy: np.ndarray,
                   dx: np.ndarray, dw: np.ndarray) -> None:
    """dx and dw within the rounding bound of the float64 reference, as are torch's."""
    win = geometry(case)
    dtype = np.dtype(x.dtype)
    args = (win.stride, win.pad_before, win.pad_after, win.dilation, case.groups)
    x64, w64, dy64 = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)
    dx_exact = reference.conv_backward_input(dy64, w64, x.shape, *args)
    dx_mag = reference.conv_backward_input(np.abs(dy64), np.abs(w64), x.shape, *args)
    dw_exact = reference.conv_backward_weight(x64, dy64, case.kernel, *args)
    dw_mag = reference.conv_backward_weight(np.abs(x64), np.abs(dy64), case.kernel, *args)
    terms_dx = case.out_channels // case.groups * int(np.prod(case.kernel))
    terms_dw = case.batch * int(np.prod(win.out_size))
    assert_within_rounding(dx, dx_exact, dx_mag, terms_dx, np.dtype(dtype))
    assert_within_rounding(dw, dw_exact, dw_mag, terms_dw, np.dtype(dtype))

    dx_t, dw_t = torch_grads(case, x, w, dy)
    assert_within_rounding(dx_t, dx_exact, dx_mag, terms_dx, np.dtype(dtype))
    assert_within_rounding(dw_t, dw_exact, dw_mag, terms_dw, np.dtype(dtype))


def run_backward(case: ConvCase, dtype, input_seed: int, dy_seed: int) -> tuple:
    """Random x, w, dy for the case and fastconv's (dx, dw): (x, w, dy, dx, dw, kwargs)."""
    x, w, _ = make_inputs(case, dtype, seed=input_seed)
    win = geometry(case)
    dy = random_array(np.random.default_rng(dy_seed),
                      (case.batch, case.out_channels) + win.out_size, dtype)
    kwargs = dict(stride=case.stride, padding=case.padding, dilation=case.dilation,
                  groups=case.groups)
    dx = fastconv.conv_backward_input(dy, w, x.shape, **kwargs)
    dw = fastconv.conv_backward_weight(x, dy, case.kernel, **kwargs)
    return x, w, dy, dx, dw, kwargs


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
    # grouped dot products, and the packed GEMM above 128 output channels per group.
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


def test_forward_does_not_depend_on_the_thread_count() -> None:
    """Each output element is summed by one job in one order, whatever the job split."""
    import subprocess
    import sys

    script = (
        "import numpy as np, fastconv, sys\n"
        "rng = np.random.default_rng(14)\n"
        "x = rng.standard_normal((1, 64, 14, 14)).astype(np.float32)\n"
        "w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)\n"
        "sys.stdout.buffer.write(fastconv.conv(x, w, padding=1).tobytes())\n")
    outputs = []
    for threads in ("1", "2", "3"):
        env = dict(__import__("os").environ, OMP_NUM_THREADS=threads)
        outputs.append(subprocess.run([sys.executable, "-c", script], env=env, check=True,
                                      capture_output=True).stdout)
    assert len(outputs[0]) == 64 * 14 * 14 * 4
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
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", FOLDED_CASES, ids=str)
def test_folded_small_layers(case: ConvCase, dtype) -> None:
    x, w, b = make_inputs(case, dtype, seed=zlib.crc32(str(case).encode()))
    y = call_conv(case, x, w, b)
    exact, magnitude = reference_conv(case, x, w, b)
    assert_within_rounding(y, exact, magnitude, reduction_terms(case), np.dtype(dtype))
    np.testing.assert_allclose(y, torch_conv(case, x, w, b), rtol=1e-4 if dtype == np.float32
                               else 1e-10, atol=1e-4 if dtype == np.float32 else 1e-10)
    # The same micro-kernel sums each output in the same order either way, so the shared
    # GEMMs give exactly what each image gives alone.
    alone = np.concatenate([call_conv(case, x[i:i + 1], w, b) for i in range(case.batch)])
    np.testing.assert_array_equal(y, alone)
