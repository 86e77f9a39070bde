"""What are deep ConvNets learning? (Zeiler & Fergus 2013, as the course shows it): for a
unit (a channel) of a layer, the nine image patches that activate it most.

`receptive_field(model, layer)` gives, per spatial dim, the window of input cells that one
output cell of a layer sees: output cell i sees input cells [start + i * stride,
start + i * stride + size) (start < 0 and cells past the end are padding). It is exact
for every nn layer kind, composed through the network's actual graph: residual sums and
concatenations take the hull of their branches. `top_patches` scans images for the k
largest activations of each unit and cuts those windows out of the images; `save_grid`
draws them as the course's slides do (one row of k patches per unit, one panel per
layer).
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import nn
from ._backend import array_module, is_gpu
from ._geometry import make_window
from .nn.modules import (AdaptiveAvgPoolNd, BatchNormNd, Conv, Dropout, Flatten, Identity,
                         Linear, LocalResponseNorm, Module, PoolNd, ReLU, ReLU6, Sigmoid,
                         Softmax, Tanh)
from .tensor import Tensor, enable_grad, no_grad

__all__ = ["ReceptiveField", "TopPatches", "receptive_field", "save_grid", "save_image",
           "top_patches"]


class ReceptiveField(NamedTuple):
    """One spatial dim of a receptive field: output cell i sees input cells
    [start + i * stride, start + i * stride + size)."""

    size: int
    stride: int
    start: int


Field = Tuple[ReceptiveField, ...]

# Graph ops that act on each spatial cell on its own (elementwise, or per channel).
_POINTWISE_OPS = frozenset({"add", "sub", "mul", "div", "neg", "pow", "exp", "log", "sqrt",
                            "abs", "clamp", "relu", "relu6", "sigmoid", "tanh", "astype",
                            "to", "batch_norm", "dropout"})
# Graph ops that only move batch or channel entries when they keep the spatial shape.
_CHANNEL_OPS = frozenset({"reshape", "getitem", "concat"})
# Layers that act on each spatial cell on its own.
_POINTWISE_LAYERS = (BatchNormNd, LocalResponseNorm, ReLU, ReLU6, Sigmoid, Tanh, Dropout,
                     Identity)
_WINDOW_LAYERS = (Conv, PoolNd, AdaptiveAvgPoolNd)
_FLAT_LAYERS = (Flatten, Linear)


class _Reached(Exception):
    """Raised by the probe's hook on the layer to end the forward pass there."""


def _compose(field: Field, kernel: Sequence[int], stride: Sequence[int],
             pad_before: Sequence[int]) -> Field:
    """The field after a window op (effective kernel, stride, padding before) on a tensor
    whose cells have the fields `field`."""
    return tuple(ReceptiveField(f.size + (k - 1) * f.stride, f.stride * s,
                                f.start - p * f.stride)
                 for f, k, s, p in zip(field, kernel, stride, pad_before))


def _hull(fields: List[Field], what: str) -> Field:
    """The smallest field holding every field of `fields` (they must share strides)."""
    out = []
    for dims in zip(*fields):
        if len({f.stride for f in dims}) != 1:
            raise ValueError(f"receptive_field: {what} joins branches of different strides "
                             f"{[f.stride for f in dims]}")
        start = min(f.start for f in dims)
        end = max(f.start + f.size for f in dims)
        out.append(ReceptiveField(end - start, dims[0].stride, start))
    return tuple(out)


def _layer_field(module: Module, field: Field, x: Tensor, out: Tensor) -> Field:
    """The field of a layer's output from the field of its input x."""
    in_size = tuple(x.shape[2:])
    if isinstance(module, _FLAT_LAYERS):
        raise ValueError(f"receptive_field: {type(module).__name__} mixes every spatial "
                         "cell; a layer after it has no per-cell receptive field")
    if isinstance(module, Softmax) and module.dim not in (1, 1 - x.ndim):
        raise ValueError(f"receptive_field: Softmax over dim {module.dim} mixes spatial "
                         "cells")
    if isinstance(module, Conv):
        win = make_window("receptive_field", in_size, module.kernel_size, module.stride,
                          module.padding, module.dilation)
        return _compose(field, [d * (k - 1) + 1 for d, k in zip(win.dilation, win.kernel)],
                        win.stride, win.pad_before)
    if isinstance(module, PoolNd):
        win = make_window("receptive_field", in_size, module.kernel_size, module.stride,
                          module.padding, 1, module.ceil_mode, pool=True)
        return _compose(field, win.kernel, win.stride, win.pad_before)
    if isinstance(module, AdaptiveAvgPoolNd):
        out_size = tuple(out.shape[2:])
        if any(n % o for n, o in zip(in_size, out_size)):
            raise ValueError(f"receptive_field: {type(module).__name__} from {in_size} to "
                             f"{out_size} has windows of unequal sizes (no sliding window)")
        kernel = tuple(n // o for n, o in zip(in_size, out_size))
        return _compose(field, kernel, kernel, (0,) * len(kernel))
    return field   # pointwise layers (and Softmax over channels)


def _default_input_shape(model: Module) -> Tuple[int, ...]:
    for module in model.modules():
        if isinstance(module, Conv):
            side = 64 if module.ndim == 3 else 224
            return (module.in_channels,) + (side,) * module.ndim
    raise ValueError(f"receptive_field: {type(model).__name__} has no convolution to tell "
                     "the input's channels and dims; pass input_shape=(C, *spatial)")


def _probe(model: Module, layer: Module, input_shape: Tuple[int, ...]) -> tuple:
    """Run the model on one input that requires grad (and nothing else does) up to the
    layer's first output; returns (input, layer output, {id(output): (layer, input)})."""
    calls: Dict[int, tuple] = {}
    reached: List[Any] = []

    def record(module: Module, inputs: tuple, output: Any) -> None:
        if (isinstance(output, Tensor) and inputs and isinstance(inputs[0], Tensor)
                and output is not inputs[0]):
            calls.setdefault(id(output), (module, inputs[0], output))

    def stop(module: Module, inputs: tuple, output: Any) -> None:
        reached.append(output)
        raise _Reached

    first = next(model.parameters(), None)
    probe = np.random.default_rng(0).uniform(0.5, 1.0, (1,) + input_shape)
    if first is not None:   # on the parameters' device, in their dtype
        probe = array_module(first.data).asarray(probe, dtype=first.data.dtype)
    x = Tensor(probe.astype(np.float32) if first is None else probe, requires_grad=True)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    training = model.training
    handles = [m.register_forward_hook(record) for m in model.modules()
               if isinstance(m, _WINDOW_LAYERS + _POINTWISE_LAYERS + _FLAT_LAYERS + (Softmax,))]
    handles.append(layer.register_forward_hook(stop))
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad = False
        with enable_grad():
            model(x)
    except _Reached:
        pass
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)
        for p, flag in flags:
            p.requires_grad = flag
    if not reached:
        raise ValueError(f"receptive_field: the layer never ran in {type(model).__name__}'s "
                         "forward pass")
    return x, reached[0], calls


def receptive_field(model: Module, layer: Union[str, Module],
                    input_shape: Optional[Sequence[int]] = None) -> Field:
    """Per spatial dim, ReceptiveField(size, stride, start) of `layer`'s output cells:
    output cell i sees input cells [start + i * stride, start + i * stride + size), with
    the padding counted (start may be negative, the window may pass the input's end).

    layer: a name of model.named_modules() ("" for the whole model) or a module; a
    module that runs several times (a shared activation) is taken at its first run.
    input_shape: (C, *spatial) of one input. It matters only where "same" padding with a
    stride puts the odd pixel after the image (EfficientNet, TensorFlow ports): the start
    then depends on the input's size. Default: the first convolution's channels and 224
    per dim (64 for 3-D).

    The field is composed layer by layer along the network's own graph, run once on a
    probe input: convolution (kernel, stride, padding, dilation), max and average pooling
    (ceil_mode included) and adaptive average pooling with equal windows move it;
    batch norm, local response norm, activations, dropout, residual sums and channel
    concatenations keep each cell where it is (branches join as the hull of their
    fields). ValueError for what has no per-cell field: Flatten, Linear, softmax over
    space, unequal adaptive windows, and ops outside nn layers that move cells (F.conv,
    F.pad, transposes)."""
    name, module = nn.get_layer(model, layer)
    shape = tuple(input_shape) if input_shape is not None else _default_input_shape(model)
    x, output, calls = _probe(model, module, shape)
    if not isinstance(output, Tensor) or output.ndim != x.ndim:
        raise ValueError(f"receptive_field: layer {name!r} gives "
                         f"{getattr(output, 'shape', type(output).__name__)}, not (N, C, "
                         f"*spatial) with the input's {x.ndim - 2} spatial dims")
    if not output.requires_grad:
        raise ValueError(f"receptive_field: layer {name!r} does not depend on the input")
    identity = tuple(ReceptiveField(1, 1, 0) for _ in shape[1:])
    fields: Dict[int, Field] = {id(x): identity}
    spatial = len(shape) - 1

    # The probe ran with the parameters frozen, so the input-dependent tensors are the
    # ones that require grad, less the parameters (their flags are restored by now).
    params = {id(p) for p in model.parameters()}

    def inputs_of(t: Tensor) -> List[Tensor]:
        if id(t) in calls:
            return [calls[id(t)][1]]
        return [p for p in t._parents if p.requires_grad and id(p) not in params]

    stack = [output]
    while stack:
        t = stack[-1]
        if id(t) in fields:
            stack.pop()
            continue
        deps = inputs_of(t)
        todo = [d for d in deps if id(d) not in fields]
        if todo:
            stack.extend(todo)
            continue
        stack.pop()
        if id(t) in calls:
            layer_module, layer_in, _ = calls[id(t)]
            fields[id(t)] = _layer_field(layer_module, fields[id(layer_in)], layer_in, t)
            continue
        op = t._op or "a leaf"
        if t.is_leaf:
            raise ValueError("receptive_field: the layer depends on a tensor other than the "
                             "input")
        same_cells = all(d.ndim == t.ndim and d.shape[-spatial:] == t.shape[-spatial:]
                         for d in deps)
        if not same_cells or op not in _POINTWISE_OPS | _CHANNEL_OPS:
            raise ValueError(f"receptive_field: op {op!r} outside an nn layer changes the "
                             f"spatial cells ({[d.shape for d in deps]} -> {t.shape}); only "
                             "nn layers carry the geometry a receptive field needs")
        fields[id(t)] = _hull([fields[id(d)] for d in deps], f"op {op!r}")
    return fields[id(output)]


# ----------------------------------------------------------------------------- top patches


@dataclass
class TopPatches:
    """The k most activating patches of some units (channels) of a layer.

    layer: its name; units (U,) the channel indices; activations (U, k) float64, largest
    first; sources (U, k, 1 + d) int64: image index, then the output cell's position per
    spatial dim; patches (U, k, C, *size): the receptive-field crops of the images
    (images' dtype; zero where the window leaves the image); receptive_field per dim.
    """

    layer: str
    units: Any
    activations: Any
    sources: Any
    patches: Any
    receptive_field: Field


def _image_batch(images: Any) -> Any:
    data = images.data if isinstance(images, Tensor) else images
    if not (isinstance(data, np.ndarray) or is_gpu(data)):
        raise TypeError(f"images must be an array (N, C, *spatial) or a Tensor, got "
                        f"{type(images).__name__}")
    if data.ndim < 3 or data.shape[0] < 1:
        raise ValueError(f"images must be (N, C, *spatial) with N >= 1, got shape "
                         f"{tuple(data.shape)}")
    if data.dtype.kind != "f":
        raise TypeError(f"images must hold floats (the network's input), got dtype "
                        f"{data.dtype}")
    return data


def _crop(image: Any, field: Field, position: Sequence[int]) -> Any:
    """The window of output cell `position` from image (C, *spatial), zero outside."""
    xp = array_module(image)
    out = xp.zeros((image.shape[0],) + tuple(f.size for f in field), dtype=image.dtype)
    src, dst = [slice(None)], [slice(None)]
    for f, pos, n in zip(field, position, image.shape[1:]):
        lo = f.start + int(pos) * f.stride
        a, b = max(lo, 0), min(lo + f.size, n)
        if a >= b:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - lo, b - lo))
    out[tuple(dst)] = image[tuple(src)]
    return out


def _inside(field: Field, out_shape: Tuple[int, ...], in_shape: Tuple[int, ...]) -> Any:
    """Boolean (out_shape): the cells whose window lies within the input."""
    masks = []
    for f, n_out, n_in in zip(field, out_shape, in_shape):
        lo = f.start + np.arange(n_out) * f.stride
        masks.append((lo >= 0) & (lo + f.size <= n_in))
    grid = masks[0]
    for m in masks[1:]:
        grid = grid[..., None] & m
    return grid


def top_patches(model: Module, layer: Union[str, Module], images: Any, k: int = 9, *,
                units: Optional[Sequence[int]] = None, per_image: Optional[int] = None,
                inside: bool = False, batch_size: int = 16,
                progress: bool = False) -> TopPatches:
    """For each unit (channel) of `layer`, the k (image, output cell) pairs of largest
    activation over `images` and the receptive-field patches they see.

    images: (N, C, *spatial) float array (NumPy or CuPy) or Tensor, as the network takes
    it (preprocessed); run in batches of `batch_size` in eval mode without a graph, the
    forward pass stopping at the layer. units: channel indices (default all; patches
    take units * k * C * prod(size) values, so pick some for deep layers). per_image:
    at most that many patches of a unit from one image (1: k different images); default
    no limit. inside=True considers only the cells whose receptive field lies within the
    image (no padding: a unit that answers to the image's border is not shown there).
    Ties go to the lower image index, then the lower cell in scan order. ValueError when
    fewer than k (image, cell) pairs are available."""
    data = _image_batch(images)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if per_image is not None and (isinstance(per_image, bool) or per_image < 1):
        raise ValueError(f"per_image must be None or a positive int, got {per_image!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    name, module = nn.get_layer(model, layer)
    field = receptive_field(model, module, data.shape[1:])
    xp = array_module(data)
    n_images = data.shape[0]
    best_vals = best_idx = None
    unit_index = None
    out_shape: Tuple[int, ...] = ()
    training = model.training
    model.eval()
    from tqdm import tqdm

    try:
        with no_grad():
            for first in tqdm(range(0, n_images, batch_size), desc=f"scan {name}",
                              unit="batch", disable=not progress, leave=False):
                batch = data[first:first + batch_size]
                acts = nn.layer_outputs(model, Tensor(batch), [module])[name].data
                if unit_index is None:
                    channels = acts.shape[1]
                    unit_index = np.arange(channels) if units is None else \
                        np.asarray(units, dtype=np.int64).reshape(-1)
                    if unit_index.size == 0 or unit_index.min() < 0 or \
                            unit_index.max() >= channels:
                        raise ValueError(f"units must be channel indices in [0, {channels}) "
                                         f"of layer {name!r}, got {units!r}")
                    out_shape = tuple(acts.shape[2:])
                    excluded = xp.asarray(~_inside(field, out_shape, data.shape[2:])
                                          if inside else np.zeros(out_shape, dtype=bool))
                cells = int(np.prod(out_shape))
                vals = acts[:, xp.asarray(unit_index)].reshape(len(batch), len(unit_index),
                                                               cells)
                vals = xp.moveaxis(vals, 0, 1).astype(np.float64)      # (U, B, cells)
                vals[:, :, excluded.reshape(-1)] = -np.inf
                flat = (xp.arange(len(batch)) + first)[:, None] * cells + xp.arange(cells)
                flat = xp.broadcast_to(flat, vals.shape)
                if per_image is not None and per_image < cells:
                    order = xp.argsort(-vals, axis=2, kind="stable")[:, :, :per_image]
                    vals = xp.take_along_axis(vals, order, axis=2)
                    flat = xp.take_along_axis(flat, order, axis=2)
                vals = vals.reshape(len(unit_index), -1)
                flat = flat.reshape(len(unit_index), -1)
                if best_vals is not None:
                    vals = xp.concatenate([best_vals, vals], axis=1)
                    flat = xp.concatenate([best_idx, flat], axis=1)
                order = xp.argsort(-vals, axis=1, kind="stable")[:, :k]
                best_vals = xp.take_along_axis(vals, order, axis=1)
                best_idx = xp.take_along_axis(flat, order, axis=1)
    finally:
        model.train(training)
    found = int(xp.isfinite(best_vals).sum(axis=1).min())
    if found < k:
        raise ValueError(f"top_patches: only {found} (image, cell) pairs per unit in "
                         f"{n_images} images (layer output {out_shape}, per_image "
                         f"{per_image}, inside {inside}) for k={k}")
    cells = int(np.prod(out_shape))
    image_idx = best_idx // cells
    positions = xp.stack(xp.unravel_index(best_idx % cells, out_shape), axis=-1)
    sources = xp.concatenate([image_idx[..., None], positions], axis=-1).astype(np.int64)
    host = sources.get() if xp is not np else sources
    patches = xp.stack([
        xp.stack([_crop(data[int(s[0])], field, s[1:]) for s in unit_sources])
        for unit_sources in host])
    return TopPatches(name, xp.asarray(unit_index), best_vals, sources, patches, field)


# ----------------------------------------------------------------------------- pictures


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError("writing PNGs needs matplotlib: pip install 'fastconv[examples]'") \
            from None
    # Agg: headless (CI, ssh); an interactive backend would need a display.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_image(image: Any, path: Union[str, "os.PathLike[str]"]) -> None:
    """Write an image (H, W, 3) RGB or (H, W) grey, float in [0, 1] (clipped) or uint8, as
    a PNG at `path`."""
    data = image.get() if is_gpu(image) else np.asarray(image)
    if data.ndim not in (2, 3) or (data.ndim == 3 and data.shape[-1] != 3):
        raise ValueError(f"save_image: image must be (H, W, 3) or (H, W), got shape "
                         f"{data.shape}")
    if data.dtype != np.uint8:
        data = np.clip(data.astype(np.float64), 0.0, 1.0)
    plt = _pyplot()
    plt.imsave(os.fspath(path), data, cmap="gray" if data.ndim == 2 else None,
               vmin=0, vmax=1 if data.dtype != np.uint8 else 255)


def _mosaic(top: TopPatches, value_range: Optional[Tuple[float, float]],
            gap: int) -> np.ndarray:
    """(rows, cols, 3) float image: one row of k patches per unit, `gap` white pixels
    between them, values mapped from value_range (default the patches' min, max) to
    [0, 1]."""
    patches = top.patches.get() if is_gpu(top.patches) else np.asarray(top.patches)
    if patches.ndim != 5:
        raise ValueError(f"save_grid: patches must be (units, k, C, H, W) (2-D images), got "
                         f"shape {patches.shape}")
    units, k, channels, h, w = patches.shape
    low, high = value_range if value_range is not None else (patches.min(), patches.max())
    scaled = (patches.astype(np.float64) - low) / max(float(high - low), 1e-12)
    scaled = np.clip(scaled, 0.0, 1.0)
    if channels == 3:
        cells = scaled.transpose(0, 1, 3, 4, 2)
    else:
        cells = np.repeat(scaled.mean(axis=2)[..., None], 3, axis=-1)
    out = np.ones((units * (h + gap) - gap, k * (w + gap) - gap, 3))
    for u in range(units):
        for j in range(k):
            out[u * (h + gap):u * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = cells[u, j]
    return out


def save_grid(top_patches: Union[TopPatches, Sequence[TopPatches]],
              path: Union[str, "os.PathLike[str]"], *,
              value_range: Optional[Tuple[float, float]] = None,
              title: Optional[str] = None) -> None:
    """Draw top patches as a PNG at `path`: per layer a panel of one row of k patches per
    unit (units x k), panels side by side, each titled with its layer and receptive field.
    top_patches: one TopPatches or a sequence of them (2-D patches; 3 channels are shown
    as RGB, others as their mean in grey). value_range (low, high): the input values shown
    as black and white, e.g. the range of the network's preprocessing; default each
    panel's min and max."""
    panels = [top_patches] if isinstance(top_patches, TopPatches) else list(top_patches)
    if not panels or not all(isinstance(p, TopPatches) for p in panels):
        raise TypeError("save_grid: top_patches must be a TopPatches or a sequence of them")
    plt = _pyplot()
    images = [_mosaic(p, value_range, max(1, p.patches.shape[-1] // 16)) for p in panels]
    # Each patch shown 32 to 64 pixels wide: small fields enlarged, large ones reduced.
    cells = [min(max(p.patches.shape[-1], 32), 64) for p in panels]
    widths = [c * p.patches.shape[1] for c, p in zip(cells, panels)]
    height = max(c * p.patches.shape[0] for c, p in zip(cells, panels))
    # (at least 5 inches wide, so that the titles fit)
    fig, axes = plt.subplots(1, len(panels), squeeze=False,
                             figsize=(max(sum(widths) / 100 + 0.3 * len(panels), 5.0),
                                      height / 100 + 0.9),
                             gridspec_kw={"width_ratios": widths})
    try:
        for ax, panel, image in zip(axes[0], panels, images):
            ax.imshow(image, interpolation="nearest", aspect="equal")
            size = "x".join(str(f.size) for f in panel.receptive_field)
            ax.set_title(f"{panel.layer}\nreceptive field {size}", fontsize=8)
            ax.axis("off")
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(os.fspath(path), dpi=100)
    finally:
        plt.close(fig)
