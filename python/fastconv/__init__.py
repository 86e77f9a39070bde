"""fastconv: hand-written C++ and CUDA kernels for N-D convolution, pooling, im2col/col2im,
box IoU, non-max suppression (greedy and soft) and RoI align/pool on NumPy and CuPy
arrays, and a PyTorch-shaped network layer (Tensor, nn, optim, models) on top.

Layout is channels first: x is (N, C, *spatial), w is (K, C // groups, *kernel).
"""

from __future__ import annotations

from ._geometry import output_size
from ._version import __version__
from .info import info
from .ops.boxes import batched_nms, box_convert, box_iou, nms, soft_nms
from .ops.conv import conv, conv_backward_input, conv_backward_weight
from .ops.im2col import col2im, im2col
from .ops.pool import avg_pool, avg_pool_backward, max_pool, max_pool_backward
from .ops.roi import roi_align, roi_align_backward, roi_pool, roi_pool_backward
from . import cuda
from .tensor import Tensor, no_grad
from . import nn, optim
from . import models
from . import detection
from . import filters
from . import face
from . import visualize
from . import style
from .random import manual_seed

__all__ = [
    "Tensor",
    "__version__",
    "avg_pool",
    "avg_pool_backward",
    "batched_nms",
    "box_convert",
    "box_iou",
    "col2im",
    "conv",
    "conv_backward_input",
    "conv_backward_weight",
    "cuda",
    "detection",
    "filters",
    "face",
    "im2col",
    "info",
    "max_pool",
    "manual_seed",
    "models",
    "max_pool_backward",
    "nn",
    "no_grad",
    "nms",
    "optim",
    "output_size",
    "roi_align",
    "roi_align_backward",
    "roi_pool",
    "roi_pool_backward",
    "soft_nms",
    "style",
    "visualize",
]
