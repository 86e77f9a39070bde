"""Optimizers and learning-rate schedules with torch.optim semantics.

`SGD` and `Adam` follow PyTorch's single-tensor (non-foreach, non-fused) update formulas
operation by operation, so a model trained here and the same model trained with
`torch.optim` on the same gradients stay together to rounding. `StepLR` and
`CosineAnnealingLR` use torch's recursive ("chainable") form for the same reason: the
closed form rounds differently.

Parameters are any objects with a NumPy array `.data`, a `.grad` that is a NumPy array or
None, and `.requires_grad` (fastconv.Tensor / nn.Parameter qualify). `.data` is updated in
place so that views and references to the array held elsewhere (a module's state_dict,
a test) see the new values, and float32 parameters stay float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, MutableMapping
from numbers import Real
from typing import Any

import numpy as np

from ._backend import array_module

__all__ = ["SGD", "Adam", "CosineAnnealingLR", "Optimizer", "StepLR"]

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
        """Take one SGD step for every parameter whose `.grad` is not None."""
        for group in self.param_groups:
            lr = group["lr"]
            momentum = group["momentum"]
            dampening = group["dampening"]
            weight_decay = group["weight_decay"]
            nesterov = group["nesterov"]
            for p in group["params"]:
                g = self._grad(p)
                if g is None:
                    continue
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
        """Take one Adam step for every parameter whose `.grad` is not None."""
        for group in self.param_groups:
            lr = group["lr"]
            beta1, beta2 = group["betas"]
            eps = group["eps"]
            weight_decay = group["weight_decay"]
            for p in group["params"]:
                g = self._grad(p)
                if g is None:
                    continue
                state = self.state.setdefault(p, {})
                if not state:
                    state["step"] = 0
                    xp = array_module(p.data)
                    state["exp_avg"] = xp.zeros_like(p.data)
                    state["exp_avg_sq"] = xp.zeros_like(p.data)
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
