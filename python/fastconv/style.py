"""Neural style transfer (Gatys, Ecker & Bethge 2015) as the course defines it.

A generated image G keeps the content of an image C and takes the style of an image S by
minimizing, over G's pixels,

    J(G) = alpha * J_content(C, G) + beta * sum_l lambda_l * J_style^l(S, G)

with the activations a^[l] of a pretrained network:

    J_content(C, G) = 1/2 * sum (a^[l](C) - a^[l](G))^2                 (one layer l)
    G^[l]_kk'       = sum_ij a^[l]_ijk a^[l]_ijk'                          (the Gram matrix)
    J_style^l(S, G) = 1 / (2 n_H n_W n_C)^2 * sum_kk' (G^[l](S)_kk' - G^[l](G)_kk')^2

`gram_matrix`, `content_cost` and `style_cost` compute these on Tensors (the gradients
flow back to the activations and from there to the image) on NumPy or CuPy data.
`normalization` selects other published scalings of the same three quantities:

    "course"  the formulas above (the lecture; Gatys et al. for the style term)
    "torch"   PyTorch's "Neural Transfer Using PyTorch" tutorial: G / (n_C n_H n_W), the
              content cost mean((a(C) - a(G))^2), the style cost mean over the n_C x n_C
              entries of (G(S) - G(G))^2
    "keras"   the Keras example neural_style_transfer.py: G unscaled, the content cost
              sum (a(C) - a(G))^2, the style cost sum (G(S) - G(G))^2 / (4 * 3^2 * P^2)
              with P the pixel count of the *image* (`pixels=`) and 3 its channels

Costs of a batch are summed over the batch. When the style activations cover a different
number of cells than the generated ones (a style image of another size), "course" compares
G(S) / (n_H n_W)_S with G(G) / (n_H n_W)_G, which is the formula above when the sizes agree.

`style_transfer` runs the whole optimization with EfficientNet-Lite0 (ImageNet weights,
shipped offline) or VGG-16/19 (weights from a torchvision checkpoint file) as the feature
network. Each network sees its inputs as it was trained on them (`FEATURES[name].mean/std`
on pixels in [0, 1]): the images are optimized in pixel space and normalized inside the
cost, so results do not hinge on a preprocessing convention.
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import nn, optim
from ._backend import array_module, is_gpu, matmul
from .models import efficientnet_lite0, resize
from .models.efficientnet import MEAN_RGB, STDDEV_RGB
from .models.vgg import CONFIGS, make_layers
from .tensor import Tensor, float_tensor, no_grad
from .visualize import save_image

__all__ = ["FEATURES", "NORMALIZATIONS", "Costs", "FeatureSpec", "StyleTransferCost",
           "content_cost", "feature_model", "gram_matrix", "style_cost", "style_transfer"]

NORMALIZATIONS = ("course", "torch", "keras")


# ----------------------------------------------------------------------------- the costs


def _check_normalization(normalization: Any) -> str:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got "
                         f"{normalization!r}")
    return normalization


def _activation(name: str, a: Any, min_ndim: int = 3) -> Tensor:
    """A float Tensor from a Tensor or an array, checked: (N, C, *spatial) by default."""
    a = float_tensor(name, a)
    if a.ndim < min_ndim or min(a.shape, default=1) < 1:
        raise ValueError(f"{name} must be (N, C, *spatial) with at least one spatial dim "
                         f"and no empty dim, got shape {a.shape}")
    return a


def _raw_gram(a: Tensor, scale: float = 1.0) -> Tensor:
    """scale * A A^T per batch entry, A = a reshaped (N, C, cells); the backward pass is
    one product, (g + g^T) A, instead of the two of a generic matmul."""
    n, c = a.shape[:2]
    data = a.data.reshape(n, c, -1)
    xp = array_module(data)
    if xp is np:
        out = np.stack([matmul(data[i], data[i].T) for i in range(n)])
    else:  # pragma: no cover - CuPy
        out = xp.matmul(data, xp.swapaxes(data, 1, 2))
    if scale != 1.0:
        out *= scale
    shape = a.shape

    def backward(g: Any) -> tuple:
        sym = (g + xp.swapaxes(g, 1, 2)) * scale
        if xp is np:
            grad = np.stack([matmul(sym[i], data[i]) for i in range(n)])
        else:  # pragma: no cover - CuPy
            grad = xp.matmul(sym, data)
        return (grad.reshape(shape),)

    return Tensor._make(out, [a], backward, "gram_matrix")


def _cells(a: Tensor) -> int:
    return int(np.prod(a.shape[2:]))


def gram_matrix(a: Any, *, normalization: str = "course") -> Tensor:
    """The style matrix of activations a (N, C, *spatial) (Tensor or array): (N, C, C) with
    G_kk' = sum over the spatial cells of a_k * a_k'. normalization="torch" divides by
    C * cells (the PyTorch tutorial's scaling); "course" and "keras" do not scale.
    Differentiable with respect to a."""
    norm = _check_normalization(normalization)
    a = _activation("a", a)
    scale = 1.0 / (a.shape[1] * _cells(a)) if norm == "torch" else 1.0
    return _raw_gram(a, scale)


def _squared_distance(x: Tensor, y: Tensor, coef: float) -> Tensor:
    """coef * sum((x - y)^2) for x (N, ...) and y of x's shape or with batch 1 (then
    broadcast over x's batch); a 0-d Tensor, differentiable in both."""
    diff = x.data - y.data
    out = array_module(diff).asarray((diff * diff).sum() * coef, dtype=diff.dtype)

    def backward(g: Any) -> tuple:
        gx = diff * (2 * coef * g)
        gy = None
        if y.requires_grad:
            gy = -gx if y.shape == x.shape else -gx.sum(axis=0, keepdims=True)
        return gx, gy

    return Tensor._make(out, [x, y], backward, "squared_distance")


def _pair(name_x: str, x: Any, name_y: str, y: Any, min_ndim: int = 3
          ) -> Tuple[Tensor, Tensor]:
    """(a_G, a_target): same kind and dtype, the target's batch 1 or a_G's."""
    x, y = _activation(name_x, x, min_ndim), _activation(name_y, y, min_ndim)
    if x.dtype != y.dtype or type(x.data) is not type(y.data):
        raise TypeError(f"{name_x} and {name_y} must be arrays of one kind and dtype, got "
                        f"{type(x.data).__name__} {x.dtype} and {type(y.data).__name__} "
                        f"{y.dtype}")
    if x.ndim != y.ndim or (x.ndim and y.shape[0] not in (1, x.shape[0])):
        raise ValueError(f"{name_x} {x.shape} and {name_y} {y.shape} must have the same "
                         "number of dims and batch sizes equal (or 1 for the target)")
    return x, y


def content_cost(a_C: Any, a_G: Any, *, normalization: str = "course") -> Tensor:
    """J_content = 1/2 * sum (a_C - a_G)^2 over every entry (batch included), a 0-d Tensor.
    a_C, a_G: Tensors or arrays of one shape, (N, C, *spatial) as the network gives them
    (any layout works: the sum runs over everything); a_C may have batch 1.
    normalization "torch": the mean over the entries of one image, summed over the batch
    (torch's mse_loss for one image); "keras": the sum without the 1/2."""
    norm = _check_normalization(normalization)
    a_G, a_C = _pair("a_G", a_G, "a_C", a_C, min_ndim=0)
    if a_C.shape[1:] != a_G.shape[1:]:
        raise ValueError(f"a_C {a_C.shape} and a_G {a_G.shape} must have the same shape")
    coef = {"course": 0.5, "keras": 1.0}.get(norm)
    if coef is None:
        coef = 1.0 / int(np.prod(a_G.shape[1:] if a_G.ndim > 1 else a_G.shape))
    return _squared_distance(a_G, a_C, coef)


def _style_scales(norm: str, a_S_shape: Tuple[int, ...], a_G_shape: Tuple[int, ...],
                  pixels: Optional[int]) -> Tuple[float, float, float]:
    """(scale of G(S), scale of G(G), coefficient): the cost is
    coefficient * sum (scale_S * raw G(S) - scale_G * raw G(G))^2."""
    channels = a_G_shape[1]
    cells_s, cells_g = int(np.prod(a_S_shape[2:])), int(np.prod(a_G_shape[2:]))
    if norm == "course":
        if cells_s == cells_g:
            return 1.0, 1.0, 1.0 / (2.0 * cells_g * channels) ** 2
        return 1.0 / cells_s, 1.0 / cells_g, 1.0 / (2.0 * channels) ** 2
    if norm == "torch":
        return 1.0 / (channels * cells_s), 1.0 / (channels * cells_g), 1.0 / channels ** 2
    if pixels is None:
        raise ValueError("style_cost: normalization='keras' divides by the image's pixel "
                         "count: pass pixels=H*W")
    if cells_s != cells_g:
        raise ValueError(f"style_cost: normalization='keras' compares unscaled Gram matrices "
                         f"and needs a_S and a_G of one spatial size, got {a_S_shape} and "
                         f"{a_G_shape}")
    return 1.0, 1.0, 1.0 / (4.0 * 3 ** 2 * float(pixels) ** 2)


def style_cost(a_S: Any, a_G: Any, *, normalization: str = "course",
               pixels: Optional[int] = None) -> Tensor:
    """J_style^l = 1 / (2 n_H n_W n_C)^2 * sum_kk' (G(a_S) - G(a_G))^2 for one layer,
    summed over the batch: a 0-d Tensor. a_S, a_G: (N, C, *spatial) Tensors or arrays
    (n_H n_W = all spatial cells; a_S may have batch 1 and another spatial size, see the
    module docstring). normalization "torch" / "keras" as the module docstring says;
    "keras" needs `pixels`, the generated image's H * W."""
    norm = _check_normalization(normalization)
    a_G, a_S = _pair("a_G", a_G, "a_S", a_S)
    if a_S.shape[1] != a_G.shape[1]:
        raise ValueError(f"a_S {a_S.shape} and a_G {a_G.shape} must have the same channels")
    scale_s, scale_g, coef = _style_scales(norm, a_S.shape, a_G.shape, pixels)
    return _squared_distance(_raw_gram(a_G, scale_g), _raw_gram(a_S, scale_s), coef)


# ----------------------------------------------------------------------------- networks


@dataclass(frozen=True)
class FeatureSpec:
    """How style transfer uses a named network: the default content layer and style
    layers (names of model.named_modules()), and the per-channel mean and std that map
    RGB pixels in [0, 1] to the network's input, (pixel - mean) / std."""

    content_layer: str
    style_layers: Tuple[str, ...]
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]


_IMAGENET_MEAN = (0.485, 0.456, 0.406)   # torchvision's ImageNet normalization
_IMAGENET_STD = (0.229, 0.224, 0.225)

FEATURES: Dict[str, FeatureSpec] = {
    # The block outputs (linear bottlenecks) at the end of stages 1-5, strides 2 to 16,
    # for style; the stride-16 block 8 for content. EfficientNet-Lite0's inputs are
    # (RGB * 255 - 127) / 128 (models.efficientnet).
    "efficientnet_lite0": FeatureSpec(
        "_blocks.8", ("_blocks.0", "_blocks.2", "_blocks.4", "_blocks.7", "_blocks.10"),
        tuple(m / 255.0 for m in MEAN_RGB), tuple(s / 255.0 for s in STDDEV_RGB)),
    # Gatys et al.: relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 for style, relu4_2 for
    # content, as indices of torchvision's `features`.
    "vgg16": FeatureSpec("features.20", ("features.1", "features.6", "features.11",
                                         "features.18", "features.25"),
                         _IMAGENET_MEAN, _IMAGENET_STD),
    "vgg19": FeatureSpec("features.22", ("features.1", "features.6", "features.11",
                                         "features.20", "features.29"),
                         _IMAGENET_MEAN, _IMAGENET_STD),
}


def feature_model(name: str, weights: Union[None, str, "os.PathLike[str]"] = None
                  ) -> Tuple[nn.Module, FeatureSpec]:
    """(model in eval mode, FeatureSpec) for a network of FEATURES.

    "efficientnet_lite0": the ImageNet weights shipped in the `pretrained` extra (weights
    None or "imagenet"), or a state dict file. "vgg16" / "vgg19": torchvision's `features`
    part only (module names "features.0", ...; the classifier is not needed), loaded from
    `weights`, the path of a torchvision checkpoint (e.g. vgg19-dcbb9e9d.pth, read without
    torch; its classifier entries are ignored). Without weights a VGG keeps random
    weights, with a warning (a fallback for trying the code, no substitute for trained
    features)."""
    if name == "efficientnet_lite0":
        model: nn.Module = efficientnet_lite0("imagenet" if weights is None else weights)
    elif name in ("vgg16", "vgg19"):
        model = nn.Sequential(OrderedDict(features=make_layers(CONFIGS[int(name[3:])])))
        if weights is None:
            warnings.warn(f"feature_model({name!r}): no weights given, the network keeps "
                          "random weights (pass the path of a torchvision checkpoint)",
                          stacklevel=2)
        else:
            state = nn.load(weights)
            model.load_state_dict({k: v for k, v in state.items()
                                   if k.startswith("features.")}, strict=True)
    else:
        raise ValueError(f"features must be a fastconv model or one of {sorted(FEATURES)}, "
                         f"got {name!r}")
    return model.eval(), FEATURES[name]


# ----------------------------------------------------------------------------- the problem


class Costs(NamedTuple):
    """The costs of one generated image: total = alpha * content + beta * style, where
    style is already the lambda-weighted sum over the style layers (0-d Tensors)."""

    total: Tensor
    content: Tensor
    style: Tensor


def _channel_vector(name: str, value: Any, like: Any) -> Any:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.shape != (3,):
        raise ValueError(f"{name} must be one number or three (per RGB channel), got "
                         f"{value!r}")
    return array_module(like).asarray(arr.reshape(1, 3, 1, 1), dtype=like.dtype)


def _as_batch(image: Any, dtype: Any) -> Any:
    """(H, W, 3) in [0, 1] -> (1, 3, H, W) in `dtype`, contiguous."""
    xp = array_module(image)
    return xp.ascontiguousarray(image.transpose(2, 0, 1)[None].astype(dtype))


class StyleTransferCost:
    """J(G) for a fixed network, content image and style image.

    model: a fastconv network in eval mode; content, style: (H, W, 3) images in [0, 1]
    (NumPy or CuPy, on the model's device; the style image may have another size);
    content_layer and style_layers: layer names (model.named_modules()); style_weights:
    the lambda_l, by default N / L each with the "course" normalization (N = n_H n_W n_C
    of the content layer, L the number of style layers) and 1 / L otherwise; mean, std:
    the network's input normalization of pixels in [0, 1]. The targets a(C) and G(S) are
    computed once.

    Why N / L: J_content sums the squared differences over the N entries of the content
    layer, while J_style^l, scaled by 1 / (2 n_H n_W n_C)^2, is of the size of one entry.
    With lambda_l = 1 / L the content term outweighs the style term by about N (thousands
    of times): alpha = 10, beta = 40 would return the content image almost unchanged.
    Weighting by N keeps alpha and beta meaningful at every image size. The "torch" and
    "keras" normalizations scale both terms per entry already; use them with their
    tutorials' weights (torch: alpha 1, beta 1e6; keras: alpha 2.5e-8, beta 1e-6).

    Called on the generated image, a Tensor (1, 3, H, W) of pixels in [0, 1] (usually
    requiring grad), it returns the total cost J(G); `costs(image)` returns all three.
    """

    def __init__(self, model: nn.Module, content: Any, style: Any, *, content_layer: str,
                 style_layers: Sequence[str], style_weights: Optional[Sequence[float]] = None,
                 alpha: float = 10.0, beta: float = 40.0, normalization: str = "course",
                 mean: Any = 0.0, std: Any = 1.0) -> None:
        self.model = model
        self.normalization = _check_normalization(normalization)
        if isinstance(style_layers, str) or not len(style_layers):
            raise ValueError(f"style_layers must be a non-empty sequence of layer names, "
                             f"got {style_layers!r}")
        self.content_layer = nn.get_layer(model, content_layer)[0]
        self.style_layers = tuple(nn.get_layer(model, layer)[0] for layer in style_layers)
        if style_weights is not None:
            style_weights = tuple(float(w) for w in style_weights)
            if len(style_weights) != len(self.style_layers):
                raise ValueError(f"style_weights has {len(style_weights)} entries for "
                                 f"{len(self.style_layers)} style layers")
        self.alpha, self.beta = float(alpha), float(beta)
        self.dtype = next((p.data.dtype for p in model.parameters()), np.dtype(np.float32))
        content_batch = _as_batch(_unit_image("content", content), self.dtype)
        style_batch = _as_batch(_unit_image("style", style), self.dtype)
        self.mean = _channel_vector("mean", mean, content_batch)
        self.inv_std = 1.0 / _channel_vector("std", std, content_batch)
        self.pixels = int(content_batch.shape[2] * content_batch.shape[3])
        with no_grad():
            # The content image's activations also give each style layer's size for a
            # generated image of the content's size.
            content_acts = self._features(content_batch, [self.content_layer,
                                                          *self.style_layers])
            style_acts = self._features(style_batch, list(self.style_layers))
            self.content_target = content_acts[self.content_layer].detach()
            # The style targets as Gram matrices, scaled once.
            self._style_targets = []
            for layer in self.style_layers:
                a_S = style_acts[layer]
                scale_s, scale_g, coef = _style_scales(self.normalization, a_S.shape,
                                                       content_acts[layer].shape, self.pixels)
                self._style_targets.append((_raw_gram(a_S, scale_s).detach(), scale_g, coef))
        if style_weights is None:
            share = 1.0 / len(self.style_layers)
            if self.normalization == "course":
                # J_content sums over the content layer's entries while J_style^l is scaled
                # to about one entry: weighting by the entry count puts both on one scale.
                share *= int(np.prod(self.content_target.shape[1:]))
            style_weights = (share,) * len(self.style_layers)
        self.style_weights: Tuple[float, ...] = style_weights

    def _features(self, batch: Any, layers: list) -> Dict[str, Tensor]:
        x = batch if isinstance(batch, Tensor) else Tensor(batch)
        return nn.layer_outputs(self.model, (x - self.mean) * self.inv_std, layers)

    def costs(self, image: Tensor) -> Costs:
        """(total, content, style) costs of the generated image (1, 3, H, W) in [0, 1]."""
        if not isinstance(image, Tensor) or image.ndim != 4 or image.shape[:2] != (1, 3):
            raise ValueError(f"the generated image must be a Tensor (1, 3, H, W), got "
                             f"{getattr(image, 'shape', type(image).__name__)}")
        acts = self._features(image, [self.content_layer, *self.style_layers])
        if acts[self.content_layer].shape != self.content_target.shape:
            raise ValueError(f"the generated image {image.shape} must have the content "
                             f"image's size ({self.content_target.shape} activations at "
                             f"{self.content_layer})")
        content = content_cost(self.content_target, acts[self.content_layer],
                               normalization=self.normalization)
        style = None
        for layer, weight, (target, scale_g, coef) in zip(
                self.style_layers, self.style_weights, self._style_targets):
            term = _squared_distance(_raw_gram(acts[layer], scale_g), target, coef) * weight
            style = term if style is None else style + term
        return Costs(content * self.alpha + style * self.beta, content, style)

    def __call__(self, image: Tensor) -> Tensor:
        return self.costs(image).total


# ----------------------------------------------------------------------------- images


def _unit_image(name: str, image: Any) -> Any:
    """(H, W, 3) float64 in [0, 1] from an RGB(A) or grey image, uint8 or float in [0, 1]
    (NumPy or CuPy)."""
    if not (isinstance(image, np.ndarray) or is_gpu(image)):
        raise TypeError(f"{name} must be a NumPy or CuPy image array, got "
                        f"{type(image).__name__}")
    xp = array_module(image)
    if image.ndim == 2:
        image = xp.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4) or min(image.shape[:2]) < 1:
        raise ValueError(f"{name} must be an (H, W, 3) RGB image (or (H, W) grey, (H, W, 4) "
                         f"RGBA), got shape {tuple(image.shape)}")
    image = image[..., :3]
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0
    if image.dtype.kind != "f":
        raise TypeError(f"{name} must be uint8 (0..255) or float (0..1), got dtype "
                        f"{image.dtype}")
    low, high = float(image.min()), float(image.max())
    if not (low >= 0.0 and high <= 1.0):
        raise ValueError(f"{name} is a float image with values in [{low:g}, {high:g}]; "
                         "float images must lie in [0, 1] (uint8 for 0..255)")
    return image.astype(np.float64)


def _fit(image: Any, size: Tuple[int, int]) -> Any:
    """The centred crop of `image` (H, W, 3) with the aspect ratio of size = (h, w),
    resized to it."""
    height, width = image.shape[:2]
    h, w = size
    if height * w > width * h:   # too tall: crop rows
        crop_h, crop_w = max(1, round(width * h / w)), width
    else:
        crop_h, crop_w = height, max(1, round(height * w / h))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    image = image[top:top + crop_h, left:left + crop_w]
    if image.shape[:2] == (h, w):
        return image
    return resize(image, (h, w))


def _output_size(shape: Tuple[int, ...], size: Any) -> Tuple[int, int]:
    if size is None:
        return int(shape[0]), int(shape[1])
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (int(size), int(size))
    try:
        h, w = (int(n) for n in size)
    except (TypeError, ValueError):
        raise TypeError(f"size must be None, an int or (height, width), got {size!r}") from None
    if h < 16 or w < 16:
        raise ValueError(f"size must be at least 16 x 16 pixels, got {(h, w)}")
    return h, w


# ----------------------------------------------------------------------------- the loop


def style_transfer(content: Any, style: Any, *,
                   features: Union[str, nn.Module] = "efficientnet_lite0",
                   content_layer: Optional[str] = None,
                   style_layers: Optional[Sequence[str]] = None,
                   alpha: float = 10.0, beta: float = 40.0,
                   style_weights: Optional[Sequence[float]] = None,
                   steps: int = 300, optimizer: str = "lbfgs", lr: Optional[float] = None,
                   init: Union[str, Any] = "content",
                   size: Union[None, int, Tuple[int, int]] = None,
                   scales: Sequence[float] = (1.0,), normalization: str = "course",
                   clamp: bool = True, weights: Union[None, str, "os.PathLike[str]"] = None,
                   mean: Any = None, std: Any = None, seed: int = 0, progress: bool = False,
                   save_every: int = 0, save_path: str = "style_{step:04d}.png",
                   callback: Optional[Callable[[int, float], None]] = None) -> Any:
    """Generate an image with the content of `content` and the style of `style` by
    minimizing J(G) = alpha J_content + beta sum_l lambda_l J_style^l over its pixels.

    content, style: (H, W, 3) images (grey and RGBA accepted), uint8 or float in [0, 1],
    NumPy (runs on the CPU) or CuPy (runs on the GPU). The style image is centre-cropped
    to the output's aspect ratio and resized to it.
    features: "efficientnet_lite0" (ImageNet weights), "vgg16" / "vgg19" (`weights`: a
    torchvision checkpoint path; random weights with a warning otherwise), or a fastconv
    model (then name content_layer and style_layers; its input is (pixel - mean) / std
    with mean, std per RGB channel, default 0 and 1). Named networks bring their layers
    and normalization (FEATURES); content_layer, style_layers, mean and std override them.
    style_weights: lambda_l per style layer (default: see StyleTransferCost);
    normalization: "course", "torch" or "keras" (see the module docstring).
    steps: optimizer iterations (per scale); optimizer: "lbfgs" (fastconv.optim.LBFGS,
    lr 1 by default, one iteration per step, history 100, no line search, as the PyTorch
    tutorial) or "adam" (lr 0.02 by default); clamp keeps pixels in [0, 1] after every
    step.
    init: "content" (the content image), "noise" (uniform [0, 1) pixels from `seed`),
    "style", or an (H, W, 3) image.
    size: the output's (height, width); an int gives a square (the content is
    centre-cropped); None keeps the content's size.
    scales: increasing fractions of `size` ending at 1, e.g. (0.5, 1.0): optimize at each
    resolution in turn, starting each from the previous result resized (coarse-to-fine,
    cheaper for large images).
    progress: a tqdm progress bar; save_every > 0 writes the image every that many steps
    to save_path.format(step=...) (PNG); callback(step, cost) after every step with J at
    the start of that step.

    Returns the generated image (height, width, 3) float64 in [0, 1] (NumPy or CuPy, as
    content). The network's parameters and train/eval mode are left as they were.
    """
    content_img = _unit_image("content", content)
    style_img = _unit_image("style", style)
    xp = array_module(content_img)
    if array_module(style_img) is not xp:
        raise TypeError("content and style must both be NumPy or both CuPy arrays")
    if isinstance(features, str):
        model, spec = feature_model(features, weights)
        if xp is not np:  # pragma: no cover - CuPy
            model.to("cuda")
    elif isinstance(features, nn.Module):
        if content_layer is None or style_layers is None:
            raise ValueError("style_transfer: with a model as features, name content_layer "
                             "and style_layers (layers of model.named_modules())")
        model, spec = features, FeatureSpec(content_layer, tuple(style_layers), (0.0,) * 3,
                                            (1.0,) * 3)
    else:
        raise TypeError(f"features must be a model name ({sorted(FEATURES)}) or a fastconv "
                        f"model, got {type(features).__name__}")
    if optimizer not in ("lbfgs", "adam"):
        raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    scales = tuple(float(s) for s in scales)
    if not scales or scales[0] <= 0 or scales[-1] != 1.0 or any(
            b <= a for a, b in zip(scales, scales[1:])):
        raise ValueError(f"scales must increase from above 0 to 1.0, got {scales}")
    out_h, out_w = _output_size(content_img.shape, size)
    content_img = _fit(content_img, (out_h, out_w))
    style_img = _fit(style_img, (out_h, out_w))
    if isinstance(init, str):
        if init not in ("content", "noise", "style"):
            raise ValueError(f"init must be 'content', 'noise', 'style' or an image, got "
                             f"{init!r}")
        if init == "noise":
            noise = np.random.default_rng(seed).random((out_h, out_w, 3))
            start = xp.asarray(noise)
        else:
            start = content_img if init == "content" else style_img
    else:
        start = _fit(_unit_image("init", init), (out_h, out_w))

    training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:   # only the image needs gradients: no weight-gradient products
        p.requires_grad = False
    total_steps = steps * len(scales)
    from tqdm import tqdm

    bar = tqdm(total=total_steps, desc="style transfer", unit="step", disable=not progress,
               leave=False)
    step = 0
    try:
        image = start
        for scale in scales:
            hw = (max(16, round(out_h * scale)), max(16, round(out_w * scale)))
            cost = StyleTransferCost(
                model, _fit(content_img, hw), _fit(style_img, hw),
                content_layer=content_layer or spec.content_layer,
                style_layers=style_layers or spec.style_layers, style_weights=style_weights,
                alpha=alpha, beta=beta, normalization=normalization,
                mean=spec.mean if mean is None else mean, std=spec.std if std is None else std)
            x = Tensor(_as_batch(_fit(image, hw), cost.dtype), requires_grad=True)
            if optimizer == "lbfgs":
                opt: optim.Optimizer = optim.LBFGS([x], lr=1.0 if lr is None else lr,
                                                   max_iter=1, history_size=100)
            else:
                opt = optim.Adam([x], lr=0.02 if lr is None else lr)

            def closure() -> Tensor:
                x.grad = None
                total = cost(x)
                total.backward()
                return total

            for _ in range(steps):
                if optimizer == "lbfgs":
                    value = float(opt.step(closure))
                else:
                    value = float(closure())
                    opt.step()
                if clamp:
                    xp.clip(x.data, 0.0, 1.0, out=x.data)
                step += 1
                bar.update(1)
                bar.set_postfix(cost=f"{value:.4g}", refresh=False)
                if callback is not None:
                    callback(step, value)
                if save_every and step % save_every == 0:
                    save_image(_to_image(x.data), save_path.format(step=step))
            image = _to_image(x.data)
    finally:
        bar.close()
        model.train(training)
        for p, flag in flags:
            p.requires_grad = flag
    return xp.clip(image, 0.0, 1.0)


def _to_image(batch: Any) -> Any:
    """(1, 3, H, W) -> (H, W, 3) float64."""
    return batch[0].transpose(1, 2, 0).astype(np.float64)
