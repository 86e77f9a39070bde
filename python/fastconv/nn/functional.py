"""Differentiable network ops on fastconv.Tensor (torch.nn.functional names and semantics).

Every op takes Tensors (plain arrays are accepted as constants) and returns a Tensor.
Convolution and pooling run fastconv's C++ kernels forward and backward
(conv_backward_input / conv_backward_weight, max_pool indices + max_pool_backward,
avg_pool_backward). Shape mismatches raise ValueError naming the op and the shapes; wrong
argument types raise TypeError.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from .._backend import (array_module, batch_norm_train, batch_norm_train_backward,
                        channel_affine, device_of, float_arrays, is_gpu, matmul)
from ..ops.conv import ConvPlan, conv_plan, flipped
from ..ops.pool import PoolPlan, pool_plan
from ..ops.roi import RoiPlan, roi_plan
from ..tensor import Tensor, is_grad_enabled, normalize_dims

__all__ = ["conv", "max_pool", "avg_pool", "roi_align", "roi_pool", "linear", "relu",
           "relu6", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax",
           "cross_entropy", "nll_loss", "mse_loss", "smooth_l1_loss", "binary_cross_entropy",
           "binary_cross_entropy_with_logits", "dropout", "batch_norm",
           "local_response_norm", "normalize", "flatten", "concat", "cat", "pad"]


def _tensor(op: str, name: str, value: Any, optional: bool = False) -> Optional[Tensor]:
    if value is None:
        if optional:
            return None
        raise TypeError(f"{op}: {name} must be a Tensor or an array, got None")
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray) or is_gpu(value):
        return Tensor(value)
    if isinstance(value, (numbers.Number, list, tuple)) and not isinstance(value, bool):
        return Tensor(value)
    raise TypeError(f"{op}: {name} must be a Tensor or an array, got {type(value).__name__}")


def _float(op: str, name: str, t: Tensor) -> None:
    if t.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be a float tensor, got dtype {t.dtype} "
                        f"(shape {t.shape})")


def _same_dtype(g: Any, like: Any) -> Any:
    return g if g.dtype == like.dtype else g.astype(like.dtype)


# ----------------------------------------------------------------------------- conv / pool


def conv(x: Any, w: Any, bias: Any = None, *, stride: Any = 1, padding: Any = 0,
         dilation: Any = 1, groups: int = 1, flip: bool = False) -> Tensor:
    """N-D convolution (see fastconv.conv): x (N, C, *spatial), w (K, C/groups, *kernel),
    bias (K,) or None. Gradients from conv_backward_input / conv_backward_weight."""
    x, w = _tensor("conv", "x", x), _tensor("conv", "w", w)
    b = _tensor("conv", "bias", bias, optional=True)
    xd, wd, _ = float_arrays("conv", optional=("bias",), x=x.data, w=w.data,
                             bias=None if b is None else b.data)
    plan = conv_plan(xd.shape, wd.shape, xd.dtype, device_of(xd), stride=stride,
                     padding=padding, dilation=dilation, groups=groups)
    return conv_with_plan(plan, x, w, b, flip=flip)


def conv_with_plan(plan: ConvPlan, x: Tensor, w: Tensor, bias: Optional[Tensor] = None,
                   flip: bool = False) -> Tensor:
    """`conv` on a prepared plan (fastconv.ops.conv.conv_plan), as the Conv layers call it."""
    x_data = x.data
    w_eff = flipped(w.data) if flip else w.data
    out = plan.forward(x_data, w_eff, None if bias is None else bias.data)

    def backward(g: Any) -> tuple:
        g = _same_dtype(g, x_data)
        gx = gw = gb = None
        if x.requires_grad:
            gx = plan.backward_input(g, w_eff)
        if w.requires_grad:
            gw = plan.backward_weight(x_data, g)
            if flip:
                gw = flipped(gw)
        if bias is not None and bias.requires_grad:
            gb = g.sum(axis=(0,) + tuple(range(2, g.ndim)))
        return gx, gw, gb

    parents = [x, w] + ([bias] if bias is not None else [])
    return Tensor._make(out, parents, backward, "conv")


def max_pool(x: Any, kernel_size: Any, *, stride: Any = None, padding: Any = 0,
             ceil_mode: bool = False, return_indices: bool = False) -> Any:
    """N-D max pooling (see fastconv.max_pool); the gradient goes to the argmax cells
    through max_pool_backward. With return_indices also returns the int64 indices array."""
    x = _tensor("max_pool", "x", x)
    (data,) = float_arrays("max_pool", x=x.data)
    plan = pool_plan("max", data.shape, data.dtype, device_of(data), kernel_size=kernel_size,
                     stride=stride, padding=padding, ceil_mode=ceil_mode)
    out, idx = pool_with_plan(plan, x, True)
    return (out, idx) if return_indices else out


def avg_pool(x: Any, kernel_size: Any, *, stride: Any = None, padding: Any = 0,
             ceil_mode: bool = False, count_include_pad: bool = True) -> Tensor:
    """N-D average pooling (see fastconv.avg_pool); gradient from avg_pool_backward."""
    x = _tensor("avg_pool", "x", x)
    (data,) = float_arrays("avg_pool", x=x.data)
    plan = pool_plan("avg", data.shape, data.dtype, device_of(data), kernel_size=kernel_size,
                     stride=stride, padding=padding, ceil_mode=ceil_mode,
                     count_include_pad=count_include_pad)
    return pool_with_plan(plan, x)


def pool_with_plan(plan: PoolPlan, x: Tensor, return_indices: bool = False) -> Any:
    """Max or average pooling on a prepared plan (fastconv.ops.pool.pool_plan), as the
    pooling layers call it; max pooling records its indices for the backward pass and,
    with `return_indices`, returns (Tensor, indices)."""
    x_data = x.data
    if plan.kind == "avg":
        return Tensor._make(plan.forward(x_data), [x],
                            lambda g: (plan.backward(_same_dtype(g, x_data)),), "avg_pool")
    y, idx = plan.forward(x_data, return_indices=True)
    out = Tensor._make(y, [x], lambda g: (plan.backward(_same_dtype(g, x_data), idx),),
                       "max_pool")
    return (out, idx) if return_indices else out


def roi_arrays(boxes: Any) -> Any:
    """rois given as a Tensor, an array, or a list of per-image Tensors or arrays, as
    arrays (boxes are constants: no gradient flows to them, as in torchvision)."""
    if isinstance(boxes, Tensor):
        return boxes.data
    if isinstance(boxes, (list, tuple)):
        return [b.data if isinstance(b, Tensor) else b for b in boxes]
    return boxes


def roi_align(input: Any, boxes: Any, output_size: Any, spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """RoI align (see fastconv.roi_align; torchvision.ops.roi_align's signature): input
    (N, C, *spatial), boxes (R, 1 + 2 dims) or a list of per-image boxes -> (R, C,
    *output_size). The gradient reaches input through roi_align_backward."""
    x = _tensor("roi_align", "input", input)
    (data,) = float_arrays("roi_align", x=x.data)
    plan = roi_plan("align", data.shape, data.dtype, device_of(data), output_size=output_size,
                    spatial_scale=spatial_scale, sampling_ratio=sampling_ratio, aligned=aligned)
    return roi_with_plan(plan, x, plan.rois(roi_arrays(boxes)))


def roi_pool(input: Any, boxes: Any, output_size: Any, spatial_scale: float = 1.0) -> Tensor:
    """RoI max pooling (see fastconv.roi_pool; torchvision.ops.roi_pool's signature); the
    gradient goes to the recorded maxima through roi_pool_backward."""
    x = _tensor("roi_pool", "input", input)
    (data,) = float_arrays("roi_pool", x=x.data)
    plan = roi_plan("pool", data.shape, data.dtype, device_of(data), output_size=output_size,
                    spatial_scale=spatial_scale)
    return roi_with_plan(plan, x, plan.rois(roi_arrays(boxes)))


def roi_with_plan(plan: RoiPlan, x: Tensor, rois: Any) -> Tensor:
    """RoI align or pool on a prepared plan (fastconv.ops.roi.roi_plan) and normalized rois
    (plan.rois), as the RoI layers call it."""
    x_data = x.data
    if plan.kind == "align":
        return Tensor._make(plan.forward(x_data, rois), [x],
                            lambda g: (plan.backward(_same_dtype(g, x_data), rois),),
                            "roi_align")
    y, idx = plan.forward(x_data, rois, return_indices=True)
    return Tensor._make(y, [x], lambda g: (plan.backward(_same_dtype(g, x_data), rois, idx),),
                        "roi_pool")


# ----------------------------------------------------------------------------- dense


def linear(x: Any, weight: Any, bias: Any = None) -> Tensor:
    """x @ weight.T + bias with x (..., in), weight (out, in), bias (out,) as torch."""
    x, weight = _tensor("linear", "x", x), _tensor("linear", "weight", weight)
    b = _tensor("linear", "bias", bias, optional=True)
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be (out_features, in_features), got shape "
                         f"{weight.shape}")
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: x shape {x.shape} does not match weight shape "
                         f"{weight.shape}: need in_features = {weight.shape[1]} in the last "
                         "dim of x")
    if b is not None and b.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias must have shape ({weight.shape[0]},) for weight shape "
                         f"{weight.shape}, got {b.shape}")
    # One node: the weight gradient g^T x comes out contiguous in weight's layout (through
    # a transposed-weight node it would be a transposed view that needs a copy).
    x_data, w_data = x.data, weight.data
    rows = x_data.reshape(-1, x_data.shape[-1])
    out = matmul(rows, w_data.T)
    if b is not None:
        out = out + b.data
    out = out.reshape(x_data.shape[:-1] + (w_data.shape[0],))

    def backward(g: Any) -> tuple:
        g_rows = g.reshape(-1, g.shape[-1])
        grads = [matmul(g_rows, w_data).reshape(x_data.shape) if x.requires_grad else None,
                 matmul(g_rows.T, rows) if weight.requires_grad else None]
        if b is not None:
            grads.append(g_rows.sum(axis=0) if b.requires_grad else None)
        return tuple(grads)

    return Tensor._make(out, [x, weight] + ([b] if b is not None else []), backward, "linear")


# ----------------------------------------------------------------------------- activations


def relu(x: Any, inplace: bool = False) -> Tensor:
    """max(x, 0) elementwise (NaN stays NaN, as torch). With `inplace` and nothing recorded
    for backward (no_grad, or x needs no gradient), x's data is overwritten and x returned,
    saving a full-size allocation per layer in inference; otherwise a new Tensor."""
    return _tensor("relu", "x", x).relu(inplace)


def relu6(x: Any, inplace: bool = False) -> Tensor:
    """min(max(x, 0), 6) elementwise (NaN stays NaN), as torch.nn.functional.relu6; the
    gradient passes where 0 < x < 6 (torch's hardtanh rule). `inplace` as in relu: x's data
    is overwritten only when nothing is recorded for backward."""
    x = _tensor("relu6", "x", x)
    xp = array_module(x.data)
    data = x.data
    if not (is_grad_enabled() and x.requires_grad):
        if inplace:
            xp.clip(data, 0, 6, out=data)
            return x
        return Tensor(xp.clip(data, 0, 6))
    mask = (data > 0) & (data < 6)
    return Tensor._make(xp.clip(data, 0, 6), [x], lambda g: (g * mask,), "relu6")


def leaky_relu(x: Any, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """x where x > 0, negative_slope * x elsewhere (torch.nn.functional.leaky_relu); the
    gradient is 1 where x > 0 and negative_slope elsewhere (at 0 too, as torch). `inplace`
    as in relu: x's data is overwritten only when nothing is recorded for backward."""
    op = "leaky_relu"
    x = _tensor(op, "x", x)
    _float(op, "x", x)
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real):
        raise TypeError(f"{op}: negative_slope must be a float, got {negative_slope!r}")
    xp = array_module(x.data)
    data = x.data
    slope = data.dtype.type(negative_slope)
    positive = data > 0
    if not (is_grad_enabled() and x.requires_grad):
        if inplace:
            xp.multiply(data, slope, out=data, where=~positive)
            return x
        return Tensor(xp.where(positive, data, data * slope))
    factor = xp.where(positive, data.dtype.type(1), slope)
    return Tensor._make(data * factor, [x], lambda g: (g * factor,), "leaky_relu")


def sigmoid(x: Any) -> Tensor:
    """1 / (1 + exp(-x)), computed without overflow."""
    x = _tensor("sigmoid", "x", x)
    _float("sigmoid", "x", x)
    return x.sigmoid()


def tanh(x: Any) -> Tensor:
    """tanh elementwise (float NumPy arrays on all of fastconv's threads)."""
    x = _tensor("tanh", "x", x)
    _float("tanh", "x", x)
    return x.tanh()


def _dim(op: str, dim: int, x: Tensor) -> int:
    if not isinstance(dim, numbers.Integral) or isinstance(dim, bool):
        raise TypeError(f"{op}: dim must be an int, got {dim!r}")
    return normalize_dims(op, dim, x.ndim)[0]


def softmax(x: Any, dim: int = -1) -> Tensor:
    """exp(x) / sum(exp(x)) along dim, shifted by the max for stability."""
    x = _tensor("softmax", "x", x)
    _float("softmax", "x", x)
    return x.softmax(_dim("softmax", dim, x))


def log_softmax(x: Any, dim: int = -1) -> Tensor:
    """x - logsumexp(x) along dim (numerically stable)."""
    x = _tensor("log_softmax", "x", x)
    _float("log_softmax", "x", x)
    return x.log_softmax(_dim("log_softmax", dim, x))


# ----------------------------------------------------------------------------- losses


def _reduce(op: str, loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_reduction(op: str, reduction: Any) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got "
                         f"{reduction!r}")


def nll_loss(log_probs: Any, target: Any, reduction: str = "mean",
             ignore_index: int = -100, weight: Any = None) -> Tensor:
    """Negative log likelihood of class indices: log_probs (N, C, *d), target (N, *d) ints
    (or log_probs (C,) with a 0-d target). Targets equal to ignore_index contribute nothing
    (and are left out of the mean). weight: optional per-class weights (C,) (a constant);
    the mean then divides by the summed weights of the targets, as torch."""
    op = "nll_loss"
    lp = _tensor(op, "input", log_probs)
    _float(op, "input", lp)
    _check_reduction(op, reduction)
    t = target.data if isinstance(target, Tensor) else target
    if not isinstance(t, np.ndarray) and not hasattr(t, "__cuda_array_interface__"):
        if isinstance(t, (list, tuple, numbers.Integral)):
            t = np.asarray(t)
        else:
            raise TypeError(f"{op}: target must be an integer array or Tensor, got "
                            f"{type(target).__name__}")
    if t.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold integer class indices, got dtype {t.dtype} "
                        f"(shape {t.shape})")
    unbatched = lp.ndim == 1
    data = lp.data[None] if unbatched else lp.data
    t = t.reshape((1,) + t.shape) if unbatched else t
    if data.ndim < 2 or t.shape != (data.shape[0],) + data.shape[2:]:
        raise ValueError(f"{op}: target shape {tuple(np.shape(target))} does not match input "
                         f"shape {lp.shape}: need (N, *d) for input (N, C, *d)")
    xp = array_module(data)
    classes = data.shape[1]
    valid = t != ignore_index
    if xp.any(valid & ((t < 0) | (t >= classes))):
        bad = t[valid & ((t < 0) | (t >= classes))]
        raise ValueError(f"{op}: target values must be in [0, {classes}) for input shape "
                         f"{lp.shape}, got {int(bad.ravel()[0])}")
    safe = xp.where(valid, t, 0).astype(np.int64)
    picked = xp.take_along_axis(data, xp.expand_dims(safe, 1), axis=1)[:, 0]
    if weight is not None:
        w_arr = _stat_array(op, "weight", weight, classes).astype(data.dtype, copy=False)
        wt = w_arr[safe] * valid
    else:
        wt = valid.astype(data.dtype)
    losses = -picked * wt
    denom = wt.sum()
    if reduction == "none":
        out = losses[0] if unbatched else losses
    elif reduction == "sum":
        out = losses.sum()
    else:
        out = losses.sum() / denom if denom != 0 else xp.asarray(np.nan, dtype=data.dtype)
    out = xp.asarray(out, dtype=data.dtype)

    def backward(g: Any) -> tuple:
        if reduction == "none":
            gl = g[None] if unbatched else g
        elif reduction == "sum":
            gl = xp.broadcast_to(g, t.shape)
        else:
            gl = xp.broadcast_to(g / (denom if denom != 0 else 1), t.shape)
        gl = gl * wt
        grad = xp.zeros(data.shape, dtype=data.dtype)
        xp.put_along_axis(grad, xp.expand_dims(safe, 1), -xp.expand_dims(gl, 1), axis=1)
        return (grad[0] if unbatched else grad,)

    return Tensor._make(out, [lp], backward, "nll_loss")


def cross_entropy(logits: Any, target: Any, reduction: str = "mean",
                  ignore_index: int = -100, weight: Any = None,
                  label_smoothing: float = 0.0) -> Tensor:
    """log_softmax over dim 1 followed by nll_loss (torch semantics).

    logits (N, C) or (N, C, *d) (or (C,)); target integer class indices (N,) / (N, *d)
    as an array or Tensor, or class probabilities of logits' shape (float). weight
    (per-class, constant), ignore_index and label_smoothing as torch.
    """
    op = "cross_entropy"
    x = _tensor(op, "input", logits)
    _float(op, "input", x)
    _check_reduction(op, reduction)
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real):
        raise TypeError(f"{op}: label_smoothing must be a float, got "
                        f"{type(label_smoothing).__name__}")
    eps = float(label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {eps}")
    cdim = 0 if x.ndim == 1 else 1
    classes = x.shape[cdim]
    bshape = (classes,) if x.ndim == 1 else (1, classes) + (1,) * (x.ndim - 2)
    w_arr = None
    if weight is not None:
        w_arr = _stat_array(op, "weight", weight, classes).astype(x.dtype, copy=False)
    t_arr = target.data if isinstance(target, Tensor) else np.asarray(target) \
        if isinstance(target, (list, tuple)) else target
    if getattr(t_arr, "dtype", None) is not None and t_arr.dtype.kind == "f":
        tt = _tensor(op, "target", target)
        if tt.shape != x.shape:
            raise ValueError(f"{op}: probability target shape {tt.shape} must equal input "
                             f"shape {x.shape}")
        if eps:
            tt = tt * (1.0 - eps) + eps / classes
        if w_arr is not None:
            tt = tt * w_arr.reshape(bshape)
        loss = -(tt * log_softmax(x, cdim)).sum(dim=cdim)
        return _reduce(op, loss, reduction)
    ls = log_softmax(x, cdim)
    try:
        nll = nll_loss(ls, target, reduction, ignore_index, w_arr)
    except (ValueError, TypeError) as e:
        raise type(e)(str(e).replace("nll_loss:", f"{op}:", 1)) from None
    if not eps:
        return nll
    t_int = t_arr.reshape(nll.shape if reduction == "none" else t_arr.shape)
    valid = t_int != ignore_index
    wl = ls * w_arr.reshape(bshape) if w_arr is not None else ls
    smooth = -wl.sum(dim=cdim) / classes * valid
    if reduction == "sum":
        smooth = smooth.sum()
    elif reduction == "mean":
        safe = np.where(valid, t_int, 0)
        denom = (w_arr[safe] * valid).sum() if w_arr is not None else valid.sum()
        smooth = smooth.sum() / x.dtype.type(denom)
    return nll * (1.0 - eps) + smooth * eps


def mse_loss(input: Any, target: Any, reduction: str = "mean") -> Tensor:
    """Mean (or sum, or elementwise) squared error; input and target must share a shape."""
    op = "mse_loss"
    x, t = _tensor(op, "input", input), _tensor(op, "target", target)
    _check_reduction(op, reduction)
    if x.shape != t.shape:
        raise ValueError(f"{op}: input shape {x.shape} and target shape {t.shape} differ")
    diff = x - t
    return _reduce(op, diff * diff, reduction)


def _input_and_target(op: str, input: Any, target: Any,
                      reduction: str) -> Tuple[Tensor, Tensor]:
    """The operands of an elementwise loss: a float input and a target of its shape, both
    Tensors, and a valid reduction; a ValueError/TypeError naming the argument otherwise."""
    x, t = _tensor(op, "input", input), _tensor(op, "target", target)
    _float(op, "input", x)
    _check_reduction(op, reduction)
    if t.shape != x.shape:
        raise ValueError(f"{op}: target shape {t.shape} must equal input shape {x.shape}")
    return x, t


def smooth_l1_loss(input: Any, target: Any, reduction: str = "mean",
                   beta: float = 1.0) -> Tensor:
    """Huber-like loss of torch.nn.functional.smooth_l1_loss: per element, with d = input -
    target, 0.5 d^2 / beta where |d| < beta and |d| - 0.5 beta elsewhere (beta = 0: |d|);
    then reduced. Gradients reach input and target (d/beta inside, sign(d) outside)."""
    op = "smooth_l1_loss"
    x, t = _input_and_target(op, input, target, reduction)
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not beta >= 0:
        raise ValueError(f"{op}: beta must be a number >= 0, got {beta!r}")
    xp = array_module(x.data)
    d = x.data - t.data.astype(x.dtype, copy=False)
    size = xp.abs(d)
    b = x.dtype.type(beta)
    inside = size < b
    out = xp.where(inside, 0.5 * d * d / (b if beta else 1), size - 0.5 * b)
    slope = xp.where(inside, d / (b if beta else 1), xp.sign(d))

    def backward(g: Any) -> tuple:
        gx = g * slope
        return gx, -gx

    return _reduce(op, Tensor._make(out.astype(x.dtype, copy=False), [x, t], backward,
                                    "smooth_l1"), reduction)


def binary_cross_entropy(input: Any, target: Any, weight: Any = None,
                         reduction: str = "mean") -> Tensor:
    """Binary cross-entropy of probabilities (torch.nn.functional.binary_cross_entropy):
    per element -weight * (t log(x) + (1 - t) log(1 - x)) with each log clamped at -100,
    as torch, so x = 0 or 1 gives a finite loss; then reduced. input must lie in [0, 1]
    (ValueError otherwise). The input gradient is torch's, weight * (x - t) /
    max(x (1 - x), 1e-12); gradients also reach weight and target (the latter from the
    clamped logs, so finite at x = 0 or 1 where torch's is infinite)."""
    op = "binary_cross_entropy"
    x, t = _input_and_target(op, input, target, reduction)
    xp = array_module(x.data)
    data = x.data
    if data.size and not bool(((data >= 0) & (data <= 1)).all()):
        raise ValueError(f"{op}: every element of input (shape {x.shape}) must be in [0, 1]")
    if t.dtype != x.dtype:
        if t.requires_grad:
            raise TypeError(f"{op}: target has dtype {t.dtype} but input has {x.dtype}")
        t = Tensor(t.data.astype(x.dtype))
    target_data = t.data
    with np.errstate(divide="ignore"):
        log_x = xp.maximum(xp.log(data), -100).astype(data.dtype, copy=False)
        log_1mx = xp.maximum(xp.log(1 - data), -100).astype(data.dtype, copy=False)
    out = -(target_data * log_x + (1 - target_data) * log_1mx)

    def backward(g: Any) -> tuple:
        denom = xp.maximum(data * (1 - data), data.dtype.type(1e-12))
        return g * (data - target_data) / denom, g * (log_1mx - log_x)

    loss = Tensor._make(out, [x, t], backward, "binary_cross_entropy")
    if weight is not None:
        w = _tensor(op, "weight", weight)
        _check_broadcasts(op, "weight", w, x)
        loss = loss * (w if w.dtype == x.dtype or w.requires_grad
                       else Tensor(w.data.astype(x.dtype)))
    return _reduce(op, loss, reduction)


def _check_broadcasts(op: str, name: str, value: Tensor, x: Tensor) -> None:
    """`value` (a per-element weight) must broadcast to x's shape without growing it."""
    try:
        fits = np.broadcast_shapes(value.shape, x.shape) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{op}: {name} shape {value.shape} does not broadcast to input "
                         f"shape {x.shape}")


def _softplus_neg(x: Tensor) -> Tensor:
    """log(1 + exp(-x)) without overflow, with the exact gradient -sigmoid(-x) (also at 0,
    where composing abs and max would give 0)."""
    xp = array_module(x.data)
    data = x.data
    e = xp.exp(-xp.abs(data))
    out = xp.log1p(e) + xp.maximum(-data, 0)
    # sigmoid(-x) = e / (1 + e) for x >= 0 and 1 / (1 + e) for x < 0, e = exp(-|x|).
    sig_neg = xp.where(data >= 0, e, 1) / (1 + e)
    return Tensor._make(out, [x], lambda g: (-g * sig_neg,), "softplus")


def binary_cross_entropy_with_logits(input: Any, target: Any, weight: Any = None,
                                     reduction: str = "mean", pos_weight: Any = None,
                                     ) -> Tensor:
    """Sigmoid + binary cross-entropy in one stable step (torch semantics): per element
    l = weight * [pos_weight * target * softplus(-x) + (1 - target) * softplus(x)], i.e.
    (1 - t) x + (1 + (pos_weight - 1) t) log(1 + exp(-x)), then reduced.

    input (logits) and target (probabilities in [0, 1]) share a shape; weight broadcasts to
    it, pos_weight (the weight of positive examples, per class) broadcasts along the last
    dim. Gradients reach input, target, weight and pos_weight."""
    op = "binary_cross_entropy_with_logits"
    x, t = _input_and_target(op, input, target, reduction)

    def like_input(name: str, value: Tensor) -> Tensor:
        # Constants (0/1 integer labels, Python lists) take the logits' dtype.
        if value.dtype == x.dtype:
            return value
        if value.requires_grad:
            raise TypeError(f"{op}: {name} has dtype {value.dtype} but input has "
                            f"{x.dtype}")
        return Tensor(value.data.astype(x.dtype))

    def broadcasting(name: str, value: Any) -> Tensor:
        v = like_input(name, _tensor(op, name, value))
        _check_broadcasts(op, name, v, x)
        return v

    t = like_input("target", t)
    log_weight: Any = 1.0
    if pos_weight is not None:
        log_weight = (broadcasting("pos_weight", pos_weight) - 1.0) * t + 1.0
    loss = (1.0 - t) * x + log_weight * _softplus_neg(x)
    if weight is not None:
        loss = loss * broadcasting("weight", weight)
    return _reduce(op, loss, reduction)


# ----------------------------------------------------------------------------- regularizers


def dropout(x: Any, p: float = 0.5, training: bool = True, *, mask: Any = None,
            generator: Optional[np.random.Generator] = None) -> Tensor:
    """Inverted dropout: zero each element with probability p and scale the rest by
    1/(1-p). `mask` (bool or 0/1 array of x's shape, 1 = keep) fixes the pattern; otherwise
    it is drawn from `generator` (numpy.random.Generator) or numpy's global RNG. p=0 or
    training=False returns x unchanged."""
    op = "dropout"
    x = _tensor(op, "x", x)
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"{op}: p must be a float, got {type(p).__name__}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: p must be in [0, 1], got {p}")
    if not training or p == 0:
        return x
    xp = array_module(x.data)
    if mask is not None:
        mask = mask.data if isinstance(mask, Tensor) else xp.asarray(mask)
        if mask.shape != x.shape:
            raise ValueError(f"{op}: mask shape {mask.shape} must equal x shape {x.shape}")
        keep = mask.astype(bool)
    elif generator is not None:
        if not isinstance(generator, np.random.Generator):
            raise TypeError(f"{op}: generator must be a numpy.random.Generator, got "
                            f"{type(generator).__name__}")
        keep = xp.asarray(generator.random(x.shape) >= p)
    else:
        keep = xp.asarray(np.random.random_sample(x.shape) >= p)
    scale = 0.0 if p == 1 else 1.0 / (1.0 - p)
    factor = (keep * scale).astype(x.dtype)
    return Tensor._make(x.data * factor, [x], lambda g: (g * factor,), "dropout")


def _stat_array(op: str, name: str, value: Any, channels: int) -> Any:
    if value is None:
        return None
    arr = value.data if isinstance(value, Tensor) else value
    if not isinstance(arr, np.ndarray) and not hasattr(arr, "__cuda_array_interface__"):
        raise TypeError(f"{op}: {name} must be an array or Tensor, got {type(value).__name__}")
    if arr.shape != (channels,):
        raise ValueError(f"{op}: {name} must have shape ({channels},), got {arr.shape}")
    return arr


def batch_norm_scale_shift(running_mean: Any, running_var: Any, weight: Optional[Tensor],
                           bias: Optional[Tensor], eps: float, dtype: Any) -> tuple:
    """Per-channel (scale, shift) of eval-mode batch norm, x * scale + shift, in `dtype`."""
    xp = array_module(running_mean)
    mean = running_mean.astype(dtype, copy=False)
    var = running_var.astype(dtype, copy=False)
    inv_std = (1.0 / xp.sqrt(var + eps)).astype(dtype, copy=False)
    scale = inv_std if weight is None else inv_std * weight.data.astype(dtype, copy=False)
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias.data.astype(dtype, copy=False)
    return scale, shift


def batch_norm(x: Any, running_mean: Any, running_var: Any, weight: Any = None,
               bias: Any = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-5, *, residual: Any = None, relu: bool = False) -> Tensor:
    """Batch normalization over every dim but 1 (torch semantics).

    training=True normalizes with the batch mean and biased variance and, when given,
    updates running_mean / running_var (arrays or Tensors, updated in place) as
    (1 - momentum) * running + momentum * batch, with the unbiased batch variance;
    the backward pass goes through the batch statistics. training=False uses the running
    statistics.

    fastconv's extension, for the end of a residual block: `residual` (x's shape) is added
    to the result and `relu` applies max(., 0) after, as one op (one pass over x each way
    in training on NumPy arrays, and no intermediate kept for backward).
    """
    op = "batch_norm"
    x = _tensor(op, "x", x)
    _float(op, "x", x)
    if x.ndim < 2:
        raise ValueError(f"{op}: x must be (N, C, *spatial), got shape {x.shape}")
    for name, v in (("momentum", momentum), ("eps", eps)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{op}: {name} must be a float, got {type(v).__name__}")
    channels = x.shape[1]
    rm = _stat_array(op, "running_mean", running_mean, channels)
    rv = _stat_array(op, "running_var", running_var, channels)
    w = _tensor(op, "weight", weight, optional=True)
    b = _tensor(op, "bias", bias, optional=True)
    for name, t in (("weight", w), ("bias", b)):
        if t is not None and t.shape != (channels,):
            raise ValueError(f"{op}: {name} must have shape ({channels},) for x shape "
                             f"{x.shape}, got {t.shape}")
    res = _tensor(op, "residual", residual, optional=True)
    if res is not None and (res.shape != x.shape or res.dtype != x.dtype
                            or device_of(res.data) != device_of(x.data)):
        raise ValueError(f"{op}: residual must match x (shape {x.shape}, dtype {x.dtype}, "
                         f"{device_of(x.data)}), got shape {res.shape}, dtype {res.dtype}, "
                         f"{device_of(res.data)}")
    if training:
        out = _batch_norm_training(x, rm, rv, w, b, momentum, eps, res, bool(relu))
    else:
        out = _batch_norm_running(x, rm, rv, w, b, eps)
        if res is not None:
            out = out + res
        if relu:
            out = out.relu()
    return out


def _batch_norm_training(x: Tensor, rm: Any, rv: Any, w: Optional[Tensor],
                         b: Optional[Tensor], momentum: float, eps: float,
                         residual: Optional[Tensor], relu: bool) -> Tensor:
    """batch_norm with the batch statistics as one node: x, the per-channel mean and
    1/std (and the output, for the ReLU's mask) are all the backward pass keeps."""
    data = x.data
    n = data.size // x.shape[1]
    if n <= 1:
        raise ValueError(f"batch_norm: expected more than 1 value per channel when "
                         f"training, got x shape {x.shape}")
    w_data = None if w is None else w.data.astype(data.dtype, copy=False)
    b_data = None if b is None else b.data.astype(data.dtype, copy=False)
    out, mean, var, invstd = batch_norm_train(
        data, w_data, b_data, eps, None if residual is None else residual.data, relu)
    if rm is not None:
        rm *= 1 - momentum
        rm += momentum * mean.astype(rm.dtype, copy=False)
    if rv is not None:
        rv *= 1 - momentum
        rv += momentum * (var * (n / (n - 1))).astype(rv.dtype, copy=False)
    inputs = [(t, t is not None and t.requires_grad) for t in (x, w, b, residual)]

    def backward(g: Any) -> tuple:
        grads = batch_norm_train_backward(g, data, mean, invstd, w_data, out if relu else None,
                                          *(needed for _, needed in inputs))
        return tuple(gr for gr, (t, _) in zip(grads, inputs) if t is not None)

    return Tensor._make(out, [t for t, _ in inputs if t is not None], backward, "batch_norm")


def _batch_norm_running(x: Tensor, rm: Any, rv: Any, w: Optional[Tensor],
                        b: Optional[Tensor], eps: float) -> Tensor:
    """batch_norm with the running statistics (evaluation)."""
    if rm is None or rv is None:
        raise ValueError("batch_norm: running_mean and running_var are needed when not "
                         "training")
    data = x.data
    if not (is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, w, b))):
        # Inference: one per-channel affine map, x * scale + shift, in two passes over x
        # instead of four full-size temporaries.
        scale, shift = batch_norm_scale_shift(rm, rv, w, b, eps, data.dtype)
        return Tensor(channel_affine(data, scale, shift))
    xp = array_module(data)
    bshape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    axes = (0,) + tuple(range(2, x.ndim))
    mean, var = rm.astype(data.dtype, copy=False), rv.astype(data.dtype, copy=False)
    inv_std = (1.0 / xp.sqrt(var + eps)).astype(data.dtype, copy=False)
    xhat = (data - mean.reshape(bshape)) * inv_std.reshape(bshape)
    w_data = None if w is None else w.data.astype(data.dtype, copy=False)
    out = xhat
    if w is not None:
        out = out * w_data.reshape(bshape)
    if b is not None:
        out = out + b.data.astype(data.dtype, copy=False).reshape(bshape)

    def backward(g: Any) -> tuple:
        gw = (g * xhat).sum(axis=axes) if w is not None and w.requires_grad else None
        gb = g.sum(axis=axes) if b is not None and b.requires_grad else None
        gx = None
        if x.requires_grad:
            gxhat = g * w_data.reshape(bshape) if w is not None else g
            gx = gxhat * inv_std.reshape(bshape)
        return tuple(gr for gr, t in ((gx, x), (gw, w), (gb, b)) if t is not None)

    parents = [t for t in (x, w, b) if t is not None]
    return Tensor._make(out, parents, backward, "batch_norm")


def local_response_norm(x: Any, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> Tensor:
    """b_c = a_c * (k + alpha / size * sum_{c' = c - size//2}^{c + (size-1)//2} a_c'^2)^-beta
    over channels (dim 1), as torch.nn.functional.local_response_norm. The channel window
    sum runs on fastconv's avg_pool (and its backward)."""
    op = "local_response_norm"
    x = _tensor(op, "x", x)
    _float(op, "x", x)
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"{op}: size must be a positive int, got {size!r}")
    if x.ndim < 3:
        raise ValueError(f"{op}: x must be (N, C, *spatial) with at least 3 dims, got shape "
                         f"{x.shape}")
    n, c = x.shape[:2]
    rest = int(np.prod(x.shape[2:]))
    sq = (x * x).reshape(n, 1, c, rest)
    avg = avg_pool(sq, (size, 1), stride=1, padding=((size // 2, (size - 1) // 2), (0, 0)),
                   count_include_pad=True)
    div = (avg.reshape(x.shape) * alpha + k) ** beta
    return x / div


def normalize(input: Any, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> Tensor:
    """x / max(||x||_p, eps) along dim (torch.nn.functional.normalize): rows of unit
    p-norm, e.g. the L2-normalized embeddings of a FaceNet head. p > 0 (inf: the largest
    magnitude). Where the norm is below eps the gradient is that of x / eps, and the
    norm's own gradient is 0 at zero (no NaN)."""
    op = "normalize"
    x = _tensor(op, "input", input)
    _float(op, "input", x)
    order = float(p) if isinstance(p, numbers.Real) and not isinstance(p, bool) else None
    if order is None or not order > 0:
        raise ValueError(f"{op}: p must be a number > 0 (or inf), got {p!r}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0:
        raise ValueError(f"{op}: eps must be a number >= 0, got {eps!r}")
    d = _dim(op, dim, x)
    xp = array_module(x.data)
    data = x.data
    magnitude = xp.abs(data)
    if order == np.inf:
        norm = magnitude.max(axis=d, keepdims=True) if data.shape[d] else \
            xp.zeros(data.shape[:d] + (1,) + data.shape[d + 1:], data.dtype)
    else:
        norm = (magnitude ** order).sum(axis=d, keepdims=True) ** (1 / order)
    norm = norm.astype(data.dtype, copy=False)
    unclamped = norm >= eps
    denom = xp.where(unclamped, norm, data.dtype.type(eps))
    out = data / denom

    def backward(g: Any) -> tuple:
        g = _same_dtype(g, data)
        if order == np.inf:
            peak = (magnitude == norm) & unclamped
            share = peak / xp.maximum(peak.sum(axis=d, keepdims=True), 1)
            d_norm = xp.sign(data) * share
        else:
            # d||x||_p / dx = sign(x) |x|^(p-1) / ||x||_p^(p-1); 0 where x = 0 for p < 1.
            with np.errstate(divide="ignore", invalid="ignore"):
                power = xp.where(magnitude > 0, magnitude ** (order - 1), 0)
                d_norm = xp.where(unclamped, xp.sign(data) * power
                                  / xp.where(unclamped, norm, 1) ** (order - 1), 0)
        inner = (g * data).sum(axis=d, keepdims=True) / (denom * denom)
        return ((g / denom - inner * d_norm).astype(data.dtype, copy=False),)

    return Tensor._make(out, [x], backward, "normalize")


# ----------------------------------------------------------------------------- shapes


def flatten(x: Any, start_dim: int = 1, end_dim: int = -1) -> Tensor:
    """Merge dims start_dim..end_dim into one (torch.flatten)."""
    return _tensor("flatten", "x", x).flatten(start_dim, end_dim)


def concat(tensors: Sequence[Any], dim: int = 1) -> Tensor:
    """Join tensors along dim (their other dims must agree)."""
    op = "concat"
    if isinstance(tensors, (Tensor, np.ndarray)) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{op}: tensors must be a list or tuple of Tensors, got "
                        f"{type(tensors).__name__}")
    if not tensors:
        raise ValueError(f"{op}: needs at least one tensor")
    ts = [_tensor(op, f"tensors[{i}]", t) for i, t in enumerate(tensors)]
    first = ts[0]
    d = _dim(op, dim, first)
    for t in ts[1:]:
        if t.ndim != first.ndim or t.shape[:d] + t.shape[d + 1:] != \
                first.shape[:d] + first.shape[d + 1:]:
            raise ValueError(f"{op}: shapes {[u.shape for u in ts]} differ outside dim {dim}")
    xp = array_module(first.data)
    out = xp.concatenate([t.data for t in ts], axis=d)
    bounds = np.cumsum([t.shape[d] for t in ts])[:-1]

    def backward(g: Any) -> tuple:
        return tuple(xp.split(g, bounds, axis=d))

    return Tensor._make(out, ts, backward, "concat")


cat = concat


def pad(x: Any, pad: Sequence[int], value: float = 0.0) -> Tensor:
    """Constant padding with torch's pad tuple: (last_before, last_after, prev_before, ...)
    covering the last len(pad) // 2 dims. Pads must be nonnegative."""
    op = "pad"
    x = _tensor(op, "x", x)
    try:
        widths = [int(p) for p in pad]
        if any(isinstance(p, bool) or not isinstance(p, numbers.Integral) for p in pad):
            raise TypeError
    except TypeError:
        raise TypeError(f"{op}: pad must be a sequence of ints, got {pad!r}") from None
    if len(widths) % 2 or len(widths) // 2 > x.ndim:
        raise ValueError(f"{op}: pad {tuple(widths)} must have an even length of at most "
                         f"2 * ndim for x shape {x.shape}")
    if any(p < 0 for p in widths):
        raise ValueError(f"{op}: negative padding {tuple(widths)} is not supported (x shape "
                         f"{x.shape})")
    pairs = [(0, 0)] * x.ndim
    for i in range(len(widths) // 2):
        pairs[x.ndim - 1 - i] = (widths[2 * i], widths[2 * i + 1])
    xp = array_module(x.data)
    out = xp.pad(x.data, pairs, mode="constant", constant_values=value)
    index = tuple(slice(b, b + s) for (b, _), s in zip(pairs, x.shape))
    return Tensor._make(out, [x], lambda g: (g[index],), "pad")
