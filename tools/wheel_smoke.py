"""Smoke test of an installed fastconv (a wheel, from outside the source tree): it imports
from site-packages, reports itself, and one call of every op family agrees with the NumPy
reference. Used by .ci/run on the auditwheel-repaired wheel."""

import numpy as np

import fastconv
from fastconv import reference

assert "site-packages" in fastconv.__file__, fastconv.__file__
print(fastconv.info())
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 9, 9))
w = rng.standard_normal((4, 3, 3, 3))
one = (1, 1)
zero = (0, 0)
np.testing.assert_allclose(fastconv.conv(x, w, padding=1),
                           reference.conv(x, w, None, one, one, one, one), rtol=1e-10)
np.testing.assert_allclose(fastconv.max_pool(x, 2),
                           reference.max_pool(x, (2, 2), (2, 2), zero, zero, False)[0])
np.testing.assert_allclose(fastconv.im2col(x, 3), reference.im2col(x, (3, 3), one, zero, zero,
                                                                   one))
boxes = np.array([[0.0, 0, 2, 2], [1, 1, 3, 3], [0, 0, 2, 2.1]])
assert list(fastconv.nms(boxes, np.array([0.9, 0.8, 0.7]), 0.5)) == [0, 1]
rois = np.array([[0, 1.0, 1.0, 6.0, 7.0]])
assert fastconv.roi_align(x, rois, 2, sampling_ratio=2).shape == (1, 3, 2, 2)
with fastconv.no_grad():
    y = fastconv.models.lenet5().eval()(fastconv.Tensor(rng.standard_normal((1, 1, 32, 32))
                                                        .astype(np.float32)))
assert y.shape == (1, 10)
print("wheel smoke test: ok")
