"""fastconv.filters (DESIGN.md 3c): the course's kernels and their orientation, the 6x6
examples of the edge-detection slides, `edges` against a plain NumPy cross-correlation,
`python -m fastconv edges`, and "learning to detect edges": gradient descent recovers the
Sobel kernel within the bound the theory of gradient descent guarantees."""

from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import filters

# The slides' 6x6 image of the first vertical-edge example and its 4x4 result.
SLIDE_IMAGE = np.array([[3, 0, 1, 2, 7, 4], [1, 5, 8, 9, 3, 1], [2, 7, 2, 5, 1, 3],
                        [0, 1, 3, 1, 7, 8], [4, 2, 1, 6, 2, 8], [2, 4, 5, 2, 3, 9]])
SLIDE_VERTICAL = np.array([[-5, -4, 0, 8], [-10, -2, 2, 3], [0, -2, -4, -7],
                           [-3, -2, -3, -16]])
LIGHT_DARK = np.array([[10, 10, 10, 0, 0, 0]] * 6)
CHECKER = np.array([[10, 10, 10, 0, 0, 0]] * 3 + [[0, 0, 0, 10, 10, 10]] * 3)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261205)


def _correlate(image: np.ndarray, kernel: np.ndarray, padding) -> np.ndarray:
    """Cross-correlation from the definition: zero padding, then each output cell is the
    sum of the kernel times the window under it ("same": the odd pad after the image)."""
    kh, kw = kernel.shape
    if padding == "same":
        pads = [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in (kh, kw)]
    elif padding == "valid":
        pads = [(0, 0), (0, 0)]
    else:
        pads = [(padding, padding)] * 2
    padded = np.pad(image, pads)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw))
    return np.einsum("ijkl,kl->ij", windows, kernel)


def _gray(image: np.ndarray) -> np.ndarray:
    image = image.astype(np.float64)
    if image.ndim == 2:
        return image
    return 0.2125 * image[..., 0] + 0.7154 * image[..., 1] + 0.0721 * image[..., 2]


# -- kernels and the slides ------------------------------------------------------------------


def test_kernels_in_the_course_orientation() -> None:
    expected = {
        "VERTICAL": [[1, 0, -1]] * 3,
        "SOBEL_X": [[1, 0, -1], [2, 0, -2], [1, 0, -1]],
        "SCHARR_X": [[3, 0, -3], [10, 0, -10], [3, 0, -3]],
    }
    for name, values in expected.items():
        k = getattr(filters, name)
        assert k.dtype == np.float64 and k.shape == (3, 3)
        np.testing.assert_array_equal(k, values)
    np.testing.assert_array_equal(filters.HORIZONTAL, filters.VERTICAL.T)
    np.testing.assert_array_equal(filters.HORIZONTAL, [[1, 1, 1], [0, 0, 0], [-1, -1, -1]])
    np.testing.assert_array_equal(filters.SOBEL_Y, filters.SOBEL_X.T)
    np.testing.assert_array_equal(filters.SCHARR_Y, filters.SCHARR_X.T)


def test_the_slides_6x6_examples() -> None:
    def signed(image, kernel):
        x = np.asarray(image, np.float64)[None, None]
        return fastconv.conv(x, kernel[None, None])[0, 0]

    np.testing.assert_array_equal(signed(SLIDE_IMAGE, filters.VERTICAL), SLIDE_VERTICAL)
    np.testing.assert_array_equal(signed(LIGHT_DARK, filters.VERTICAL), [[0, 30, 30, 0]] * 4)
    np.testing.assert_array_equal(signed(LIGHT_DARK[:, ::-1], filters.VERTICAL),
                                  [[0, -30, -30, 0]] * 4)
    np.testing.assert_array_equal(signed(CHECKER, filters.HORIZONTAL),
                                  [[0, 0, 0, 0], [30, 10, -10, -30], [30, 10, -10, -30],
                                   [0, 0, 0, 0]])
    # edges gives the absolute response; "valid" keeps the slides' 4x4.
    np.testing.assert_array_equal(filters.edges(SLIDE_IMAGE, "vertical", padding="valid"),
                                  np.abs(SLIDE_VERTICAL))
    np.testing.assert_array_equal(filters.edges(CHECKER, "horizontal", padding="valid"),
                                  [[0, 0, 0, 0], [30, 10, 10, 30], [30, 10, 10, 30],
                                   [0, 0, 0, 0]])
    # The vertical detector sees nothing of a horizontal edge, and vice versa.
    assert not filters.edges(LIGHT_DARK, "horizontal", padding="valid").any()
    assert not filters.edges(LIGHT_DARK.T, "vertical", padding="valid").any()


# -- edges ----------------------------------------------------------------------------------


@pytest.mark.parametrize("padding", ["same", "valid", 1])
@pytest.mark.parametrize("kernel", ["sobel", "scharr", "vertical", "horizontal", "array"])
@pytest.mark.parametrize("rgb", [False, True], ids=["grey", "rgb"])
def test_edges_against_numpy(kernel, padding, rgb, rng) -> None:
    image = rng.uniform(0, 255, (23, 31, 3) if rgb else (23, 31))
    gray = _gray(image)
    custom = rng.standard_normal((2, 4))
    if kernel in ("sobel", "scharr"):
        kx = filters.SOBEL_X if kernel == "sobel" else filters.SCHARR_X
        expected = np.hypot(_correlate(gray, kx, padding), _correlate(gray, kx.T, padding))
    else:
        k = {"vertical": filters.VERTICAL, "horizontal": filters.HORIZONTAL,
             "array": custom}[kernel]
        expected = np.abs(_correlate(gray, k, padding))
    got = filters.edges(image, custom if kernel == "array" else kernel, padding=padding)
    assert got.dtype == np.float64 and got.shape == expected.shape
    if padding == "same":
        assert got.shape == gray.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-9)


def test_edges_inputs_and_errors(rng) -> None:
    image = rng.integers(0, 256, (9, 11, 3)).astype(np.uint8)
    # Values are used as given (no rescaling of uint8); lists and bools work.
    np.testing.assert_allclose(filters.edges(image), filters.edges(image.astype(float)))
    assert filters.edges(LIGHT_DARK.tolist(), "vertical").dtype == np.float64
    assert filters.edges(LIGHT_DARK > 5, "Sobel").max() > 0
    np.testing.assert_allclose(filters.to_gray(image), _gray(image))
    with pytest.raises(ValueError, match=r"\(H, W, 3\).*\(9, 11, 4\)"):
        filters.edges(np.zeros((9, 11, 4)))
    with pytest.raises(ValueError, match="shape"):
        filters.edges(np.zeros(9))
    with pytest.raises(ValueError, match="empty"):
        filters.edges(np.zeros((0, 5)))
    with pytest.raises(TypeError, match="real numbers"):
        filters.edges(np.zeros((4, 4), complex))
    with pytest.raises(ValueError, match="kernel must be 'sobel'"):
        filters.edges(image, "prewitt")
    with pytest.raises(ValueError, match="2-D"):
        filters.edges(image, np.ones((3, 3, 3)))
    with pytest.raises(ValueError):
        filters.edges(np.ones((2, 2)), "sobel", padding="valid")  # kernel larger than image


def test_named_kernels_ignore_changes_to_the_public_arrays() -> None:
    before = filters.edges(SLIDE_IMAGE)
    saved = filters.SOBEL_X.copy()
    filters.SOBEL_X[...] = 0
    try:
        np.testing.assert_array_equal(filters.edges(SLIDE_IMAGE), before)
    finally:
        filters.SOBEL_X[...] = saved


@pytest.mark.cuda
def test_edges_on_cupy(rng) -> None:
    import cupy

    image = rng.uniform(0, 1, (40, 52, 3))
    for kernel in ("sobel", "vertical", rng.standard_normal((3, 3))):
        got = filters.edges(cupy.asarray(image),
                            kernel if isinstance(kernel, str) else cupy.asarray(kernel))
        assert isinstance(got, cupy.ndarray) and got.dtype == np.float64
        np.testing.assert_allclose(cupy.asnumpy(got), filters.edges(image, kernel),
                                   rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match="both NumPy or both CuPy"):
        filters.edges(cupy.asarray(image), np.ones((3, 3)))


def test_edges_command(tmp_path) -> None:
    pytest.importorskip("skimage")
    plt = pytest.importorskip("matplotlib.pyplot")
    from fastconv.cli import main
    from fastconv.examples import edges as edges_cli

    out = tmp_path / "edges.png"
    assert main(["edges", "camera", "-o", str(out)]) == 0
    picture = plt.imread(out)
    gap = edges_cli.GAP
    assert picture.shape[:2] == (510, 3 * 510 + 2 * gap)
    # The white separators, and the vertical map's panel drawn from edges(SOBEL_X).
    assert (picture[:, 510:510 + gap, :3] == 1).all()
    from skimage import data

    vertical, _, magnitude = edges_cli.edge_maps(data.camera())
    top = np.percentile(magnitude, edges_cli.WHITE_PERCENTILE)
    # Two grey levels of slack: the colormap's 256-entry table, then 8-bit PNG rounding.
    np.testing.assert_allclose(picture[:, :510, 0], np.minimum(vertical / top, 1), atol=2 / 255)
    assert main(["edges", "nowhere.png", "-o", str(out)]) == 1


# -- learning to detect edges ---------------------------------------------------------------


@pytest.mark.parametrize("target", ["sobel_x", "scharr_y"])
def test_gradient_descent_recovers_the_kernel(target, rng) -> None:
    """The MSE to the kernel's responses is a quadratic with its minimum exactly at the
    kernel. With the step 1/L the error ||w_t - k|| is non-increasing and at most
    (1 - mu/L)^t ||w_0 - k|| (mu, L the extreme curvatures, from the images' patches);
    on white noise mu/L is near 1, so 40 steps leave only float64 rounding, which the
    1e-12 slack covers (the fixed point's rounding error is about eps * L/mu * ||k||,
    below 1e-14)."""
    from fastconv.examples.learn_edges import TARGETS, crops, learn_filter

    images = crops("noise", 4, 32, rng)
    result = learn_filter(images, TARGETS[target], steps=40)
    errors = np.array(result.errors)
    assert errors[0] > 1.0                                   # the start is far from k
    assert np.all(np.diff(errors) <= 1e-12)
    assert np.all(errors <= result.bound() + 1e-12)
    assert errors[-1] < 1e-10
    np.testing.assert_allclose(result.kernel, TARGETS[target], atol=1e-10)


def test_learn_edges_command_on_grass(tmp_path, capsys) -> None:
    pytest.importorskip("skimage")
    pytest.importorskip("matplotlib")
    from fastconv.examples import learn_edges

    plot = tmp_path / "learn.png"
    error = learn_edges.main(["--quick", "--no-progress", "--plot", str(plot)])
    out = capsys.readouterr().out
    assert "guaranteed <=" in out and plot.stat().st_size > 0
    # Grass is badly conditioned (mu/L about 0.02): 150 steps guarantee ~0.1; it does better.
    assert error < 0.1
