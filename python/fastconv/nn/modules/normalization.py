"""Normalization layers: BatchNorm1d/2d/3d and LocalResponseNorm."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..._backend import array_module, channel_affine
from ...tensor import Parameter, Tensor
from .. import functional as F
from .activation import ReLU, ReLU6
from .module import Module, check_rank, runs_plain


class BatchNormNd(Module):
    """Batch normalization over (N, *spatial) per channel of x (N, C, *spatial).

    Training (or track_running_stats=False) normalizes with the batch statistics and, when
    tracking, updates running_mean/running_var (unbiased variance) with `momentum`
    (None: cumulative average) and counts num_batches_tracked, as torch; eval normalizes
    with the running statistics.
    """

    ranks: Tuple[int, ...] = ()
    what = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=np.float32))
            self.bias = Parameter(np.zeros(num_features, dtype=np.float32))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=np.float32))
            self.register_buffer("running_var", np.ones(num_features, dtype=np.float32))
            self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def forward(self, x: Tensor) -> Tensor:
        check_rank(x, self.ranks, self.what)
        if x.shape[1] != self.num_features:
            raise ValueError(f"expected {self.num_features} channels, got input shape "
                             f"{tuple(x.shape)}")
        return self._normalize(x)

    def _normalize(self, x: Tensor, residual: Optional[Tensor] = None,
                   relu: bool = False) -> Tensor:
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            use_batch_stats, momentum, self.eps, residual=residual, relu=relu)

    def takes_activation(self, module: Module) -> bool:
        """Whether forward_then can fuse `module` (an nn.ReLU or nn.ReLU6 without forward
        hooks) into this layer's pass: nn.Sequential then runs the pair as one op."""
        return type(module) in (ReLU, ReLU6) and not module._forward_hooks

    def forward_then(self, x: Tensor, residual: Optional[Tensor] = None,
                     activation: Optional["Module"] = None) -> Tensor:
        """activation(self(x) + residual), residual and activation optional, as one op where
        the pieces allow (no forward hooks on self or activation, an nn.ReLU activation, a
        residual of x's shape, dtype and device): in training (batch statistics) one node
        of F.batch_norm with its `residual` and `relu`; in inference on NumPy float arrays
        (eval mode, running statistics, nothing recorded; nn.ReLU6 allowed too, as an
        in-place cap at 6) one pass over x whose results are bitwise those of the separate
        ops. Otherwise the ops one after another."""
        plain_parts = (not self._forward_hooks and isinstance(x, Tensor)
                       and (activation is None or not activation._forward_hooks)
                       and (residual is None or (type(residual.data) is type(x.data)
                                                 and residual.shape == x.shape
                                                 and residual.dtype == x.dtype)))
        if (plain_parts and (self.training or self.running_mean is None)
                and (activation is None or type(activation) is ReLU)):
            check_rank(x, self.ranks, self.what)
            if x.shape[1] != self.num_features:
                raise ValueError(f"expected {self.num_features} channels, got input shape "
                                 f"{tuple(x.shape)}")
            return self._normalize(x, residual, activation is not None)
        fusable = (plain_parts and runs_plain(x, self.weight, self.bias, residual)
                   and not self.training and self.running_mean is not None
                   and x.ndim >= 2 and x.shape[1] == self.num_features
                   and (activation is None or type(activation) in (ReLU, ReLU6)))
        if not fusable:
            out = self(x)
            if residual is not None:
                out = out + residual
            return out if activation is None else activation(out)
        check_rank(x, self.ranks, self.what)
        scale, shift = F.batch_norm_scale_shift(self.running_mean, self.running_var,
                                                self.weight, self.bias, self.eps, x.dtype)
        out = channel_affine(x.data, scale, shift, None if residual is None else residual.data,
                             activation is not None)
        if type(activation) is ReLU6:
            array_module(out).minimum(out, 6, out=out)
        return Tensor(out)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(BatchNormNd):
    """Batch norm of x (N, C) or (N, C, L) per channel C."""

    ranks = (2, 3)
    what = "(N, C) or (N, C, L)"


class BatchNorm2d(BatchNormNd):
    """Batch norm of x (N, C, H, W) per channel C."""

    ranks = (4,)
    what = "(N, C, H, W)"


class BatchNorm3d(BatchNormNd):
    """Batch norm of x (N, C, D, H, W) per channel C."""

    ranks = (5,)
    what = "(N, C, D, H, W)"


class LocalResponseNorm(Module):
    """AlexNet's cross-channel normalization of x (N, C, *spatial), same shape out:
    b_c = a_c / (k + alpha / size * sum over `size` neighbouring channels of a^2) ** beta."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75,
                 k: float = 1.0) -> None:
        super().__init__()
        self.size = size
        self.alpha = alpha
        self.beta = beta
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
