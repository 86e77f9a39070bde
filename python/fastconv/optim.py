"""Optimizers and learning-rate schedules with torch.optim semantics.

`SGD` and `Adam` follow PyTorch's single-tensor (non-foreach, non-fused) update formulas
operation by operation, so a model trained here and the same model trained with
`torch.optim` on the same gradients stay together to rounding. `LBFGS` is torch's L-BFGS
(the minFunc port, with its optional strong Wolfe line search) step for step: the same
closure protocol, history, stopping tests and scalar arithmetic in the parameters' dtype.
`StepLR` and `CosineAnnealingLR` use torch's recursive ("chainable") form for the same
reason: the closed form rounds differently.

Parameters are any objects with a NumPy array `.data`, a `.grad` that is a NumPy array or
None, and `.requires_grad` (fastconv.Tensor / nn.Parameter qualify). `.data` is updated in
place so that views and references to the array held elsewhere (a module's state_dict,
a test) see the new values, and float32 parameters stay float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from numbers import Integral, Real
from typing import Any

import numpy as np

from ._backend import adam_step, array_module, sgd_step, steps_in_place
from .tensor import enable_grad

__all__ = ["SGD", "Adam", "CosineAnnealingLR", "LBFGS", "Optimizer", "StepLR"]

ParamGroup = dict[str, Any]


class _ParamState(MutableMapping):
    """Per-parameter state keyed by parameter identity.

    torch keys optimizer.state by tensor, which works because torch.Tensor hashes by id.
    A parameter class here may define elementwise `__eq__` (and so lose `__hash__`), so the
    mapping keys on id() itself and keeps the parameter alive to keep that id valid.
    """

    def __init__(self) -> None:
        self._items: dict[int, tuple[Any, dict[str, Any]]] = {}

    def __getitem__(self, param: Any) -> dict[str, Any]:
        try:
            return self._items[id(param)][1]
        except KeyError:
            raise KeyError(param) from None

    def __setitem__(self, param: Any, value: dict[str, Any]) -> None:
        self._items[id(param)] = (param, value)

    def __delitem__(self, param: Any) -> None:
        try:
            del self._items[id(param)]
        except KeyError:
            raise KeyError(param) from None

    def __iter__(self) -> Iterator[Any]:
        return (param for param, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"_ParamState({len(self)} parameters)"


def _check_number(name: str, value: Any) -> float:
    # bool is a Real subclass; True as a learning rate is almost surely a mistake.
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _check_nonnegative(name: str, value: Any) -> float:
    v = _check_number(name, value)
    # `not v >= 0` also rejects NaN, which `v < 0` would let through.
    if not v >= 0.0:
        raise ValueError(f"Invalid {name} value: {value} ({name} must be >= 0)")
    return v


def _check_param(p: Any) -> None:
    data = getattr(p, "data", None)
    if not (isinstance(data, np.ndarray) or hasattr(data, "__cuda_array_interface__")):
        raise TypeError(
            "params must be an iterable of parameters (objects with a NumPy or CuPy array "
            ".data) "
            f"or of dicts; got an element of type {type(p).__name__}"
        )
    if not np.issubdtype(data.dtype, np.floating):
        raise TypeError(f"params must hold floating-point arrays, got dtype {data.dtype}")


class Optimizer:
    """Base class: parameter groups, per-parameter state and zero_grad.

    Subclasses list their hyper-parameters in `defaults`, validate a group in
    `_check_group` and implement `step`.
    """

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self.state: MutableMapping = _ParamState()
        self.param_groups: list[ParamGroup] = []

        # A lone parameter is not an iterable of parameters; torch rejects it the same way.
        if hasattr(params, "data") or isinstance(params, (dict, str, bytes)):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of "
                f"parameters or dicts, but got {type(params).__name__}"
            )
        if isinstance(params, (set, frozenset)):
            # Set order changes between runs, and with it the meaning of saved state.
            raise TypeError("optimizer parameters need to be organized in ordered collections")
        try:
            groups = list(params)
        except TypeError:
            raise TypeError(
                "params argument given to the optimizer should be an iterable of "
                f"parameters or dicts, but got {type(params).__name__}"
            ) from None
        if len(groups) == 0:
            raise ValueError("optimizer got an empty params list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group: ParamGroup) -> None:
        """Add a group of parameters with its own hyper-parameters (defaults fill the rest)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("param_group must have a 'params' entry")
        params = param_group["params"]
        if hasattr(params, "data"):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            # Set order changes between runs, and with it the meaning of saved state.
            raise TypeError("optimizer parameters need to be organized in ordered collections")
        else:
            params = list(params)
        if len(params) == 0:
            raise ValueError("optimizer got an empty params list")
        for p in params:
            _check_param(p)

        seen = {id(p) for g in self.param_groups for p in g["params"]}
        ids = [id(p) for p in params]
        if len(set(ids)) != len(ids):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        if seen.intersection(ids):
            raise ValueError("some parameters appear in more than one parameter group")

        group = dict(param_group)
        group["params"] = params
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._check_group(group)
        self.param_groups.append(group)

    def _check_group(self, group: ParamGroup) -> None:
        raise NotImplementedError

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of all optimized parameters.

        As in torch, the default sets `.grad = None`, so `step` skips a parameter until a
        new gradient arrives; `set_to_none=False` zeroes the arrays in place instead.
        """
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad[...] = 0

    def step(self) -> None:
        """Update every parameter that has a gradient."""
        raise NotImplementedError

    def _split_fused(self, group: ParamGroup, state_keys: tuple[str, ...]
                     ) -> tuple[list[list[tuple[Any, Any]]], list[tuple[Any, Any]]]:
        """The (parameter, gradient) pairs of `group` that have a gradient: those the fused
        C++ steps can update (with their state arrays under `state_keys`, where present,
        of the parameter's layout too, as a loaded state dict may not be), one list per
        dtype, and the rest."""
        fused: dict[Any, list[tuple[Any, Any]]] = {}
        rest = []
        for p in group["params"]:
            g = self._grad(p)
            if g is None:
                continue
            state = self.state.get(p, {})
            if steps_in_place(p.data, g) and all(
                    state.get(key) is None or steps_in_place(p.data, state[key])
                    for key in state_keys):
                fused.setdefault(p.data.dtype, []).append((p, g))
            else:
                rest.append((p, g))
        return list(fused.values()), rest

    @staticmethod
    def _grad(p: Any) -> np.ndarray | None:
        g = p.grad
        if g is None:
            return None
        g = array_module(p.data).asarray(g)
        if g.shape != p.data.shape:
            raise ValueError(
                f"gradient shape {g.shape} does not match parameter shape {p.data.shape}"
            )
        # State and update arithmetic stay in the parameter dtype, as in torch.
        return g.astype(p.data.dtype, copy=False)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and L2 decay.

    Matches torch.optim.SGD with dampening=0: the momentum buffer starts as the first
    gradient (not zero), Nesterov uses d = g + momentum * buf, and weight decay is added
    to the gradient before momentum.
    """

    def __init__(
        self,
        params: Iterable[Any] | Iterable[ParamGroup],
        lr: float,
        momentum: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": 0,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
        }
        # Check the constructor's values even when every group overrides them.
        self._check_group(defaults)
        super().__init__(params, defaults)

    def _check_group(self, group: ParamGroup) -> None:
        _check_nonnegative("lr", group["lr"])
        momentum = _check_nonnegative("momentum", group["momentum"])
        dampening = _check_nonnegative("dampening", group["dampening"])
        _check_nonnegative("weight_decay", group["weight_decay"])
        if not isinstance(group["nesterov"], (bool, np.bool_)):
            raise TypeError(f"nesterov must be a bool, got {type(group['nesterov']).__name__}")
        if group["nesterov"] and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum requires a momentum > 0 and zero dampening")

    def step(self) -> None:
        """Take one SGD step for every parameter whose `.grad` is not None: contiguous
        NumPy parameters in one fused C++ pass per dtype, the others with array ops (the
        same arithmetic)."""
        for group in self.param_groups:
            lr = group["lr"]
            momentum = group["momentum"]
            dampening = group["dampening"]
            weight_decay = group["weight_decay"]
            nesterov = group["nesterov"]
            fused, rest = self._split_fused(
                group, ("momentum_buffer",) if momentum != 0 else ())
            for pairs in fused:
                buffers, fresh = [], []
                if momentum != 0:
                    for p, _ in pairs:
                        state = self.state.setdefault(p, {})
                        fresh.append(state.get("momentum_buffer") is None)
                        if fresh[-1]:
                            state["momentum_buffer"] = np.empty_like(p.data)
                        buffers.append(state["momentum_buffer"])
                sgd_step([p.data for p, _ in pairs], [g for _, g in pairs], buffers, fresh,
                         lr, momentum, dampening, weight_decay, nesterov)
            for p, g in rest:
                if weight_decay != 0:
                    # A new array: the caller's .grad must not change.
                    g = g + weight_decay * p.data
                if momentum != 0:
                    state = self.state.setdefault(p, {})
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = g.copy()
                        state["momentum_buffer"] = buf
                    else:
                        buf *= momentum
                        buf += (1 - dampening) * g
                    g = g + momentum * buf if nesterov else buf
                p.data -= lr * g


class Adam(Optimizer):
    """Adam with bias correction and L2 weight decay added to the gradient.

    Matches torch.optim.Adam (amsgrad=False, not decoupled, single-tensor path):
    m = lerp(m, g, 1 - beta1), v = beta2 * v + (1 - beta2) * g * g,
    p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps).
    """

    def __init__(
        self,
        params: Iterable[Any] | Iterable[ParamGroup],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        self._check_group(defaults)
        super().__init__(params, defaults)

    def _check_group(self, group: ParamGroup) -> None:
        _check_nonnegative("lr", group["lr"])
        _check_nonnegative("eps", group["eps"])
        _check_nonnegative("weight_decay", group["weight_decay"])
        betas = group["betas"]
        try:
            n = len(betas)
        except TypeError:
            raise TypeError(f"betas must be a pair of floats, got {type(betas).__name__}") from None
        if n != 2:
            raise ValueError(f"betas must be a pair of floats, got {n} values")
        for i, beta in enumerate(betas):
            b = _check_number(f"betas[{i}]", beta)
            if not 0.0 <= b < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i} (betas[{i}]): {beta}; "
                                 "must be in [0, 1)")

    def step(self) -> None:
        """Take one Adam step for every parameter whose `.grad` is not None: contiguous
        NumPy parameters in one fused C++ pass per dtype, the others with array ops (the
        same arithmetic)."""
        for group in self.param_groups:
            lr = group["lr"]
            beta1, beta2 = group["betas"]
            eps = group["eps"]
            weight_decay = group["weight_decay"]
            fused, rest = self._split_fused(group, ("exp_avg", "exp_avg_sq"))
            for pairs in fused:
                states = [self._adam_state(p) for p, _ in pairs]
                for state in states:
                    state["step"] += 1
                adam_step([p.data for p, _ in pairs], [g for _, g in pairs],
                          [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                          [s["step"] for s in states], lr, beta1, beta2, eps, weight_decay)
            for p, g in rest:
                state = self._adam_state(p)
                exp_avg: np.ndarray = state["exp_avg"]
                exp_avg_sq: np.ndarray = state["exp_avg_sq"]
                state["step"] += 1
                step = state["step"]

                if weight_decay != 0:
                    g = g + weight_decay * p.data

                _lerp_(exp_avg, g, 1 - beta1)
                exp_avg_sq *= beta2
                exp_avg_sq += (1 - beta2) * (g * g)

                bias_correction1 = 1 - beta1**step
                bias_correction2 = 1 - beta2**step
                step_size = lr / bias_correction1
                bias_correction2_sqrt = bias_correction2**0.5

                denom = np.sqrt(exp_avg_sq)
                denom /= bias_correction2_sqrt
                denom += eps
                p.data -= step_size * (exp_avg / denom)

    def _adam_state(self, p: Any) -> dict:
        state = self.state.setdefault(p, {})
        if not state:
            state["step"] = 0
            xp = array_module(p.data)
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        return state


def _lerp_(start: np.ndarray, end: np.ndarray, weight: float) -> None:
    """start += weight * (end - start) in place, rounding like torch.lerp.

    torch switches to the form anchored at `end` for weight >= 0.5 so that weight = 1 gives
    `end` exactly; custom betas with beta1 <= 0.5 take that branch.
    """
    if abs(weight) < 0.5:
        start += weight * (end - start)
    else:
        diff = end - start
        diff *= 1 - weight
        np.subtract(end, diff, out=start)


# ----------------------------------------------------------------------------- L-BFGS
#
# A transcription of torch.optim.LBFGS (torch/optim/lbfgs.py, itself a port of minFunc and
# of torch7's optim.lbfgs / lswolfe / polyinterp): the same branches in the same order, so
# that a run here and a run in torch on the same problem take the same steps. Scalars that
# torch keeps as 0-d tensors (dot products, H_diag, ro, the first step length) are NumPy
# scalars of the parameters' dtype here, so float32 runs round as torch's do.


def _cubic_interpolate(x1: Any, f1: Any, g1: Any, x2: Any, f2: Any, g2: Any,
                       bounds: tuple | None = None) -> Any:
    """The minimizer of the cubic through (x1, f1, g1) and (x2, f2, g2), clipped to
    `bounds` (default the interval between the points); its midpoint when the cubic has no
    real minimizer."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = d2_square**0.5
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe(obj_func: Callable, x: list, t: Any, d: Any, f: float, g: Any, gtd: Any,
                  c1: float = 1e-4, c2: float = 0.9, tolerance_change: float = 1e-9,
                  max_ls: int = 25) -> tuple:
    """Line search along d for a step t meeting the strong Wolfe conditions (sufficient
    decrease c1, curvature c2): bracketing, then zoom by cubic interpolation. Returns
    (f(t), grad(t), t, function evaluations)."""
    xp = array_module(d)
    d_norm = xp.abs(d).max()
    g = g.copy()
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = g_new.dot(d)

    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket = [t_prev, t]
            bracket_f = [f_prev, f_new]
            bracket_g = [g_prev, g_new.copy()]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket = [t_prev, t]
            bracket_f = [f_prev, f_new]
            bracket_g = [g_prev, g_new.copy()]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        # Extrapolate: a cubic step between 1.01 t and 10 t.
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
                               bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new.copy(), gtd_new
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1

    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]

    # Zoom: shrink the bracket until a point meets the conditions.
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0],
                               bracket[1], bracket_f[1], bracket_gtd[1])
        # A trial too close to an end of the bracket twice in a row (or outside it) moves
        # to 10% of the bracket's length from that end.
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                if abs(t - max(bracket)) < abs(t - min(bracket)):
                    t = max(bracket) - eps
                else:
                    t = min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False

        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1

        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            # Not enough decrease, or not below the low end: the new high end.
            bracket[high_pos] = t
            bracket_f[high_pos] = f_new
            bracket_g[high_pos] = g_new.copy()
            bracket_gtd[high_pos] = gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos] = bracket[low_pos]
                bracket_f[high_pos] = bracket_f[low_pos]
                bracket_g[high_pos] = bracket_g[low_pos]
                bracket_gtd[high_pos] = bracket_gtd[low_pos]
            bracket[low_pos] = t
            bracket_f[low_pos] = f_new
            bracket_g[low_pos] = g_new.copy()
            bracket_gtd[low_pos] = gtd_new

    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"Invalid {name} value: {value} ({name} must be >= 0)")
    return int(value)


class LBFGS(Optimizer):
    """Limited-memory BFGS, torch.optim.LBFGS's algorithm and semantics.

    `step(closure)` runs up to `max_iter` iterations (at most `max_eval` evaluations of the
    closure), each along the two-loop L-BFGS direction built from the last `history_size`
    (s, y) pairs, with a fixed step `lr` (the first iteration ever scales it by
    min(1, 1 / ||g||_1)) or, with line_search_fn="strong_wolfe", a step meeting the strong
    Wolfe conditions (c1 = 1e-4, c2 = 0.9). It stops early when the largest gradient entry
    is at most `tolerance_grad`, or when the step, the directional derivative or the change
    of the loss falls below `tolerance_change`. The history persists across step() calls.

    closure: a function that clears the gradients, evaluates the objective, calls
    backward() and returns the loss (a one-element Tensor or a float); it runs with grad
    mode on. step() returns the closure's first result. One parameter group only: the
    parameters are treated as one flat vector. Memory: history_size + 3 copies of it.
    """

    def __init__(self, params: Iterable[Any] | Iterable[ParamGroup], lr: float = 1,
                 max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9,
                 history_size: int = 100, line_search_fn: str | None = None) -> None:
        if max_eval is None:
            max_eval = _check_count("max_iter", max_iter) * 5 // 4
        defaults = {"lr": lr, "max_iter": max_iter, "max_eval": max_eval,
                    "tolerance_grad": tolerance_grad, "tolerance_change": tolerance_change,
                    "history_size": history_size, "line_search_fn": line_search_fn}
        self._check_group(defaults)
        super().__init__(params, defaults)
        self._params: list = self.param_groups[0]["params"]

    def add_param_group(self, param_group: ParamGroup) -> None:
        if self.param_groups:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        super().add_param_group(param_group)

    def _check_group(self, group: ParamGroup) -> None:
        _check_nonnegative("lr", group["lr"])
        _check_count("max_iter", group["max_iter"])
        _check_count("max_eval", group["max_eval"])
        _check_nonnegative("tolerance_grad", group["tolerance_grad"])
        _check_nonnegative("tolerance_change", group["tolerance_change"])
        if _check_count("history_size", group["history_size"]) < 1:
            raise ValueError(f"Invalid history_size value: {group['history_size']} "
                             "(history_size must be >= 1)")
        if group["line_search_fn"] not in (None, "strong_wolfe"):
            raise ValueError(f"line_search_fn must be None or 'strong_wolfe', got "
                             f"{group['line_search_fn']!r}")

    def _gather_flat_grad(self) -> Any:
        xp = array_module(self._params[0].data)
        views = []
        for p in self._params:
            g = self._grad(p)
            views.append(xp.zeros(p.data.size, dtype=p.data.dtype) if g is None
                         else g.reshape(-1))
        return xp.concatenate(views)

    def _add_grad(self, step_size: Any, update: Any) -> None:
        offset = 0
        for p in self._params:
            n = p.data.size
            p.data += step_size * update[offset:offset + n].reshape(p.data.shape)
            offset += n

    def _clone_param(self) -> list:
        return [p.data.copy() for p in self._params]

    def _set_param(self, params_data: list) -> None:
        for p, data in zip(self._params, params_data):
            p.data[...] = data

    def _directional_evaluate(self, closure: Callable, x: list, t: Any, d: Any) -> tuple:
        self._add_grad(t, d)
        loss = float(closure())
        flat_grad = self._gather_flat_grad()
        self._set_param(x)
        return loss, flat_grad

    def step(self, closure: Callable[[], Any]) -> Any:  # type: ignore[override]
        """Up to max_iter L-BFGS iterations on the closure (see the class); returns the
        loss the first closure call returned."""
        if not callable(closure):
            raise TypeError("LBFGS.step needs a closure that re-evaluates the loss and its "
                            f"gradients, got {type(closure).__name__}")
        closure = enable_grad()(closure)
        group = self.param_groups[0]
        lr = group["lr"]
        max_iter = group["max_iter"]
        max_eval = group["max_eval"]
        tolerance_grad = group["tolerance_grad"]
        tolerance_change = group["tolerance_change"]
        line_search_fn = group["line_search_fn"]
        history_size = group["history_size"]
        xp = array_module(self._params[0].data)

        # One global state, kept under the first parameter (as torch).
        state = self.state.setdefault(self._params[0], {})
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        orig_loss = closure()
        loss = float(orig_loss)
        current_evals = 1
        state["func_evals"] += 1

        flat_grad = self._gather_flat_grad()
        if xp.abs(flat_grad).max() <= tolerance_grad:
            return orig_loss

        d = state.get("d")
        t = state.get("t")
        old_dirs = state.get("old_dirs")
        old_stps = state.get("old_stps")
        ro = state.get("ro")
        H_diag = state.get("H_diag")
        prev_flat_grad = state.get("prev_flat_grad")
        prev_loss = state.get("prev_loss")

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1

            # -- direction
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs, old_stps, ro = [], [], []
                H_diag = 1
            else:
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = y.dot(s)
                if ys > 1e-10:
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    # scale of the initial inverse Hessian approximation
                    H_diag = ys / y.dot(y)

                # The two-loop recursion: d = -H g.
                num_old = len(old_dirs)
                if "al" not in state:
                    state["al"] = [None] * history_size
                al = state["al"]
                q = -flat_grad
                for i in range(num_old - 1, -1, -1):
                    al[i] = old_stps[i].dot(q) * ro[i]
                    q -= al[i] * old_dirs[i]
                d = r = q * H_diag
                for i in range(num_old):
                    be_i = old_dirs[i].dot(r) * ro[i]
                    r += (al[i] - be_i) * old_stps[i]

            if prev_flat_grad is None:
                prev_flat_grad = flat_grad.copy()
            else:
                prev_flat_grad[...] = flat_grad
            prev_loss = loss

            # -- step length
            if state["n_iter"] == 1:
                t = min(1.0, 1.0 / xp.abs(flat_grad).sum()) * lr
            else:
                t = lr

            gtd = flat_grad.dot(d)
            if gtd > -tolerance_change:
                break

            ls_func_evals = 0
            if line_search_fn is not None:
                x_init = self._clone_param()

                def obj_func(x: list, t: Any, d: Any) -> tuple:
                    return self._directional_evaluate(closure, x, t, d)

                loss, flat_grad, t, ls_func_evals = _strong_wolfe(
                    obj_func, x_init, t, d, loss, flat_grad, gtd,
                    max_ls=max(max_eval - current_evals, 0))
                self._add_grad(t, d)
                opt_cond = xp.abs(flat_grad).max() <= tolerance_grad
            else:
                self._add_grad(t, d)
                opt_cond = False
                if n_iter != max_iter:
                    # The last iteration leaves the evaluation at the new point to the
                    # next step() call, as torch.
                    loss = float(closure())
                    flat_grad = self._gather_flat_grad()
                    opt_cond = xp.abs(flat_grad).max() <= tolerance_grad
                    ls_func_evals = 1

            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals

            # -- stopping tests
            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if xp.abs(d * t).max() <= tolerance_change:
                break
            if abs(loss - prev_loss) < tolerance_change:
                break

        state.update(d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=H_diag,
                     prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
        return orig_loss


class LRScheduler:
    """Base class: records initial_lr in each group and applies the first (epoch 0) step.

    As in torch, constructing a scheduler counts as epoch 0 and leaves the lrs unchanged;
    call `step()` after `optimizer.step()` once per epoch.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(getattr(optimizer, "param_groups", None), list):
            raise TypeError(f"optimizer must be an Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs: list[float] = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = -1
        self.step()

    def get_lr(self) -> list[float]:
        """The lrs for `last_epoch`, computed from the groups' current lrs."""
        raise NotImplementedError

    def get_last_lr(self) -> list[float]:
        """The lrs this scheduler set last, one per parameter group."""
        return list(self._last_lr)

    def step(self) -> None:
        """Advance one epoch and write the new lrs into the optimizer's groups."""
        self.last_epoch += 1
        values = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class StepLR(LRScheduler):
    """Multiply each group's lr by `gamma` every `step_size` epochs."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        if isinstance(step_size, bool) or not isinstance(step_size, (int, np.integer)):
            raise TypeError(f"step_size must be an int, got {type(step_size).__name__}")
        if step_size <= 0:
            raise ValueError(f"step_size must be positive, got {step_size}")
        self.step_size = int(step_size)
        self.gamma = _check_number("gamma", gamma)
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        groups = self.optimizer.param_groups
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return [group["lr"] for group in groups]
        return [group["lr"] * self.gamma for group in groups]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from each group's initial lr down to `eta_min` over `T_max` epochs.

    Past T_max the lr rises again along the cosine (period 2 * T_max), as in torch.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        if isinstance(T_max, bool) or not isinstance(T_max, (int, np.integer)):
            raise TypeError(f"T_max must be an int, got {type(T_max).__name__}")
        if T_max <= 0:
            raise ValueError(f"T_max must be positive, got {T_max}")
        self.T_max = int(T_max)
        self.eta_min = _check_number("eta_min", eta_min)
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        groups = self.optimizer.param_groups
        T_max, eta_min = self.T_max, self.eta_min
        if self.last_epoch == 0:
            return [group["lr"] for group in groups]
        if (self.last_epoch - 1 - T_max) % (2 * T_max) == 0:
            # At the bottom of the cosine the recursive ratio below is 0/0; torch steps by
            # the closed-form increment instead, and so do we.
            return [
                group["lr"] + (base_lr - eta_min) * (1 - math.cos(math.pi / T_max)) / 2
                for base_lr, group in zip(self.base_lrs, groups)
            ]
        return [
            (1 + math.cos(math.pi * self.last_epoch / T_max))
            / (1 + math.cos(math.pi * (self.last_epoch - 1) / T_max))
            * (group["lr"] - eta_min)
            + eta_min
            for group in groups
        ]
