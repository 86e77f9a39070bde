"""PyTorch-shaped layers: `Module`, `Sequential` and the layers of DESIGN.md section 3b.

Layout is channels first as everywhere in fastconv: inputs are (N, C, *spatial) Tensors.
Parameter, buffer and child names follow torch.nn exactly, so `state_dict()` keys match
torch's ("features.0.weight", "bn.running_mean", "bn.num_batches_tracked") and a torch or
torchvision state dict loads as is.
"""

from __future__ import annotations

import contextvars
import math
from collections import OrderedDict
from typing import (Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional,
                    Sequence, Tuple, Union)

import numpy as np

from .. import _cpu
from .._backend import empty
from .. import random as _random
from .._geometry import IntOrTuple, Padding, as_tuple, make_window, plain
from ..tensor import Parameter, Tensor, is_grad_enabled
from . import functional as F

__all__ = [
    "AdaptiveAvgPool2d", "AvgPool1d", "AvgPool2d", "AvgPool3d", "BatchNorm1d", "BatchNorm2d",
    "BatchNorm3d", "Conv", "Conv1d", "Conv2d", "Conv3d", "Dropout", "Flatten", "Identity",
    "IncompatibleKeys", "Linear", "LocalResponseNorm", "MaxPool1d", "MaxPool2d", "MaxPool3d",
    "Module", "Parameter", "ReLU", "Sequential", "Sigmoid", "Softmax", "Tanh",
]

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


def _array_module(array: Any) -> Any:
    if isinstance(array, np.ndarray):
        return np
    import cupy  # only reachable once a module was moved to "cuda"

    return cupy


def _move(array: Any, device: str) -> Any:
    if device == "cpu":
        return array.get() if hasattr(array, "get") else array
    if device == "cuda":
        from .. import cuda

        cuda.require("Module.to")
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
            target[...] = _array_module(target).asarray(value.astype(target.dtype, copy=False))
        return IncompatibleKeys(missing, unexpected)

    # -- calling -----------------------------------------------------------------------

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        root = _call_root.get()
        token = _call_root.set(self) if root is None else None
        try:
            try:
                out = self.forward(*args, **kwargs)
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
        for layer in self:
            x = layer(x)
        return x


class Identity(Module):
    """Returns its input unchanged (any shape)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return x


def _uniform(shape: Tuple[int, ...], bound: float) -> Parameter:
    # Drawn directly in float32: VGG's 100M-weight layer would otherwise spend seconds and
    # 800 MB on a float64 draw that is then cast down.
    data = _random.generator().random(shape, dtype=np.float32)
    data *= np.float32(2 * bound)
    data -= np.float32(bound)
    return Parameter(data)


def _check_rank(x: Tensor, ranks: Sequence[int], what: str) -> None:
    if len(x.shape) not in ranks:
        expected = " or ".join(f"{r}D" for r in ranks)
        raise ValueError(f"expected {expected} input {what}, got shape {tuple(x.shape)}")


def _inference_input(x: Tensor, *params: Optional[Tensor]) -> Optional[np.ndarray]:
    """x's NumPy array when nothing of this call is recorded for backward, else None: the
    cases a layer may run straight through its kernel on geometry it validated before."""
    data = x.data
    if type(data) is not np.ndarray:
        return None
    if is_grad_enabled() and (x.requires_grad or
                              any(p is not None and p.requires_grad for p in params)):
        return None
    return data


_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class _LastGeometry:
    """A layer's last validated call: its key (input shape and dtype, the layer's geometry
    arguments), the output shape and the kernel's geometry arguments. A network calls each
    layer on the same shape every time, so the checks and normalization of the public op
    run once; a call whose key differs in anything (a new input shape, a changed stride)
    goes through the public op again. Only keys of exact ints, strings and tuples are kept,
    so no argument can change in place behind the key."""

    __slots__ = ("key", "out_shape", "args")

    def __init__(self, key: tuple, out_shape: Tuple[int, ...], args: tuple) -> None:
        self.key, self.out_shape, self.args = key, out_shape, args


def _remember(key: tuple, geometry: tuple, out_shape: Tuple[int, ...],
              args: tuple) -> Optional[_LastGeometry]:
    """The memo of a validated call, unless the layer's `geometry` arguments could change in
    place or stand for a value of another type (lists, NumPy integers, bools)."""
    return _LastGeometry(key, out_shape, args) if plain(geometry) else None


class Conv(Module):
    """N-D convolution layer: x (N, C_in, *spatial) -> (N, C_out, *out).

    weight (C_out, C_in // groups, *kernel), bias (C_out,), both initialized
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = C_in // groups * prod(kernel), which is
    torch's Kaiming-uniform with a=sqrt(5). padding: int, tuple, (before, after) pairs,
    "valid" or "same", as `fastconv.conv`.
    """

    def __init__(self, ndim: int, in_channels: int, out_channels: int, kernel_size: IntOrTuple,
                 stride: IntOrTuple = 1, padding: Padding = 0, dilation: IntOrTuple = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must be divisible by groups ({groups})")
        self.ndim = ndim
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = as_tuple(kernel_size, ndim, "kernel_size")
        self.stride = as_tuple(stride, ndim, "stride")
        self.padding = padding
        self.dilation = as_tuple(dilation, ndim, "dilation")
        self.groups = groups
        fan_in = in_channels // groups * math.prod(self.kernel_size)
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        self.weight = _uniform((out_channels, in_channels // groups) + self.kernel_size, bound)
        self.register_parameter("bias", _uniform((out_channels,), bound) if bias else None)
        self._last: Optional[_LastGeometry] = None

    def forward(self, x: Tensor) -> Tensor:
        _check_rank(x, (self.ndim + 2,), "(N, C, *spatial)")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got input shape "
                             f"{tuple(x.shape)}")
        weight, bias = self.weight, self.bias
        data = _inference_input(x, weight, bias)
        if data is None:
            return F.conv(x, weight, bias, stride=self.stride, padding=self.padding,
                          dilation=self.dilation, groups=self.groups)
        w = weight.data
        b = None if bias is None else bias.data
        key = (data.shape, data.dtype, w.shape, w.dtype, b is None, self.stride, self.padding,
               self.dilation, self.groups)
        last = self._last
        if last is None or last.key != key:
            y = F.conv(x, weight, bias, stride=self.stride, padding=self.padding,
                       dilation=self.dilation, groups=self.groups)
            win = make_window("conv", data.shape[2:], w.shape[2:], self.stride, self.padding,
                              self.dilation)
            self._last = _remember(key, (self.stride, self.padding, self.dilation, self.groups),
                                   y.shape, win.cpp_args()[1:])
            return y
        out = empty(data, last.out_shape, data.dtype)
        _cpu.conv_forward(np.ascontiguousarray(data), np.ascontiguousarray(w),
                          None if b is None else np.ascontiguousarray(b), out, *last.args,
                          self.groups)
        return Tensor(out)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r}")


class Conv1d(Conv):
    """1-D convolution: x (N, C_in, L) -> (N, C_out, L_out); arguments as torch.nn.Conv1d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrTuple,
                 stride: IntOrTuple = 1, padding: Padding = 0, dilation: IntOrTuple = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__(1, in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias)


class Conv2d(Conv):
    """2-D convolution: x (N, C_in, H, W) -> (N, C_out, H_out, W_out); as torch.nn.Conv2d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrTuple,
                 stride: IntOrTuple = 1, padding: Padding = 0, dilation: IntOrTuple = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__(2, in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias)


class Conv3d(Conv):
    """3-D convolution: x (N, C_in, D, H, W) -> (N, C_out, D', H', W'); as torch.nn.Conv3d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrTuple,
                 stride: IntOrTuple = 1, padding: Padding = 0, dilation: IntOrTuple = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__(3, in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias)


class _PoolNd(Module):
    ndim = 0

    def __init__(self, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None,
                 padding: Padding = 0, ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.ceil_mode = ceil_mode
        self._last: Optional[_LastGeometry] = None

    def _pool_key(self, data: np.ndarray, *options: Any) -> tuple:
        return (data.shape, data.dtype, self.kernel_size, self.stride, self.padding,
                self.ceil_mode) + options

    def _pool_args(self, data: np.ndarray) -> tuple:
        """kernel, stride, pad_before, pad_after for the kernels, validated."""
        win = make_window("pool", data.shape[2:], self.kernel_size, self.stride, self.padding,
                          1, bool(self.ceil_mode), pool=True)
        return win.cpp_args()[:4]

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding!r}, ceil_mode={self.ceil_mode}")


class _MaxPoolNd(_PoolNd):
    """Max pooling over windows: x (N, C, *spatial) -> (N, C, *out); stride defaults to
    kernel_size. Options after padding are keyword-only because torch's fourth positional
    argument is dilation, which fastconv's pooling does not take."""

    def __init__(self, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None,
                 padding: Padding = 0, *, ceil_mode: bool = False) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)

    def forward(self, x: Tensor) -> Tensor:
        _check_rank(x, (self.ndim + 2,), "(N, C, *spatial)")
        data = _inference_input(x)
        if data is None:
            return F.max_pool(x, self.kernel_size, stride=self.stride, padding=self.padding,
                              ceil_mode=self.ceil_mode)
        key = self._pool_key(data)
        last = self._last
        if last is None or last.key != key:
            y = F.max_pool(x, self.kernel_size, stride=self.stride, padding=self.padding,
                           ceil_mode=self.ceil_mode)
            self._last = _remember(key, (self.kernel_size, self.stride, self.padding), y.shape,
                                   self._pool_args(data))
            return y
        # Nothing is recorded, so the argmax indices the gradient would need are not made.
        out = empty(data, last.out_shape, data.dtype)
        _cpu.max_pool_forward(np.ascontiguousarray(data), out, None, *last.args,
                              bool(self.ceil_mode))
        return Tensor(out)


class MaxPool1d(_MaxPoolNd):
    """1-D max pooling: x (N, C, L) -> (N, C, L_out)."""

    ndim = 1


class MaxPool2d(_MaxPoolNd):
    """2-D max pooling: x (N, C, H, W) -> (N, C, H_out, W_out)."""

    ndim = 2


class MaxPool3d(_MaxPoolNd):
    """3-D max pooling: x (N, C, D, H, W) -> (N, C, D', H', W')."""

    ndim = 3


class _AvgPoolNd(_PoolNd):
    """Average pooling: x (N, C, *spatial) -> (N, C, *out); arguments as torch.nn.AvgPool*d
    (count_include_pad=False divides by the in-bounds cells only)."""

    def __init__(self, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None,
                 padding: Padding = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = count_include_pad

    def forward(self, x: Tensor) -> Tensor:
        _check_rank(x, (self.ndim + 2,), "(N, C, *spatial)")
        data = _inference_input(x)
        if data is None:
            return F.avg_pool(x, self.kernel_size, stride=self.stride, padding=self.padding,
                              ceil_mode=self.ceil_mode,
                              count_include_pad=self.count_include_pad)
        key = self._pool_key(data, self.count_include_pad)
        last = self._last
        if last is None or last.key != key:
            y = F.avg_pool(x, self.kernel_size, stride=self.stride, padding=self.padding,
                           ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)
            self._last = _remember(key, (self.kernel_size, self.stride, self.padding), y.shape,
                                   self._pool_args(data))
            return y
        out = empty(data, last.out_shape, data.dtype)
        _cpu.avg_pool_forward(np.ascontiguousarray(data), out, *last.args,
                              bool(self.ceil_mode), bool(self.count_include_pad))
        return Tensor(out)


class AvgPool1d(_AvgPoolNd):
    """1-D average pooling: x (N, C, L) -> (N, C, L_out)."""

    ndim = 1


class AvgPool2d(_AvgPoolNd):
    """2-D average pooling: x (N, C, H, W) -> (N, C, H_out, W_out)."""

    ndim = 2


class AvgPool3d(_AvgPoolNd):
    """3-D average pooling: x (N, C, D, H, W) -> (N, C, D', H', W')."""

    ndim = 3


class AdaptiveAvgPool2d(Module):
    """x (N, C, H, W) -> (N, C, *output_size) by averaging equal, non-overlapping windows.

    Only output sizes that divide the input evenly are supported (then the windows are
    exactly torch's); None in output_size keeps that input dim. Others raise ValueError.
    """

    def __init__(self, output_size: Union[int, Tuple[Optional[int], Optional[int]]]) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        _check_rank(x, (4,), "(N, C, H, W)")
        wanted = ((self.output_size,) * 2 if isinstance(self.output_size, int)
                  else tuple(self.output_size))
        in_size = tuple(x.shape[2:])
        out = tuple(n if o is None else o for n, o in zip(in_size, wanted))
        if any(o < 1 or n % o for n, o in zip(in_size, out)):
            raise ValueError(f"output size {out} does not divide input size {in_size}; only "
                             f"evenly dividing sizes are supported")
        kernel = tuple(n // o for n, o in zip(in_size, out))
        if kernel == (1, 1):
            return x
        return F.avg_pool(x, kernel, stride=kernel)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class Linear(Module):
    """y = x @ weight.T + bias: x (*, in_features) -> (*, out_features).

    weight (out_features, in_features) and bias (out_features,) are initialized
    U(-1/sqrt(in_features), 1/sqrt(in_features)), as torch.nn.Linear.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        self.weight = _uniform((out_features, in_features), bound)
        self.register_parameter("bias", _uniform((out_features,), bound) if bias else None)

    def forward(self, x: Tensor) -> Tensor:
        if not x.shape or x.shape[-1] != self.in_features:
            raise ValueError(f"expected input (*, {self.in_features}), got shape "
                             f"{tuple(x.shape)}")
        weight, bias = self.weight, self.bias
        data = _inference_input(x, weight, bias)
        w = weight.data
        if (data is None or data.ndim != 2 or data.dtype != w.dtype or w.ndim != 2
                or data.dtype not in _FLOAT_DTYPES or (bias is not None and (
                    bias.data.dtype != w.dtype or bias.data.shape != (w.shape[0],)))):
            return F.linear(x, weight, bias)
        # What F.linear computes, (x @ W.T) + b, without the Tensor steps in between.
        out = empty(data, (data.shape[0], w.shape[0]), data.dtype)
        _cpu.matmul(data, w.T, out)
        if bias is not None:
            out += bias.data
        return Tensor(out)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class ReLU(Module):
    """max(x, 0) elementwise, any shape. With `inplace=True` the input is overwritten when
    nothing is recorded for backward (inference); while recording, a new tensor is made,
    since fastconv's autograd keeps the input."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x, inplace=self.inplace)


class Sigmoid(Module):
    """1 / (1 + exp(-x)) elementwise, any shape."""

    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


class Tanh(Module):
    """tanh(x) elementwise, any shape."""

    def forward(self, x: Tensor) -> Tensor:
        data = _inference_input(x)
        if data is not None and data.dtype in _FLOAT_DTYPES:
            out = empty(data, data.shape, data.dtype)
            _cpu.tanh(np.ascontiguousarray(data), out)
            return Tensor(out)
        return F.tanh(x)


class Softmax(Module):
    """Softmax along `dim` (default the last); output has the input's shape."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return F.softmax(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


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


class Dropout(Module):
    """In training, zero each element with probability p and scale the rest by 1/(1-p);
    in eval mode the identity. Any shape. `inplace` is accepted and ignored, as ReLU's."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training, generator=_random.generator())

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _BatchNorm(Module):
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
        _check_rank(x, self.ranks, self.what)
        if x.shape[1] != self.num_features:
            raise ValueError(f"expected {self.num_features} channels, got input shape "
                             f"{tuple(x.shape)}")
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            use_batch_stats, momentum, self.eps)

    def forward_then(self, x: Tensor, residual: Optional[Tensor] = None,
                     activation: Optional["Module"] = None) -> Tensor:
        """activation(self(x) + residual), residual and activation optional: in inference
        on NumPy float arrays (eval mode, running statistics, nothing recorded, no forward
        hooks on self or activation, an nn.ReLU activation) one pass over x, whose results
        are bitwise those of the separate ops; otherwise the ops one after another."""
        data = _inference_input(x, self.weight, self.bias, residual)
        fusable = (data is not None and not self.training and self.running_mean is not None
                   and data.dtype in _FLOAT_DTYPES and not self._forward_hooks
                   and data.ndim >= 2 and data.shape[1] == self.num_features
                   and (activation is None or (type(activation) is ReLU
                                               and not activation._forward_hooks))
                   and (residual is None or (type(residual.data) is np.ndarray
                                             and residual.shape == x.shape
                                             and residual.dtype == x.dtype)))
        if not fusable:
            out = self(x)
            if residual is not None:
                out = out + residual
            return out if activation is None else activation(out)
        _check_rank(x, self.ranks, self.what)
        mean = self.running_mean.astype(data.dtype, copy=False)
        var = self.running_var.astype(data.dtype, copy=False)
        scale, shift = F._eval_scale_shift(np, data.dtype, mean, var, self.weight, self.bias,
                                           self.eps)
        return Tensor(F._channel_affine(data, scale, shift,
                                        None if residual is None else residual.data,
                                        activation is not None))

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm of x (N, C) or (N, C, L) per channel C."""

    ranks = (2, 3)
    what = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch norm of x (N, C, H, W) per channel C."""

    ranks = (4,)
    what = "(N, C, H, W)"


class BatchNorm3d(_BatchNorm):
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
