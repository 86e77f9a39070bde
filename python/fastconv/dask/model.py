"""Batch-parallel inference of a fastconv.nn model over a Dask array of inputs."""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
from dask.array.utils import meta_from_array

from .. import nn
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
