"""fastconv.Tensor: reverse-mode automatic differentiation over NumPy (later CuPy) arrays.

Every operation on a Tensor that requires grad records a node (its parents and a function
mapping the output gradient to the parents' gradients). ``Tensor.backward`` walks that graph
in reverse topological order (iteratively, so graphs of any depth work) and accumulates
gradients into the leaves.

Conventions:

* ``.grad`` holds a plain array (``numpy.ndarray``, not a Tensor) of the tensor's shape and
  dtype, or None. Leaves (tensors the user created with ``requires_grad=True``, including
  ``Parameter``) accumulate ``.grad`` over backward calls; set ``.grad = None`` to reset.
  Intermediate tensors do not keep gradients unless ``retain_grad()`` was called.
* The graph is kept after ``backward`` (as if ``retain_graph=True``), so a second backward
  through the same graph accumulates again.
* Python floats become float32 (as torch); float64 arrays stay float64; Python scalars in
  arithmetic take the tensor's dtype. Integer and bool tensors (labels, indices) are allowed
  but cannot require grad.
"""

from __future__ import annotations

import functools
import math
import numbers
import sys
import threading
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

from ._backend import activation_backward, add_into, array_module, empty_like, is_gpu, matmul
from ._backend import tanh as _tanh_array

__all__ = ["Tensor", "Parameter", "float_tensor", "no_grad", "enable_grad", "is_grad_enabled",
           "normalize_dims"]


# ----------------------------------------------------------------------------- grad mode

class _GradState(threading.local):
    enabled = True


_state = _GradState()  # per thread, as torch's grad mode


def is_grad_enabled() -> bool:
    """Whether operations are recorded for backward right now (in this thread)."""
    return _state.enabled


class _GradMode:
    _mode = True

    def __init__(self) -> None:
        self._prev: list = []

    def __enter__(self) -> "_GradMode":
        self._prev.append(_state.enabled)
        _state.enabled = self._mode
        return self

    def __exit__(self, *exc: object) -> None:
        _state.enabled = self._prev.pop()

    def __call__(self, func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with type(self)():
                return func(*args, **kwargs)

        return wrapper


class no_grad(_GradMode):
    """Context manager (and decorator) that disables graph recording.

    >>> with fastconv.no_grad():
    ...     y = model(x)          # y.requires_grad is False
    """

    _mode = False


class enable_grad(_GradMode):
    """Context manager (and decorator) that re-enables graph recording inside no_grad."""

    _mode = True


# ----------------------------------------------------------------------------- helpers


def _references(a: Any) -> int:
    return sys.getrefcount(a)


def _count_private_references() -> int:
    """What _references reports for an array held by one dict and one local name, as the
    backward pass holds a gradient nothing else sees (interpreters count differently)."""
    table = {0: np.empty(1)}
    total = table[0]
    return _references(total)


_PRIVATE_REFERENCES = _count_private_references()


def _unbroadcast(g: Any, shape: Tuple[int, ...]) -> Any:
    """Sum a gradient over the dims that broadcasting added or stretched, back to `shape`."""
    if g.shape == tuple(shape):
        return g
    extra = g.ndim - len(shape)
    if extra > 0:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def normalize_dims(op: str, dim: Any, ndim: int) -> Optional[Tuple[int, ...]]:
    """None -> None; int or tuple of ints -> sorted tuple of nonnegative dims."""
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, numbers.Integral) else tuple(dim)
    out = []
    for d in dims:
        if not isinstance(d, numbers.Integral) or isinstance(d, bool):
            raise TypeError(f"{op}: dim must be an int or a tuple of ints, got {dim!r}")
        d = int(d)
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise ValueError(f"{op}: dim {d} out of range for a tensor with {ndim} dims")
        out.append(d % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: dim {dim!r} repeats a dim")
    return tuple(sorted(out))


def _expand_reduced(g: Any, dims: Optional[Tuple[int, ...]], keepdim: bool,
                    shape: Tuple[int, ...]) -> Any:
    """Broadcast the gradient of a reduction back to the input shape."""
    xp = array_module(g)
    if dims is None:
        dims = tuple(range(len(shape)))
    if not keepdim and len(shape):
        g = xp.expand_dims(g, dims) if dims else g
    return xp.broadcast_to(g, shape)


def _as_tensor(value: Any, like: Optional["Tensor"] = None) -> "Tensor":
    """Operands of arithmetic: Tensors as they are, Python scalars in `like`'s float dtype."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (numbers.Number, np.number)) and not isinstance(value, bool) \
            and like is not None and like.dtype.kind == "f" and not isinstance(value, complex):
        xp = array_module(like.data)
        return Tensor(xp.asarray(value, dtype=like.dtype))
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"unsupported operand type for Tensor arithmetic: "
                        f"{type(value).__name__}")
    return Tensor(value)


def _broadcast_op(op: str, a: "Tensor", b: "Tensor", fn: Callable) -> Any:
    try:
        return fn(a.data, b.data)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} do not broadcast") from None


def _grad_dtype(data: Any) -> bool:
    return data.dtype.kind in "fc"


class _Size(int):
    """`Tensor.size`: the number of elements (an int, as numpy's .size) which, called as
    ``t.size()`` or ``t.size(dim)``, gives the shape or one dim (as torch's Tensor.size)."""

    _shape: Tuple[int, ...]

    def __new__(cls, shape: Tuple[int, ...]) -> "_Size":
        obj = super().__new__(cls, int(np.prod(shape, dtype=np.int64)))
        obj._shape = tuple(shape)
        return obj

    def __call__(self, dim: Optional[int] = None):
        if dim is None:
            return self._shape
        return self._shape[dim]


# ----------------------------------------------------------------------------- Tensor


class Tensor:
    """An array with an optional gradient and the graph that produced it.

    Tensor(data, requires_grad=False): `data` is a NumPy array (kept as is, no copy) or
    anything np.asarray accepts (Python floats become float32). Only float tensors can
    require grad (TypeError otherwise). `.grad` is a NumPy array or None.
    """

    __array_ufunc__ = None  # ndarray (op) Tensor defers to Tensor's reflected op

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        if isinstance(data, Tensor):
            data = data.data
        elif isinstance(data, np.generic):
            data = np.asarray(data)  # NumPy scalars keep their dtype
            if data.dtype.kind not in "biuf":
                raise TypeError(f"Tensor: unsupported data of dtype {data.dtype}")
        elif not (isinstance(data, np.ndarray) or is_gpu(data)):
            if isinstance(data, (str, bytes)) or data is None:
                raise TypeError(f"Tensor: cannot make a tensor from {type(data).__name__}")
            arr = np.asarray(data)
            if arr.dtype == np.float64:
                arr = arr.astype(np.float32)
            elif arr.dtype.kind not in "biuf":
                raise TypeError(f"Tensor: unsupported data of dtype {arr.dtype}")
            data = arr
        self.data = data
        self.grad: Optional[Any] = None
        self._parents: Tuple["Tensor", ...] = ()
        self._backward_fn: Optional[Callable] = None
        self._retain = False
        self._op = ""
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # -- graph construction -------------------------------------------------------------

    @classmethod
    def _make(cls, data: Any, parents: Sequence["Tensor"], backward: Callable,
              op: str = "") -> "Tensor":
        """Output of an op: records (parents, backward) when grad mode is on and any parent
        requires grad. `backward(g)` returns one gradient (or None) per parent."""
        out = Tensor(data)
        if _state.enabled and any(p.requires_grad for p in parents):
            if not _grad_dtype(out.data):
                return out
            out.requires_grad = True
            out._parents = tuple(parents)
            out._backward_fn = backward
            out._op = op
        return out

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and not _grad_dtype(self.data):
            raise TypeError(f"Tensor: only floating point tensors can require grad, got dtype "
                            f"{self.data.dtype} (shape {self.shape})")
        if not requires_grad and self._parents:
            raise RuntimeError("Tensor.requires_grad_: use detach() on a non-leaf tensor")
        self.requires_grad = bool(requires_grad)
        return self

    @property
    def is_leaf(self) -> bool:
        return not self._parents

    def retain_grad(self) -> None:
        """Keep .grad on this intermediate tensor during backward."""
        self._retain = True

    # -- properties ---------------------------------------------------------------------

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self) -> str:
        return "cuda" if is_gpu(self.data) else "cpu"

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def dim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> _Size:
        """Number of elements (int); ``t.size()`` / ``t.size(d)`` give the shape / one dim."""
        return _Size(self.shape)

    def numel(self) -> int:
        return int(self.data.size)

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __repr__(self) -> str:
        body = np.array2string(self.numpy(), separator=", ", prefix="Tensor(")
        extra = ""
        if self.data.dtype not in (np.float32,):
            extra += f", dtype={self.data.dtype}"
        if self.device != "cpu":
            extra += f", device='{self.device}'"
        if self.requires_grad:
            extra += ", requires_grad=True"
        return f"{type(self).__name__}({body}{extra})"

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise ValueError(f"Tensor.__bool__: the truth value of a tensor with shape "
                             f"{self.shape} is ambiguous")
        return bool(self.data.reshape(()).item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def item(self) -> Any:
        if self.data.size != 1:
            raise ValueError(f"Tensor.item: only one-element tensors convert to Python "
                             f"scalars, got shape {self.shape}")
        return self.data.reshape(()).item()

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (the array itself on the CPU, no copy)."""
        if is_gpu(self.data):
            return self.data.get()
        return self.data

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self.numpy()
        if dtype is not None:
            return arr.astype(dtype, copy=bool(copy))
        return arr.copy() if copy else arr

    def detach(self) -> "Tensor":
        """A tensor sharing the data, outside the graph (requires_grad False)."""
        return Tensor(self.data)

    def to(self, device: Any) -> "Tensor":
        """"cpu" returns a CPU tensor (self if already there); "cuda" needs fastconv's CUDA
        backend (RuntimeError otherwise)."""
        name = str(device)
        if name == "cpu":
            if self.device == "cpu":
                return self
            out = Tensor._make(self.data.get(), [self], lambda g: (array_module(
                self.data).asarray(g),), "to")
            return out
        if name == "cuda" or name.startswith("cuda:"):
            from . import cuda

            cuda.require("Tensor.to")
            if self.device == "cuda":
                return self
            import cupy  # type: ignore[import-not-found]

            return Tensor._make(cupy.asarray(self.data), [self], lambda g: (g.get(),), "to")
        raise ValueError(f"Tensor.to: unknown device {device!r} (use 'cpu' or 'cuda')")

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    def float(self) -> "Tensor":
        return self.type_as_dtype(np.float32)

    def double(self) -> "Tensor":
        return self.type_as_dtype(np.float64)

    def type_as_dtype(self, dtype: Any) -> "Tensor":
        dtype = np.dtype(dtype)
        if self.data.dtype == dtype:
            return self
        src = self.data.dtype
        return Tensor._make(self.data.astype(dtype), [self], lambda g: (g.astype(src),),
                            "astype")

    # -- backward -----------------------------------------------------------------------

    def backward(self, grad: Any = None) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's .grad.

        `grad` (array, Tensor or scalar of self's shape) is required unless self has one
        element, where it defaults to 1.
        """
        if not self.requires_grad:
            raise RuntimeError("Tensor.backward: tensor does not require grad and has no "
                               "graph")
        xp = array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"Tensor.backward: grad can be implicitly created only "
                                   f"for one-element tensors, got shape {self.shape}; pass "
                                   "grad")
            grad = xp.ones(self.data.shape, dtype=self.data.dtype)
        else:
            if isinstance(grad, Tensor):
                grad = grad.data
            grad = xp.asarray(grad, dtype=self.data.dtype)
            if grad.shape != self.data.shape:
                if grad.size == 1 and self.data.size == 1:
                    grad = grad.reshape(self.data.shape)
                else:
                    raise ValueError(f"Tensor.backward: grad shape {grad.shape} does not "
                                     f"match tensor shape {self.shape}")

        # iterative DFS for a topological order of the nodes that need a gradient
        order: list = []
        visited: set = set()
        stack = [(self, False)]
        while stack:
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            for p in node._parents:
                if p.requires_grad and id(p) not in visited:
                    stack.append((p, False))

        grads = {id(self): grad}
        # A fresh gradient array becomes .grad as it is (no copy of every weight gradient
        # per step); one that is a view of another array, the caller's `grad`, or already
        # some tensor's .grad is copied, so no two .grad arrays share memory. (Fresh arrays
        # own their memory or hold a non-array owner: a block of fastconv's host cache.)
        handed_out = {id(grad)}
        for node in reversed(order):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node.is_leaf or node._retain:
                g_store = g.astype(node.data.dtype, copy=False)
                if node.grad is not None:
                    node.grad = node.grad + g_store
                elif (g_store.shape == node.data.shape
                      and not isinstance(g_store.base, xp.ndarray)
                      and id(g_store) not in handed_out):
                    node.grad = g_store
                else:
                    node.grad = xp.array(xp.broadcast_to(g_store, node.data.shape),
                                         order="C")
                handed_out.add(id(node.grad))
            if node.is_leaf:
                continue
            parent_grads = node._backward_fn(g)
            for p, pg in zip(node._parents, parent_grads):
                if pg is None or not p.requires_grad:
                    continue
                if pg.shape != p.data.shape:
                    pg = _unbroadcast(pg, p.data.shape)
                if pg.dtype != p.data.dtype:
                    pg = pg.astype(p.data.dtype)
                key = id(p)
                if key not in grads:
                    grads[key] = pg
                    continue
                total = grads[key]
                # A sum of gradients (a residual connection's two paths) goes into the first
                # one's memory when nothing else can see it: held by `grads` alone, not a view.
                # (Both already have p's shape and dtype.)
                if (type(total) is np.ndarray and type(pg) is np.ndarray
                        and _references(total) == _PRIVATE_REFERENCES
                        and not isinstance(total.base, np.ndarray) and total.flags.writeable):
                    add_into(total, pg)
                else:
                    grads[key] = total + pg

    # -- arithmetic ---------------------------------------------------------------------

    def __add__(self, other: Any) -> "Tensor":
        b = _as_tensor(other, self)
        out = _broadcast_op("add", self, b, lambda u, v: u + v)
        return Tensor._make(out, [self, b], lambda g: (g, g), "add")

    def __radd__(self, other: Any) -> "Tensor":
        return _as_tensor(other, self).__add__(self)

    def __sub__(self, other: Any) -> "Tensor":
        b = _as_tensor(other, self)
        out = _broadcast_op("sub", self, b, lambda u, v: u - v)
        return Tensor._make(out, [self, b], lambda g: (g, -g), "sub")

    def __rsub__(self, other: Any) -> "Tensor":
        return _as_tensor(other, self).__sub__(self)

    def __mul__(self, other: Any) -> "Tensor":
        b = _as_tensor(other, self)
        a_data, b_data = self.data, b.data
        return Tensor._make(_broadcast_op("mul", self, b, lambda u, v: u * v), [self, b],
                            lambda g: (g * b_data if self.requires_grad else None,
                                       g * a_data if b.requires_grad else None), "mul")

    def __rmul__(self, other: Any) -> "Tensor":
        return _as_tensor(other, self).__mul__(self)

    def __truediv__(self, other: Any) -> "Tensor":
        b = _as_tensor(other, self)
        b_data = b.data
        out = _broadcast_op("div", self, b, lambda u, v: u / v)
        return Tensor._make(out, [self, b],
                            lambda g: (g / b_data if self.requires_grad else None,
                                       -g * out / b_data if b.requires_grad else None), "div")

    def __rtruediv__(self, other: Any) -> "Tensor":
        return _as_tensor(other, self).__truediv__(self)

    def __neg__(self) -> "Tensor":
        return Tensor._make(-self.data, [self], lambda g: (-g,), "neg")

    def __pos__(self) -> "Tensor":
        return self

    def __pow__(self, other: Any) -> "Tensor":
        b = _as_tensor(other, self)
        a_data, b_data = self.data, b.data
        out = _broadcast_op("pow", self, b, lambda u, v: u ** v)

        def backward(g: Any) -> tuple:
            xp = array_module(g)
            ga = gb = None
            if self.requires_grad:
                ga = g * b_data * a_data ** (b_data - 1)
            if b.requires_grad:
                with np.errstate(divide="ignore", invalid="ignore"):
                    log_a = xp.where(a_data > 0, xp.log(xp.where(a_data > 0, a_data, 1)), 0)
                gb = g * out * log_a
            return ga, gb

        return Tensor._make(out, [self, b], backward, "pow")

    def __rpow__(self, other: Any) -> "Tensor":
        return _as_tensor(other, self).__pow__(self)

    def __matmul__(self, other: Any) -> "Tensor":
        b = _as_tensor(other, self)
        a_data, b_data = self.data, b.data
        if a_data.ndim == 0 or b_data.ndim == 0:
            raise ValueError(f"matmul: both operands need at least 1 dim, got shapes "
                             f"{self.shape} and {b.shape}")
        k_a = a_data.shape[-1]
        k_b = b_data.shape[0] if b_data.ndim == 1 else b_data.shape[-2]
        if k_a != k_b:
            raise ValueError(f"matmul: shapes {self.shape} and {b.shape} do not match "
                             f"({k_a} != {k_b})")
        try:
            out = matmul(a_data, b_data)
        except ValueError as e:
            raise ValueError(f"matmul: shapes {self.shape} and {b.shape} do not "
                             f"broadcast: {e}") from None

        def backward(g: Any) -> tuple:
            xp = array_module(g)
            if a_data.ndim == 1 and b_data.ndim == 1:
                return g * b_data, g * a_data
            a2 = a_data[None, :] if a_data.ndim == 1 else a_data
            b2 = b_data[:, None] if b_data.ndim == 1 else b_data
            g2 = g
            if a_data.ndim == 1:
                g2 = xp.expand_dims(g2, -2)
            if b_data.ndim == 1:
                g2 = xp.expand_dims(g2, -1)
            ga = gb = None
            if self.requires_grad:
                ga = _unbroadcast(matmul(g2, xp.swapaxes(b2, -1, -2)), a2.shape).reshape(a_data.shape)
            if b.requires_grad:
                gb = _unbroadcast(matmul(xp.swapaxes(a2, -1, -2), g2), b2.shape).reshape(b_data.shape)
            return ga, gb

        return Tensor._make(out, [self, b], backward, "matmul")

    def __rmatmul__(self, other: Any) -> "Tensor":
        return _as_tensor(other, self).__matmul__(self)

    def matmul(self, other: Any) -> "Tensor":
        return self.__matmul__(other)

    # comparisons give constant bool tensors (identity hashing is kept: no __eq__)
    def __lt__(self, other: Any) -> "Tensor":
        return Tensor(self.data < _as_tensor(other, self).data)

    def __le__(self, other: Any) -> "Tensor":
        return Tensor(self.data <= _as_tensor(other, self).data)

    def __gt__(self, other: Any) -> "Tensor":
        return Tensor(self.data > _as_tensor(other, self).data)

    def __ge__(self, other: Any) -> "Tensor":
        return Tensor(self.data >= _as_tensor(other, self).data)

    __hash__ = object.__hash__

    # -- reductions ---------------------------------------------------------------------

    def sum(self, dim: Any = None, keepdim: bool = False) -> "Tensor":
        dims = normalize_dims("sum", dim, self.ndim)
        shape = self.shape
        out = self.data.sum(axis=dims if self.ndim else None, keepdims=keepdim)
        xp = array_module(self.data)
        out = xp.asarray(out)
        return Tensor._make(out, [self], lambda g: (_expand_reduced(g, dims, keepdim,
                                                                    shape),), "sum")

    def mean(self, dim: Any = None, keepdim: bool = False) -> "Tensor":
        if not _grad_dtype(self.data):
            raise TypeError(f"mean: needs a floating point tensor, got dtype {self.dtype}")
        dims = normalize_dims("mean", dim, self.ndim)
        shape = self.shape
        count = self.data.size if dims is None or not self.ndim else \
            int(np.prod([shape[d] for d in dims]))
        xp = array_module(self.data)
        out = xp.asarray(self.data.mean(axis=dims if self.ndim else None, keepdims=keepdim))
        return Tensor._make(out, [self],
                            lambda g: (_expand_reduced(g / count, dims, keepdim, shape),),
                            "mean")

    def max(self, dim: Any = None, keepdim: bool = False) -> "Tensor":
        """Maximum values over `dim` (all dims when None). Values only (no indices); the
        gradient is shared evenly between tied maxima."""
        return self._extreme("max", dim, keepdim)

    def min(self, dim: Any = None, keepdim: bool = False) -> "Tensor":
        """Minimum values over `dim` (all dims when None); values only."""
        return self._extreme("min", dim, keepdim)

    def _extreme(self, op: str, dim: Any, keepdim: bool) -> "Tensor":
        if self.data.size == 0:
            raise ValueError(f"{op}: empty tensor, shape {self.shape}")
        dims = normalize_dims(op, dim, self.ndim)
        axis = dims if self.ndim else None
        xp = array_module(self.data)
        red = self.data.max if op == "max" else self.data.min
        full = red(axis=axis, keepdims=True)
        out = full if keepdim else xp.asarray(red(axis=axis, keepdims=False))
        shape = self.shape
        data = self.data

        def backward(g: Any) -> tuple:
            mask = (data == full)
            count = mask.sum(axis=axis, keepdims=True)
            return (_expand_reduced(g, dims, keepdim, shape) * mask / count,)

        return Tensor._make(out, [self], backward, op)

    def argmax(self, dim: Optional[int] = None, keepdim: bool = False) -> "Tensor":
        """Indices of the maxima (int64 constant tensor)."""
        if dim is None:
            return Tensor(array_module(self.data).asarray(self.data.argmax()))
        out = self.data.argmax(axis=dim)
        if keepdim:
            out = array_module(out).expand_dims(out, dim)
        return Tensor(out)

    # -- shape ops ----------------------------------------------------------------------

    def reshape(self, *shape: Any) -> "Tensor":
        if len(shape) == 1 and not isinstance(shape[0], numbers.Integral):
            shape = tuple(shape[0])
        try:
            out = self.data.reshape(shape)
        except (ValueError, TypeError) as e:
            raise ValueError(f"reshape: cannot reshape shape {self.shape} to {shape}: "
                             f"{e}") from None
        src = self.shape
        return Tensor._make(out, [self], lambda g: (g.reshape(src),), "reshape")

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> "Tensor":
        """Merge dims start_dim..end_dim into one (torch.flatten); a 0-d tensor becomes
        shape (1,)."""
        if self.ndim == 0:
            return self.reshape(1)
        s, e = (normalize_dims("flatten", d, self.ndim)[0] for d in (start_dim, end_dim))
        if s > e:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} "
                             f"for shape {self.shape}")
        return self.reshape(self.shape[:s] + (math.prod(self.shape[s:e + 1]),)
                            + self.shape[e + 1:])

    def transpose(self, dim0: int, dim1: int) -> "Tensor":
        xp = array_module(self.data)
        d0, d1 = (normalize_dims("transpose", d, self.ndim)[0] for d in (dim0, dim1))
        return Tensor._make(xp.swapaxes(self.data, d0, d1), [self],
                            lambda g: (xp.swapaxes(g, d0, d1),), "transpose")

    def permute(self, *dims: Any) -> "Tensor":
        if len(dims) == 1 and not isinstance(dims[0], numbers.Integral):
            dims = tuple(dims[0])
        norm = [d % max(self.ndim, 1) if isinstance(d, numbers.Integral) else d for d in dims]
        if sorted(norm) != list(range(self.ndim)):
            raise ValueError(f"permute: dims {dims} are not a permutation of the "
                             f"{self.ndim} dims of shape {self.shape}")
        xp = array_module(self.data)
        inverse = tuple(int(i) for i in np.argsort(norm))
        return Tensor._make(xp.transpose(self.data, norm), [self],
                            lambda g: (xp.transpose(g, inverse),), "permute")

    @property
    def T(self) -> "Tensor":
        """Transpose of a 2-D tensor (dims reversed in general, as NumPy)."""
        if self.ndim < 2:
            return self
        return self.permute(tuple(range(self.ndim - 1, -1, -1)))

    def unsqueeze(self, dim: int) -> "Tensor":
        d = dim % (self.ndim + 1)
        shape = self.shape[:d] + (1,) + self.shape[d:]
        return self.reshape(shape)

    def squeeze(self, dim: Optional[int] = None) -> "Tensor":
        if dim is None:
            shape = tuple(s for s in self.shape if s != 1)
        else:
            d = normalize_dims("squeeze", dim, self.ndim)[0]
            shape = self.shape if self.shape[d] != 1 else self.shape[:d] + self.shape[d + 1:]
        return self.reshape(shape)

    def __getitem__(self, key: Any) -> "Tensor":
        def plain(k: Any) -> Any:
            if isinstance(k, Tensor):
                return k.data
            if isinstance(k, list):
                return np.asarray(k)
            return k

        key = tuple(plain(k) for k in key) if isinstance(key, tuple) else plain(key)
        try:
            out = self.data[key]
        except IndexError as e:
            raise IndexError(f"getitem: {e} (tensor shape {self.shape})") from None
        data = self.data
        xp = array_module(data)

        def backward(g: Any) -> tuple:
            full = xp.zeros(data.shape, dtype=g.dtype)
            if xp is np:
                np.add.at(full, key, g)
            else:  # pragma: no cover - CuPy
                import cupyx  # type: ignore[import-not-found]

                cupyx.scatter_add(full, key, g)
            return (full,)

        return Tensor._make(xp.asarray(out), [self], backward, "getitem")

    # -- elementwise --------------------------------------------------------------------

    def _float_op(self, op: str) -> Any:
        if not _grad_dtype(self.data):
            raise TypeError(f"{op}: needs a floating point tensor, got dtype {self.dtype}")
        return array_module(self.data)

    def exp(self) -> "Tensor":
        xp = self._float_op("exp")
        out = xp.exp(self.data)
        return Tensor._make(out, [self], lambda g: (g * out,), "exp")

    def log(self) -> "Tensor":
        xp = self._float_op("log")
        data = self.data
        return Tensor._make(xp.log(data), [self], lambda g: (g / data,), "log")

    def sqrt(self) -> "Tensor":
        xp = self._float_op("sqrt")
        out = xp.sqrt(self.data)
        return Tensor._make(out, [self], lambda g: (g / (2 * out),), "sqrt")

    def abs(self) -> "Tensor":
        xp = array_module(self.data)
        data = self.data
        return Tensor._make(xp.abs(data), [self], lambda g: (g * xp.sign(data),), "abs")

    def __abs__(self) -> "Tensor":
        return self.abs()

    def clamp(self, min: Optional[float] = None, max: Optional[float] = None) -> "Tensor":
        """Clip to [min, max]; the gradient passes where min <= x <= max (as torch)."""
        if min is None and max is None:
            raise ValueError("clamp: at least one of min and max must be given")
        xp = array_module(self.data)
        data = self.data
        out = data
        mask = xp.ones(data.shape, dtype=bool)
        if min is not None:
            out = xp.maximum(out, xp.asarray(min, dtype=data.dtype))
            mask &= data >= min
        if max is not None:
            out = xp.minimum(out, xp.asarray(max, dtype=data.dtype))
            mask &= data <= max
        return Tensor._make(out, [self], lambda g: (g * mask,), "clamp")

    clip = clamp

    def relu(self, inplace: bool = False) -> "Tensor":
        """max(x, 0) elementwise (NaN stays NaN, as torch). With `inplace` and nothing
        recorded for backward (no_grad, or no gradient needed), the data is overwritten and
        self returned, saving a full-size allocation per layer in inference."""
        xp = array_module(self.data)
        data = self.data
        if not (_state.enabled and self.requires_grad):
            if inplace:
                xp.maximum(data, 0, out=data)
                return self
            return Tensor(xp.maximum(data, 0, out=empty_like(data, data.shape, data.dtype)))
        out = xp.maximum(data, 0, out=empty_like(data, data.shape, data.dtype))
        return Tensor._make(out, [self], lambda g: (activation_backward("relu", g, out),),
                            "relu")

    def sigmoid(self) -> "Tensor":
        """1 / (1 + exp(-x)), computed without overflow."""
        xp = self._float_op("sigmoid")
        data = self.data
        e = xp.exp(-xp.abs(data))
        out = xp.where(data >= 0, 1 / (1 + e), e / (1 + e)).astype(data.dtype, copy=False)
        return Tensor._make(out, [self], lambda g: (activation_backward("sigmoid", g, out),),
                            "sigmoid")

    def tanh(self) -> "Tensor":
        self._float_op("tanh")
        out = _tanh_array(self.data)
        return Tensor._make(out, [self], lambda g: (activation_backward("tanh", g, out),),
                            "tanh")

    def softmax(self, dim: int = -1) -> "Tensor":
        """exp(x) / sum(exp(x)) along dim, shifted by the max for stability."""
        xp = self._float_op("softmax")
        d = normalize_dims("softmax", dim, self.ndim)[0]
        e = xp.exp(self.data - self.data.max(axis=d, keepdims=True))
        out = e / e.sum(axis=d, keepdims=True)
        return Tensor._make(out, [self],
                            lambda g: (out * (g - (g * out).sum(axis=d, keepdims=True)),),
                            "softmax")

    def log_softmax(self, dim: int = -1) -> "Tensor":
        """x - logsumexp(x) along dim (numerically stable)."""
        xp = self._float_op("log_softmax")
        d = normalize_dims("log_softmax", dim, self.ndim)[0]
        shifted = self.data - self.data.max(axis=d, keepdims=True)
        out = shifted - xp.log(xp.exp(shifted).sum(axis=d, keepdims=True))
        return Tensor._make(out, [self],
                            lambda g: (g - xp.exp(out) * g.sum(axis=d, keepdims=True),),
                            "log_softmax")


class Parameter(Tensor):
    """A Tensor that is a module parameter: requires_grad=True by default (a leaf)."""

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        if isinstance(data, Tensor):
            data = data.data
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


def float_tensor(what: str, value: Any) -> Tensor:
    """`value` (a Tensor, or a NumPy/CuPy array made a constant Tensor in its own dtype) as a
    float Tensor; TypeError naming `what` (e.g. "yolo_loss: y_hat") otherwise."""
    if not isinstance(value, Tensor):
        if not (isinstance(value, np.ndarray) or is_gpu(value)):
            raise TypeError(f"{what} must be a Tensor or a NumPy/CuPy array, got "
                            f"{type(value).__name__}")
        value = Tensor(value)
    if value.dtype.kind != "f":
        raise TypeError(f"{what} must be a float tensor, got dtype {value.dtype} (shape "
                        f"{value.shape})")
    return value
