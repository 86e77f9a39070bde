"""Batch-parallel inference of a fastconv.nn model over a Dask array of inputs, and YOLO
detection per image."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import dask
import dask.array as da
import dask.bag as db
from dask.array.utils import meta_from_array

from .. import nn
from ..detection import YOLO
from .._backend import array_module
from ..tensor import Tensor, no_grad
from .ops import dask_input


def _infer(model: nn.Module, block: Any) -> Any:
    with no_grad():
        out = model(Tensor(block))
    if not isinstance(out, Tensor):
        raise TypeError(f"map_model: the model must return one Tensor, got "
                        f"{type(out).__name__}")
    return out.data


def map_model(model: nn.Module, images: da.Array) -> da.Array:
    """`model` applied to each batch chunk of `images`, without building a graph for
    autograd; returns a Dask array (N, *output) with the batch chunks of `images`.

    images: Dask array (N, C, *spatial) of NumPy or CuPy chunks (the model must live on
    the chunks' device); its other dims are merged into one chunk. The model runs as it is:
    call model.eval() first for dropout and batch norm in inference mode. It enters the
    graph once (not once per task), and one image of zeros is run here to learn the
    output shape.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"map_model: model must be a fastconv.nn.Module, got "
                        f"{type(model).__name__}")
    images = dask_input("map_model", images)
    images = images.rechunk({d: -1 for d in range(1, images.ndim)})
    xp = array_module(images._meta)
    probe = _infer(model, xp.zeros((1,) + images.shape[1:], images.dtype))
    out_dims = tuple(range(images.ndim, images.ndim + probe.ndim - 1))
    shared = dask.delayed(model, pure=False)
    return da.blockwise(_infer, (0,) + out_dims, shared, None, images,
                        tuple(range(images.ndim)), concatenate=True,
                        new_axes=dict(zip(out_dims, probe.shape[1:])),
                        meta=meta_from_array(probe, probe.ndim, probe.dtype))


def _detect_block(model: YOLO, block: Any, score_threshold: float, iou_threshold: float,
                  max_output: Optional[int]) -> List[Dict[str, Any]]:
    return model.detect(block, score_threshold=score_threshold, iou_threshold=iou_threshold,
                        max_output=max_output)


def detect(model: YOLO, images: da.Array, *, score_threshold: float = 0.6,
           iou_threshold: float = 0.5, max_output: Optional[int] = None) -> db.Bag:
    """Detections of every image of `images` (N, C, H, W) by a fastconv.detection.YOLO:
    a Dask bag of N dicts {"boxes" (D, 4) xyxy fractions, "scores" (D,), "labels" (D,)} in
    image order, one partition per batch chunk, each computed where its chunk lives by
    `YOLO.detect` (the network, yolo_activate, yolo_decode with per-class NMS); the
    arguments as there. NumPy chunks (YOLO.detect works on host arrays).
    """
    if not isinstance(model, YOLO):
        raise TypeError(f"detect: model must be a fastconv.detection.YOLO, got "
                        f"{type(model).__name__}")
    images = dask_input("detect", images, "images")
    if images.ndim != 4:
        raise ValueError(f"detect: images must be (N, C, H, W), got shape {images.shape}")
    images = images.rechunk({1: -1, 2: -1, 3: -1})
    shared = dask.delayed(model, pure=False)
    parts = [dask.delayed(_detect_block, pure=True)(shared, block, score_threshold,
                                                    iou_threshold, max_output)
             for block in images.to_delayed().ravel()]
    return db.from_delayed(parts)
