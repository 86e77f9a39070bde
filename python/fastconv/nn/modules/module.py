"""The base of every layer: `Module` (parameters, buffers, children, state dicts, devices,
hooks), the containers `Sequential` and `Identity`, `Flatten`, and what the layer modules
share (parameter initialization, input checks, whether a call records anything).

Parameter, buffer and child names follow torch.nn exactly, so `state_dict()` keys match
torch's ("features.0.weight", "bn.running_mean", "bn.num_batches_tracked") and a torch or
torchvision state dict loads as is.
"""

from __future__ import annotations

import contextvars
from collections import OrderedDict
from typing import (Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional,
                    Sequence, Tuple, Union)

import numpy as np

from ... import random as _random
from ..._backend import FLOAT_DTYPES, array_module, is_gpu, require_cuda
from ...tensor import Parameter, Tensor, is_grad_enabled
from .. import functional as F

ForwardHook = Callable[["Module", Tuple[Any, ...], Any], None]

# The module of the current top-level call, so that a failing layer can say where it sits
# in the model without every module storing its own path. The path is looked up only when
# a layer fails: walking the tree on every call cost more than a small layer's kernel.
_call_root: contextvars.ContextVar[Optional["Module"]] = contextvars.ContextVar(
    "fastconv_nn_call_root", default=None)


class _LayerError(ValueError):
    """A ValueError already prefixed with the failing layer's name; outer modules pass it
    through unchanged."""


class IncompatibleKeys(NamedTuple):
    """What `Module.load_state_dict` returns, as torch's namedtuple of the same fields."""

    missing_keys: List[str]
    unexpected_keys: List[str]


class RemovableHandle:
    """Returned by `Module.register_forward_hook`; `.remove()` unregisters the hook."""

    def __init__(self, hooks: Dict[int, ForwardHook], key: int) -> None:
        self._hooks = hooks
        self._key = key

    def remove(self) -> None:
        self._hooks.pop(self._key, None)


def _to_numpy(array: Any) -> np.ndarray:
    """A NumPy copy of a NumPy or CuPy array (CuPy arrays have `.get()`)."""
    return np.array(array.get() if hasattr(array, "get") else array, copy=True)


def _move(array: Any, device: str) -> Any:
    if device == "cpu":
        return array.get() if hasattr(array, "get") else array
    if device == "cuda":
        require_cuda("Module.to")
        import cupy

        return cupy.asarray(array)
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")


class Module:
    """Base class of every layer: parameters, buffers and children registered by attribute
    assignment, in assignment order, as torch.nn.Module.

    Subclasses set attributes in `__init__` (after `super().__init__()`) and define
    `forward`. Calling the module runs `forward` plus any forward hooks; a ValueError from
    a layer (a shape mismatch) is re-raised naming the layer's path, e.g.
    "features.3 (Conv2d): ...".
    """

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())

    # -- registration ------------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before "
                                 f"assigning {name!r}")
        if isinstance(value, (Parameter, Module)):
            for table in (self._parameters, self._buffers, self._modules):
                table.pop(name, None)
            self.__dict__.pop(name, None)
            table = self._parameters if isinstance(value, Parameter) else self._modules
            table[name] = value
            return
        for table, kind in ((self._parameters, "parameter"), (self._modules, "child module")):
            if name in table:
                # As torch: silently unregistering `weight` on `m.weight = array` would
                # drop it from parameters() and the state dict.
                if value is not None:
                    raise TypeError(f"cannot assign {type(value).__name__} as {kind} "
                                    f"{name!r} (a {kind.split()[-1].capitalize()} or None "
                                    f"expected)")
                table[name] = None
                return
        if name in self._buffers:
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails, i.e. for registered entries.
        for table in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, array: Optional[Any]) -> None:
        """Register a non-trainable array (NumPy, or CuPy after `.to("cuda")`) that is part
        of the state dict, such as BatchNorm's running statistics."""
        self.__dict__.pop(name, None)
        self._buffers[name] = array

    def register_parameter(self, name: str, param: Optional[Parameter]) -> None:
        """Register `param` under `name` (None reserves the name, as torch)."""
        self.__dict__.pop(name, None)
        self._parameters[name] = param

    def add_module(self, name: str, module: Optional["Module"]) -> None:
        """Register a child under `name` (names may be digits, as Sequential's)."""
        self._modules[name] = module

    def register_forward_hook(self, hook: ForwardHook) -> RemovableHandle:
        """Call `hook(module, inputs, output)` after every forward of this module."""
        key = max(self._forward_hooks, default=-1) + 1
        self._forward_hooks[key] = hook
        return RemovableHandle(self._forward_hooks, key)

    # -- traversal ---------------------------------------------------------------------

    def named_modules(self, prefix: str = "") -> Iterator[Tuple[str, "Module"]]:
        """(qualified name, module) for self ("") and every descendant, depth first; a
        module reachable twice is yielded once, as torch."""
        seen: set = set()

        def walk(module: Module, path: str) -> Iterator[Tuple[str, Module]]:
            if id(module) in seen:
                return
            seen.add(id(module))
            yield path, module
            for name, child in module._modules.items():
                if child is not None:
                    yield from walk(child, f"{path}.{name}" if path else name)

        return walk(self, prefix)

    def modules(self) -> Iterator["Module"]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[Tuple[str, "Module"]]:
        for name, child in self._modules.items():
            if child is not None:
                yield name, child

    def children(self) -> Iterator["Module"]:
        for _, child in self.named_children():
            yield child

    def _named_members(self, table: str, recurse: bool) -> Iterator[Tuple[str, Any]]:
        seen: set = set()
        owners = self.named_modules() if recurse else iter([("", self)])
        for path, module in owners:
            for name, value in getattr(module, table).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{path}.{name}" if path else name), value

    def named_parameters(self, recurse: bool = True) -> Iterator[Tuple[str, Parameter]]:
        """(qualified name, Parameter), each shared parameter once."""
        return self._named_members("_parameters", recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse):
            yield param

    def named_buffers(self, recurse: bool = True) -> Iterator[Tuple[str, Any]]:
        """(qualified name, array) of every registered buffer."""
        return self._named_members("_buffers", recurse)

    def buffers(self, recurse: bool = True) -> Iterator[Any]:
        for _, buf in self.named_buffers(recurse):
            yield buf

    # -- modes, devices, gradients -----------------------------------------------------

    def train(self, mode: bool = True) -> "Module":
        """Set training mode on self and every descendant; returns self."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        """Evaluation mode (Dropout off, BatchNorm uses running statistics); returns self."""
        return self.train(False)

    def to(self, device: str) -> "Module":
        """Move every parameter and buffer to "cpu" or "cuda" in place; returns self."""
        for module in self.modules():
            for param in module._parameters.values():
                if param is not None:
                    param.data = _move(param.data, device)
                    if param.grad is not None:
                        param.grad = _move(param.grad, device)
            for name, buf in module._buffers.items():
                if buf is not None:
                    module._buffers[name] = _move(buf, device)
        return self

    def _cast(self, dtype: Any) -> "Module":
        # Integer buffers (num_batches_tracked) stay integers, as in torch.
        for module in self.modules():
            for param in module._parameters.values():
                if param is not None:
                    param.data = param.data.astype(dtype)
            for name, buf in module._buffers.items():
                if buf is not None and buf.dtype.kind == "f":
                    module._buffers[name] = buf.astype(dtype)
        return self

    def double(self) -> "Module":
        """Cast floating-point parameters and buffers to float64 in place; returns self."""
        return self._cast(np.float64)

    def float(self) -> "Module":
        """Cast floating-point parameters and buffers to float32 in place; returns self."""
        return self._cast(np.float32)

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (set to None, as torch's default)."""
        for param in self.parameters():
            param.grad = None

    # -- state -------------------------------------------------------------------------

    def _state_entries(self) -> Iterator[Tuple[str, "Module", str, bool]]:
        """(key, owner, attribute, is_parameter) for every state-dict entry, in torch's
        order: each module's parameters, then its buffers, then its children."""
        for path, module in self.named_modules():
            for table, is_param in (("_parameters", True), ("_buffers", False)):
                for name, value in getattr(module, table).items():
                    if value is not None:
                        yield (f"{path}.{name}" if path else name), module, name, is_param

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Every parameter and buffer as a NumPy copy, keyed as torch.nn would key it."""
        out: "OrderedDict[str, np.ndarray]" = OrderedDict()
        for key, module, name, is_param in self._state_entries():
            value = module._parameters[name].data if is_param else module._buffers[name]
            out[key] = _to_numpy(value)
        return out

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy `state` (arrays, or anything np.asarray takes, e.g. CPU torch tensors) into
        the parameters and buffers in place, cast to each one's dtype.

        Raises one ValueError listing every missing, unexpected and mis-shaped key; with
        strict=False only mis-shaped keys raise. Nothing is copied when it raises.
        """
        entries = {key: (module, name, is_param)
                   for key, module, name, is_param in self._state_entries()}
        # Checkpoints from before torch 0.4.1 (some torchvision weights among them) carry no
        # num_batches_tracked; torch accepts them, so do we (the counter stays as it is).
        missing = [key for key in entries if key not in state
                   and not key.endswith("num_batches_tracked")]
        unexpected = [key for key in state if key not in entries]
        mismatched = []
        updates = []
        for key, (module, name, is_param) in entries.items():
            if key not in state:
                continue
            target = module._parameters[name].data if is_param else module._buffers[name]
            value = np.asarray(state[key])
            if tuple(value.shape) != tuple(target.shape):
                mismatched.append(f"{key}: checkpoint {tuple(value.shape)}, "
                                  f"model {tuple(target.shape)}")
            else:
                updates.append((target, value))
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if mismatched:
            problems.append("shape mismatches: " + "; ".join(mismatched))
        if problems:
            raise ValueError(f"load_state_dict for {type(self).__name__} failed: "
                             + " | ".join(problems))
        for target, value in updates:
            target[...] = array_module(target).asarray(value.astype(target.dtype, copy=False))
        return IncompatibleKeys(missing, unexpected)

    # -- calling -----------------------------------------------------------------------

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._invoke(self.forward, args, kwargs)

    def _invoke(self, method: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        """`method` (forward, or a fused variant) as a call of this layer: errors name the
        layer's path in the model, forward hooks see the output."""
        root = _call_root.get()
        token = _call_root.set(self) if root is None else None
        try:
            try:
                out = method(*args, **kwargs)
            except _LayerError:
                raise
            except ValueError as exc:
                path = next((path for path, module in (root or self).named_modules()
                             if module is self), "")
                where = f"{path} ({type(self).__name__})" if path else type(self).__name__
                raise _LayerError(f"{where}: {exc}") from exc
            if self._forward_hooks:
                for hook in list(self._forward_hooks.values()):
                    hook(self, args, out)
            return out
        finally:
            if token is not None:
                _call_root.reset(token)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = [f"  ({name}): " + repr(child).replace("\n", "\n  ")
                    for name, child in self.named_children()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ("\n" + "\n".join(children) + "\n)" if children else ")")


class Sequential(Module):
    """Children "0", "1", ... applied in order; indexable (slices give a Sequential),
    iterable and sized. Also takes one OrderedDict of named children, as torch."""

    def __init__(self, *layers: Union[Module, "OrderedDict[str, Module]"]) -> None:
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], OrderedDict):
            for name, layer in layers[0].items():
                self.add_module(name, layer)
        else:
            for index, layer in enumerate(layers):
                self.add_module(str(index), layer)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, index: Union[int, slice]) -> Module:
        layers = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(OrderedDict(layers[index]))
        return layers[index][1]

    def __setitem__(self, index: int, layer: Module) -> None:
        self.add_module(list(self._modules)[index], layer)

    def append(self, layer: Module) -> "Sequential":
        self.add_module(str(len(self)), layer)
        return self

    def forward(self, x: Any) -> Any:
        # A layer followed by an activation it can apply in the same pass (batch norm then
        # ReLU) runs both as one op: its forward_then, with no hooks to see the in-between.
        layers = list(self)
        i = 0
        while i < len(layers):
            layer, after = layers[i], layers[i + 1] if i + 1 < len(layers) else None
            takes = getattr(layer, "takes_activation", None)
            if (after is not None and takes is not None and takes(after)
                    and not layer._forward_hooks):
                x = layer._invoke(layer.forward_then, (x,), {"activation": after})
                i += 2
            else:
                x = layer(x)
                i += 1
        return x


class Identity(Module):
    """Returns its input unchanged (any shape)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return x



class Flatten(Module):
    """Merge dims start_dim..end_dim: (N, C, H, W) -> (N, C*H*W) with the defaults."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, x: Tensor) -> Tensor:
        return F.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"



def uniform_parameter(shape: Tuple[int, ...], bound: float) -> Parameter:
    """A Parameter drawn from U(-bound, bound) with fastconv's seeded generator. Drawn
    directly in float32: VGG's 100M-weight layer would otherwise spend seconds and 800 MB on
    a float64 draw that is then cast down."""
    data = _random.generator().random(shape, dtype=np.float32)
    data *= np.float32(2 * bound)
    data -= np.float32(bound)
    return Parameter(data)


def check_rank(x: Tensor, ranks: Sequence[int], what: str) -> None:
    """ValueError unless x has one of `ranks` dims."""
    if len(x.shape) not in ranks:
        expected = " or ".join(f"{r}D" for r in ranks)
        raise ValueError(f"expected {expected} input {what}, got shape {tuple(x.shape)}")


def runs_plain(x: Tensor, *params: Optional[Tensor]) -> bool:
    """True when nothing of this call is recorded for backward and x holds a float NumPy or
    CuPy array: the calls a layer may run straight through its op family's plan."""
    data = x.data
    if not (type(data) is np.ndarray or is_gpu(data)) or data.dtype not in FLOAT_DTYPES:
        return False
    return not (is_grad_enabled() and (x.requires_grad or
                                       any(p is not None and p.requires_grad for p in params)))
