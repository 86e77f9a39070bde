"""GPU box_iou, box_convert, nms and batched_nms against the CPU kernels (exactly: same
IEEE operations, same order, no contraction), the NumPy reference, and torchvision where
importable. Inputs and case lists come from tests/test_boxes.py."""

from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
from fastconv import reference as ref
from _helpers import gpu_time_ms
from test_boxes import (DTYPES, FORMATS, SIZES, assert_indices, clustered_boxes, random_boxes,
                        random_scores, scalar_type)

try:  # present wherever the cuda-marked tests run (fastconv.cuda.is_available needs it)
    import cupy as cp
except ImportError:  # pragma: no cover - collection on machines without CuPy
    cp = None

pytestmark = pytest.mark.cuda

# Sizes around the 64-box mask words and tiles, and past one greedy block's 256 threads.
NMS_SIZES = SIZES + [63, 64, 65, 127, 128, 129, 1000, 3000]


def gpu(a: np.ndarray):
    return cp.asarray(a)


def host(a) -> np.ndarray:
    assert isinstance(a, cp.ndarray), type(a)
    return cp.asnumpy(a)


def gpu_nms(boxes, scores, thr, st=None, mo=None, labels=None):
    """The GPU result (variable length), checked against the fixed-size form when possible."""
    args = (gpu(boxes), gpu(scores)) + (() if labels is None else (gpu(labels),))
    call = fc.nms if labels is None else fc.batched_nms
    got = call(*args, thr, score_threshold=st, max_output=mo)
    assert isinstance(got, cp.ndarray) and got.dtype == np.int64
    got = host(got)
    size = mo if mo is not None else len(boxes) + 2
    keep, count = call(*args, thr, score_threshold=st, max_output=size, fixed_size=True)
    assert isinstance(keep, cp.ndarray) and keep.shape == (size,) and count.shape == (1,)
    k, c = host(keep), int(host(count)[0])
    expected = got[:size]
    assert c == len(expected), (c, len(expected))
    np.testing.assert_array_equal(k[:c], expected)
    assert np.all(k[c:] == -1)
    return got


def check_nms(boxes, scores, thr, st=None, mo=None):
    got = gpu_nms(boxes, scores, thr, st, mo)
    assert_indices(got, fc.nms(boxes, scores, thr, score_threshold=st, max_output=mo))
    assert_indices(got, ref.nms(boxes, scores, thr, st, mo))
    return got


def check_batched(boxes, scores, labels, thr, st=None, mo=None):
    got = gpu_nms(boxes, scores, thr, st, mo, labels=labels)
    assert_indices(got, fc.batched_nms(boxes, scores, labels, thr, score_threshold=st,
                                       max_output=mo))
    assert_indices(got, ref.batched_nms(boxes, scores, labels, thr, st, mo))
    return got


# ----------------------------------------------------------------------------------------
# box_iou / box_convert
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m", [(0, 0), (0, 3), (3, 0), (1, 1), (2, 50), (50, 2), (500, 500),
                                 (3, 70000), (300, 257)])
def test_box_iou_gpu_equals_cpu(dtype, n, m):
    rng = np.random.default_rng(n * 1000 + m)
    a, b = random_boxes(rng, n, dtype), clustered_boxes(rng, m, dtype)
    b[: min(n, m) // 2] = a[: min(n, m) // 2]  # identical pairs: IoU exactly 1
    got = fc.box_iou(gpu(a), gpu(b))
    assert isinstance(got, cp.ndarray) and got.shape == (n, m) and got.dtype == dtype
    np.testing.assert_array_equal(host(got), fc.box_iou(a, b))
    np.testing.assert_array_equal(host(got), ref.box_iou(a, b))


@pytest.mark.parametrize("dtype", DTYPES)
def test_box_iou_degenerate_and_huge(dtype):
    a = np.array([[0, 0, 1, 1], [2, 2, 2, 2], [0, 0, 1, 0], [5, 5, 6, 6]], dtype)
    b = np.array([[0, 0, 1, 0.5], [2, 2, 2, 2], [0, 0, 1, 0], [0, 0, 2, 2]], dtype)
    np.testing.assert_array_equal(host(fc.box_iou(gpu(a), gpu(b))), fc.box_iou(a, b))
    rng = np.random.default_rng(3)
    big = (random_boxes(rng, 40, np.float64, scale=1.0, size=1.0) * 1e30).astype(dtype)
    np.testing.assert_array_equal(host(fc.box_iou(gpu(big), gpu(big))), fc.box_iou(big, big))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES + [100000])
@pytest.mark.parametrize("in_fmt", FORMATS)
@pytest.mark.parametrize("out_fmt", FORMATS)
def test_box_convert_gpu_equals_cpu(dtype, n, in_fmt, out_fmt):
    rng = np.random.default_rng(n)
    boxes = ref.box_convert(random_boxes(rng, n, dtype), "xyxy", in_fmt)
    got = fc.box_convert(gpu(boxes), in_fmt, out_fmt)
    assert isinstance(got, cp.ndarray) and got.shape == (n, 4) and got.dtype == dtype
    np.testing.assert_array_equal(host(got), fc.box_convert(boxes, in_fmt, out_fmt))
    np.testing.assert_array_equal(host(got), ref.box_convert(boxes, in_fmt, out_fmt))


# ----------------------------------------------------------------------------------------
# nms
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", NMS_SIZES)
@pytest.mark.parametrize("clustered", [False, True])
def test_nms_gpu_equals_cpu(dtype, n, clustered):
    rng = np.random.default_rng(100 + n + clustered)
    boxes = (clustered_boxes if clustered else random_boxes)(rng, n, dtype)
    scores = random_scores(rng, n, dtype)
    for _ in range(3):
        thr = float(rng.uniform(0.05, 0.95))
        st = None if rng.random() < 0.5 else float(rng.uniform(0, 0.5))
        mo = None if rng.random() < 0.5 else int(rng.integers(0, n + 3))
        got = check_nms(boxes, scores, thr, st, mo)
        iou = fc.box_iou(boxes[got], boxes[got])
        np.fill_diagonal(iou, 0)
        assert not (iou >= scalar_type(dtype)(thr)).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_at_threshold_ties_and_scores(dtype):
    for t in (0.5, 0.25, 0.75):
        boxes = np.array([[0, 0, 1, 1], [0, 0, 1, t]], dtype)
        scores = np.array([0.9, 0.8], dtype)
        assert_indices(check_nms(boxes, scores, t), [0])  # >= suppresses
        assert_indices(check_nms(boxes, scores, float(np.nextafter(dtype(t), dtype(1)))), [0, 1])
    rng = np.random.default_rng(5)
    for _ in range(30):  # thresholds equal to computed IoUs: both sides must agree
        boxes = clustered_boxes(rng, 2, dtype, clusters=1)
        iou = fc.box_iou(boxes[:1], boxes[1:])[0, 0]
        for thr in (float(iou), float(np.nextafter(iou, dtype(2)))):
            check_nms(boxes, np.array([0.9, 0.1], dtype), thr)
    same = np.tile(np.array([[0, 0, 2, 2]], dtype), (5, 1))
    assert_indices(check_nms(same, np.ones(5, dtype), 0.5), [0])
    assert_indices(check_nms(same, np.array([1, 2, 2, 1, 2], dtype), 0.5), [1])
    tied = np.round(random_scores(rng, 2000, dtype), 2)  # many ties across 64-box words
    check_nms(clustered_boxes(rng, 2000, dtype), tied, 0.5)
    signed_zero = np.array([-0.0, 0.0, -0.0, 0.0], dtype)  # -0 == +0: index order decides
    far = random_boxes(rng, 4, dtype, scale=1000, size=1)
    assert_indices(check_nms(far, signed_zero, 0.5), [0, 1, 2, 3])
    boxes = np.array([[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]], dtype)
    for scores, st in (([0.25, 0.5, 0.75], 0.5), ([0.25, 0.5, 0.75], 1.0),
                       ([0.25, 0.5, 0.75], -np.inf), ([-np.inf, np.inf, 0], None),
                       ([-np.inf, np.inf, 0], -np.inf)):
        check_nms(boxes, np.array(scores, dtype), 0.5, st)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_small_sets_max_output_and_all_suppressed(dtype):
    empty = np.zeros((0, 4), dtype)
    assert_indices(check_nms(empty, np.zeros(0, dtype), 0.5), [])
    assert_indices(check_nms(empty, np.zeros(0, dtype), 0.5, mo=0), [])
    points = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 2, 0]], dtype)
    s = np.array([0.1, 0.2, 0.3], dtype)
    assert_indices(check_nms(points, s, 0.5), [2, 1, 0])
    assert_indices(check_nms(points, s, 0.0), [2])  # threshold 0 suppresses everything after
    rng = np.random.default_rng(21)
    boxes = clustered_boxes(rng, 700, dtype)
    scores = random_scores(rng, 700, dtype)
    for mo in (0, 1, 2, 63, 64, 65, 1000, 2**70):
        check_nms(boxes, scores, 0.4, mo=mo if mo < 2**63 else None)
    one_cluster = np.tile(np.array([[0, 0, 10, 10]], dtype), (300, 1))
    assert_indices(check_nms(one_cluster, random_scores(rng, 300, dtype), 0.5)[1:], [])


def test_nms_deterministic_large_and_huge_float64():
    rng = np.random.default_rng(33)
    boxes = clustered_boxes(rng, 20000, np.float32, clusters=200)
    scores = np.round(random_scores(rng, 20000, np.float32), 3)
    first = check_nms(boxes, scores, 0.5)
    for _ in range(3):
        assert_indices(host(fc.nms(gpu(boxes), gpu(scores), 0.5)), first)
    big = clustered_boxes(rng, 300, np.float64) * 1e28
    check_nms(big, random_scores(rng, 300, np.float64), 0.5)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nms_matches_torchvision(dtype):
    """torchvision suppresses IoU > thr (not >=), breaks score ties its own way and need not
    round IoUs as we do; with continuous random inputs (distinct scores, no IoU within an ulp
    of the threshold in practice) the results agree."""
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    rng = np.random.default_rng(77)
    for n in (10, 1000, 10000):
        boxes = clustered_boxes(rng, n, dtype, clusters=max(1, n // 20))
        scores = rng.permutation(n).astype(dtype) / n  # distinct scores
        got = host(fc.nms(gpu(boxes), gpu(scores), 0.5))
        expected = tv.ops.nms(torch.as_tensor(boxes, device="cuda"),
                              torch.as_tensor(scores, device="cuda"), 0.5).cpu().numpy()
        np.testing.assert_array_equal(got, expected)
        if dtype != np.float64:
            continue  # torchvision offsets float32 coordinates per label: IoUs shift slightly
        labels = rng.integers(0, 30, n)
        got = host(fc.batched_nms(gpu(boxes), gpu(scores), gpu(labels), 0.5))
        expected = tv.ops.batched_nms(torch.as_tensor(boxes, device="cuda"),
                                      torch.as_tensor(scores, device="cuda"),
                                      torch.as_tensor(labels, device="cuda"), 0.5).cpu().numpy()
        np.testing.assert_array_equal(got, expected)


# ----------------------------------------------------------------------------------------
# batched_nms
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", NMS_SIZES)
@pytest.mark.parametrize("num_labels", [1, 3, 40])
def test_batched_nms_gpu_equals_cpu(dtype, n, num_labels):
    rng = np.random.default_rng(n * 10 + num_labels)
    boxes = clustered_boxes(rng, n, dtype)
    scores = random_scores(rng, n, dtype)
    labels = rng.integers(-5, num_labels - 5, n)
    for _ in range(2):
        thr = float(rng.uniform(0.1, 0.9))
        st = None if rng.random() < 0.5 else float(rng.uniform(0, 0.5))
        mo = None if rng.random() < 0.5 else int(rng.integers(0, n + 3))
        check_batched(boxes, scores, labels, thr, st, mo)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_nms_thousands_of_labels(dtype):
    rng = np.random.default_rng(55)
    n = 6000
    boxes = clustered_boxes(rng, n, dtype, clusters=4)
    scores = random_scores(rng, n, dtype)
    labels = rng.integers(0, 3000, n)
    check_batched(boxes, scores, labels, 0.5)
    check_batched(boxes, scores, labels, 0.5, 0.3, 500)
    check_batched(boxes, scores, rng.integers(0, 1000, n), 0.3)
    distinct = np.arange(n)  # every label distinct: nothing suppressed
    assert_indices(check_batched(boxes, scores, distinct, 0.5),
                   np.lexsort((np.arange(n), -scores)))
    assert_indices(check_batched(boxes, scores, np.full(n, 7), 0.45, mo=9),
                   host(fc.nms(gpu(boxes), gpu(scores), 0.45, max_output=9)))


def test_batched_nms_extreme_labels_and_ties():
    base = np.array([[1e30, 1e30, 2e30, 2e30], [1.2e30, 1e30, 2.2e30, 2e30],
                     [5e30, 5e30, 6e30, 6e30]])
    boxes = np.concatenate([base, base, base])
    scores = np.arange(9, 0, -1).astype(np.float64)
    labels = np.array([0, 0, 0, 1, 1, 1, 2**62, 2**62, -2**62])
    assert_indices(check_batched(boxes, scores, labels, 0.5), [0, 2, 3, 5, 6, 8])
    labels = np.array([2**63 - 1, -2**63, 0, 2**63 - 1, -2**63, 0, 1, 1, 1])
    check_batched(boxes, scores, labels, 0.5)
    for dtype in DTYPES:
        b = np.tile(np.array([[0, 0, 1, 1]], dtype), (6, 1))
        s = np.array([0.5, 0.5, 0.9, 0.5, 0.9, 0.5], dtype)
        lab = np.array([2, 1, 2, 0, 1, 0])
        assert_indices(check_batched(b, s, lab, 0.5), [2, 4, 3])
        assert_indices(check_batched(b, s, lab, 0.5, mo=2), [2, 4])
        assert_indices(check_batched(b[:0], s[:0], lab[:0], 0.5), [])
    # Any integer label dtype on the GPU, as on the CPU.
    rng = np.random.default_rng(4)
    b, s = clustered_boxes(rng, 200, np.float32), random_scores(rng, 200, np.float32)
    lab = rng.integers(0, 5, 200)
    for dt in (np.int8, np.uint16, np.int32):
        assert_indices(host(fc.batched_nms(gpu(b), gpu(s), gpu(lab.astype(dt)), 0.5)),
                       fc.batched_nms(b, s, lab, 0.5))


# ----------------------------------------------------------------------------------------
# Streams, result kinds, errors
# ----------------------------------------------------------------------------------------

def test_non_default_stream():
    rng = np.random.default_rng(8)
    boxes = clustered_boxes(rng, 5000, np.float32)
    scores = random_scores(rng, 5000, np.float32)
    labels = rng.integers(0, 50, 5000)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        gb, gs, gl = gpu(boxes), gpu(scores), gpu(labels)
        keep = fc.nms(gb, gs, 0.5)
        fixed, count = fc.batched_nms(gb, gs, gl, 0.5, max_output=100, fixed_size=True)
        iou = fc.box_iou(gb[:100], gb)
        conv = fc.box_convert(gb, "xyxy", "cxcywh")
    stream.synchronize()
    for a in (keep, fixed, count, iou, conv):
        assert isinstance(a, cp.ndarray)
    assert_indices(host(keep), fc.nms(boxes, scores, 0.5))
    expected = fc.batched_nms(boxes, scores, labels, 0.5, max_output=100)
    assert int(host(count)[0]) == len(expected)
    np.testing.assert_array_equal(host(fixed)[:len(expected)], expected)
    np.testing.assert_array_equal(host(iou), fc.box_iou(boxes[:100], boxes))
    np.testing.assert_array_equal(host(conv), fc.box_convert(boxes, "xyxy", "cxcywh"))


@pytest.mark.parametrize("bad,pattern", [
    ([[0, 0, 1, 1], [0, np.nan, 1, 1]], r"boxes.*non-finite.*row 1"),
    ([[0, 0, 1, 1], [0, 0, np.inf, 1]], r"boxes.*non-finite.*row 1"),
    ([[0, 0, 1, 1], [0, 0, 1, 1], [2, 0, 1, 1]], r"boxes row 2 is inverted"),
    ([[0, 3, 1, 1], [np.nan, 0, 0, 0]], r"boxes row 0 is inverted"),
])
def test_bad_box_values_raise_like_cpu(bad, pattern):
    boxes = gpu(np.array(bad, np.float32))
    scores = cp.ones(len(bad), cp.float32)
    labels = cp.zeros(len(bad), cp.int64)
    good = gpu(np.array([[0, 0, 1, 1], [1, 1, 3, 3]], np.float32))
    with pytest.raises(ValueError, match="nms: " + pattern):
        fc.nms(boxes, scores)
    with pytest.raises(ValueError, match="batched_nms: " + pattern):
        fc.batched_nms(boxes, scores, labels)
    with pytest.raises(ValueError, match=pattern.replace("boxes", "box_iou: b")):
        fc.box_iou(good, boxes)
    with pytest.raises(ValueError, match=pattern.replace("boxes", "box_iou: a")):
        fc.box_iou(boxes, good)
    with pytest.raises(ValueError, match=pattern):
        fc.box_convert(boxes, "xyxy", "xywh")
    # The fixed-size form cannot raise without a sync: it reports count -1 instead.
    keep, count = fc.nms(boxes, scores, max_output=4, fixed_size=True)
    assert int(host(count)[0]) == -1 and np.all(host(keep) == -1)


def test_bad_scores_formats_kinds_and_dtypes():
    boxes = gpu(np.array([[0, 0, 1, 1], [1, 1, 3, 3], [0, 0, 2, 2]], np.float32))
    scores = gpu(np.array([0.2, 0.5, 0.9], np.float32))
    with pytest.raises(ValueError, match=r"nms: scores has NaN at index 1"):
        fc.nms(boxes, gpu(np.array([0, np.nan, 1], np.float32)))
    with pytest.raises(ValueError, match=r"batched_nms: scores has NaN at index 0"):
        fc.batched_nms(boxes, gpu(np.array([np.nan, 0, 1], np.float32)), cp.arange(3))
    _, count = fc.batched_nms(boxes, gpu(np.array([np.nan, 0, 1], np.float32)),
                                 cp.arange(3), max_output=2, fixed_size=True)
    assert int(host(count)[0]) == -1
    with pytest.raises(ValueError, match=r"scores shape \(2,\).*boxes shape \(3, 4\)"):
        fc.nms(boxes, scores[:2])
    with pytest.raises(ValueError, match=r"labels shape \(4,\)"):
        fc.batched_nms(boxes, scores, cp.arange(4))
    with pytest.raises(TypeError, match=r"on the GPU but .* in host memory"):
        fc.nms(boxes, cp.asnumpy(scores))
    with pytest.raises(TypeError, match=r"on the GPU but .* in host memory"):
        fc.box_iou(cp.asnumpy(boxes), boxes)
    with pytest.raises(TypeError, match=r"labels must be a GPU array"):
        fc.batched_nms(boxes, scores, np.arange(3))
    with pytest.raises(TypeError, match=r"labels must have an integer dtype"):
        fc.batched_nms(boxes, scores, cp.zeros(3, cp.float32))
    with pytest.raises(TypeError, match=r"scores has dtype float64"):
        fc.nms(boxes, scores.astype(cp.float64))
    with pytest.raises(ValueError, match=r"fixed_size=True needs max_output"):
        fc.nms(boxes, scores, fixed_size=True)
    with pytest.raises(ValueError, match=r"boxes must have shape \(N, 4\)"):
        fc.nms(cp.ones((3, 3), cp.float32), scores)
    with pytest.raises(ValueError, match=r"boxes row 1 has a negative width or height"):
        fc.box_convert(gpu(np.array([[0, 0, 1, 1], [0, 0, 1, -1]], np.float32)), "xywh", "xyxy")
    with pytest.raises(ValueError, match=r"boxes has a non-finite value in row 2"):
        fc.box_convert(gpu(np.array([[0, 0, 1, 1]] * 2 + [[np.nan, 0, 1, 1]], np.float32)),
                       "cxcywh", "xyxy")


def test_extension_rejects_bad_input_directly():
    from fastconv import _cuda
    from fastconv._backend import gpu_workspace

    stream = cp.cuda.get_current_stream().ptr
    boxes = cp.asarray([[0, 0, 1, 1], [1, 1, 2, 2]], cp.float32)
    scores = cp.ones(2, cp.float32)
    with pytest.raises(ValueError, match=r"iou_threshold must be finite"):
        _cuda.nms(boxes, scores, float("nan"), None, None, gpu_workspace, stream)
    with pytest.raises(ValueError, match=r"max_output must be >= 0"):
        _cuda.nms(boxes, scores, 0.5, None, -1, gpu_workspace, stream)
    with pytest.raises(TypeError, match=r"labels must have dtype int64, got <i4"):
        _cuda.batched_nms(boxes, scores, cp.zeros(2, cp.int32), 0.5, None, None, gpu_workspace,
                          stream)
    with pytest.raises(ValueError, match=r"out has shape \(2, 3\), expected \(2, 2\)"):
        _cuda.box_iou(boxes, boxes, cp.empty((2, 3), cp.float32), gpu_workspace, stream)
    with pytest.raises(ValueError, match=r"in_fmt must be one of"):
        _cuda.box_convert(boxes, cp.empty((2, 4), cp.float32), "xy", "xyxy", gpu_workspace,
                          stream)
    with pytest.raises(ValueError, match=r"keep has shape \(2,\), expected \(3,\)"):
        _cuda.nms_fixed(boxes, scores, 0.5, None, 3, cp.empty(2, cp.int64),
                        cp.empty(1, cp.int64), gpu_workspace, stream)
    with pytest.raises(ValueError, match=r"needs max_output"):
        _cuda.nms_fixed(boxes, scores, 0.5, None, None, cp.empty(2, cp.int64),
                        cp.empty(1, cp.int64), gpu_workspace, stream)


# ----------------------------------------------------------------------------------------
# Timings (printed, not asserted beyond sanity: the targets are for a human to read)
# ----------------------------------------------------------------------------------------

def test_report_nms_timings(capsys):
    """Targets (H100): nms ~0.5 ms at 10k boxes, ~8 ms at 100k, >= 2x torchvision at 10k."""
    rng = np.random.default_rng(0)
    lines = []
    for n in (10_000, 100_000):
        boxes = gpu(random_boxes(rng, n, np.float32, scale=1000.0, size=100.0))
        scores = gpu(random_scores(rng, n, np.float32))
        labels = gpu(rng.integers(0, 1000, n))
        t_nms = gpu_time_ms(lambda: fc.nms(boxes, scores, 0.5))
        t_fixed = gpu_time_ms(lambda: fc.nms(boxes, scores, 0.5, max_output=1000,
                                             fixed_size=True))
        t_batched = gpu_time_ms(lambda: fc.batched_nms(boxes, scores, labels, 0.5))
        line = (f"n={n}: nms {t_nms:.3f} ms, nms fixed_size {t_fixed:.3f} ms, "
                f"batched_nms (1000 labels) {t_batched:.3f} ms")
        try:
            import torch
            import torchvision

            tb, ts = torch.as_tensor(boxes, device="cuda"), torch.as_tensor(scores, device="cuda")
            tl = torch.as_tensor(labels, device="cuda")
            t_tv = gpu_time_ms(lambda: torchvision.ops.nms(tb, ts, 0.5))
            t_tvb = gpu_time_ms(lambda: torchvision.ops.batched_nms(tb, ts, tl, 0.5))
            line += (f"; torchvision nms {t_tv:.3f} ms ({t_tv / t_nms:.2f}x), "
                     f"batched {t_tvb:.3f} ms ({t_tvb / t_batched:.2f}x)")
        except Exception as error:  # torch/torchvision missing or without CUDA
            line += f"; torchvision not timed ({type(error).__name__})"
        lines.append(line)
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert all(len(line) > 0 for line in lines)


def test_report_box_iou_bandwidth(capsys):
    """Target: box_iou output writes at >= 70% of device-to-device copy bandwidth."""
    rng = np.random.default_rng(1)
    a = gpu(random_boxes(rng, 8192, np.float32))
    b = gpu(random_boxes(rng, 8192, np.float32))
    out_bytes = 8192 * 8192 * 4
    src, dst = cp.empty(out_bytes, cp.uint8), cp.empty(out_bytes, cp.uint8)
    t_copy = gpu_time_ms(lambda: cp.copyto(dst, src))  # reads + writes 2x the bytes
    t_iou = gpu_time_ms(lambda: fc.box_iou(a, b))
    copy_bw = 2 * out_bytes / t_copy / 1e6
    iou_bw = out_bytes / t_iou / 1e6
    with capsys.disabled():
        print(f"\nbox_iou 8192x8192 float32: {t_iou:.3f} ms, {iou_bw:.0f} GB/s written; "
              f"copy {copy_bw:.0f} GB/s; ratio {iou_bw / copy_bw:.2f}")
    assert t_iou > 0
