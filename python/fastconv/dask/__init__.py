"""fastconv on Dask arrays: convolution and pooling of arrays larger than memory or spread
over a cluster, equal bitwise to the in-memory ops, batch-parallel inference and YOLO
detection per image.

Needs the optional extra: pip install 'fastconv[dask]'. Chunks may be NumPy or CuPy arrays
(a Dask array with CuPy meta runs the CUDA kernels on each chunk).
"""

from __future__ import annotations

from .model import detect, map_model
from .ops import avg_pool, conv, conv_backward_input, conv_backward_weight, max_pool
from .storage import from_npy, to_npy

__all__ = ["avg_pool", "conv", "conv_backward_input", "conv_backward_weight", "detect",
           "from_npy", "map_model", "max_pool", "to_npy"]
