"""Hand-made edge detectors of the course (DESIGN.md 3c): the 3x3 vertical/horizontal,
Sobel and Scharr kernels and `edges`, which runs them over an image with fastconv.conv, on
NumPy or CuPy arrays.

Orientation is the course's: a kernel is slid over the image by cross-correlation (what
fastconv.conv computes, as deep-learning frameworks do), and VERTICAL = [[1, 0, -1]] * 3
gives a positive response where the image is brighter on the left than on the right
(a light-to-dark vertical edge), e.g. 30 on the slides' 6x6 image of 10s beside 0s.
Each _Y kernel is its _X kernel transposed: positive where the image is brighter above.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple, Union

import numpy as np

from ._backend import array_module, is_gpu
from .ops.conv import conv

__all__ = ["GRAY_WEIGHTS", "HORIZONTAL", "SCHARR_X", "SCHARR_Y", "SOBEL_X", "SOBEL_Y",
           "VERTICAL", "edges", "to_gray"]

_VERTICAL = ((1, 0, -1), (1, 0, -1), (1, 0, -1))
_SOBEL_X = ((1, 0, -1), (2, 0, -2), (1, 0, -1))
_SCHARR_X = ((3, 0, -3), (10, 0, -10), (3, 0, -3))

VERTICAL = np.array(_VERTICAL, dtype=np.float64)
HORIZONTAL = VERTICAL.T.copy()
SOBEL_X = np.array(_SOBEL_X, dtype=np.float64)
SOBEL_Y = SOBEL_X.T.copy()
SCHARR_X = np.array(_SCHARR_X, dtype=np.float64)
SCHARR_Y = SCHARR_X.T.copy()

# Built from the tuples, not the public arrays, so that a caller who modifies SOBEL_X in
# place does not change what edges(image, "sobel") computes.
_PAIRS: Dict[str, Tuple[Tuple[Tuple[int, ...], ...], ...]] = {
    "sobel": (_SOBEL_X, tuple(zip(*_SOBEL_X))),
    "scharr": (_SCHARR_X, tuple(zip(*_SCHARR_X))),
}
_SINGLE = {"vertical": _VERTICAL, "horizontal": tuple(zip(*_VERTICAL))}

# ITU-R BT.709 luma weights, as skimage.color.rgb2gray.
GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)


def to_gray(image: Any) -> Any:
    """(H, W) or (H, W, 3) image -> (H, W) float64 (same array library), values as given
    (no rescaling: uint8 stays on the 0..255 scale): 0.2125 R + 0.7154 G + 0.0721 B for
    RGB, as scikit-image's rgb2gray."""
    xp = array_module(image)
    a = xp.asarray(image)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"edges: image must hold real numbers, got dtype {a.dtype}")
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"edges: image must be (H, W) grey or (H, W, 3) RGB, got shape "
                         f"{tuple(a.shape)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"edges: image must not be empty, got shape {tuple(a.shape)}")
    a = a.astype(np.float64)
    if a.ndim == 3:
        a = a @ xp.asarray(GRAY_WEIGHTS)
    return a


def _kernels(kernel: Any, image: Any) -> Tuple[Any, bool]:
    """(K, 1, kh, kw) float64 kernels on image's device, and whether they are an x/y pair."""
    xp = array_module(image)
    if isinstance(kernel, str):
        name = kernel.lower()
        if name in _PAIRS:
            return xp.asarray(_PAIRS[name], dtype=np.float64)[:, None], True
        if name in _SINGLE:
            return xp.asarray(_SINGLE[name], dtype=np.float64)[None, None], False
        raise ValueError(f"edges: kernel must be 'sobel', 'scharr', 'vertical', 'horizontal' "
                         f"or a 2-D array, got {kernel!r}")
    if is_gpu(kernel) != is_gpu(image):
        raise TypeError(f"edges: kernel ({type(kernel).__name__}) and image "
                        f"({type(image).__name__}) must both be NumPy or both CuPy arrays")
    w = xp.asarray(kernel)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"edges: kernel must hold real numbers, got dtype {w.dtype}")
    if w.ndim != 2 or 0 in w.shape:
        raise ValueError(f"edges: kernel must be a non-empty 2-D array, got shape "
                         f"{tuple(w.shape)}")
    return w.astype(np.float64)[None, None], False


def edges(image: Any, kernel: Union[str, Any] = "sobel", *, padding: Any = "same") -> Any:
    """Edge map of an image by cross-correlation with the course's kernels.

    image: (H, W) grey or (H, W, 3) RGB (converted with `to_gray`), any real dtype, NumPy
    or CuPy; values are used as given. kernel: "sobel" or "scharr" give the gradient
    magnitude sqrt(gx^2 + gy^2) of the _X/_Y pair; "vertical", "horizontal" or a 2-D array
    give the absolute response |image * kernel|. padding: as fastconv.conv (zeros; "same"
    keeps (H, W), "valid" gives (H - kh + 1, W - kw + 1)).
    Returns (H', W') float64, NumPy for NumPy input, CuPy for CuPy input."""
    gray = to_gray(image)
    xp = array_module(gray)
    w, pair = _kernels(kernel, gray)
    out = conv(gray[None, None], w, padding=padding)[0]
    if pair:
        return xp.sqrt(out[0] * out[0] + out[1] * out[1])
    return xp.abs(out[0])
