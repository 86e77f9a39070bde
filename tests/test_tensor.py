"""fastconv.Tensor: construction, arithmetic and reductions against finite differences and
PyTorch, graph behaviour (no_grad, detach, accumulation, diamonds, deep chains) and bad
input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import Tensor, no_grad
from fastconv._backend import activation_backward
from fastconv.tensor import Parameter
from _cases import assert_close_torch, gradcheck


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    import zlib

    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


# ----------------------------------------------------------------------------- construction


def test_construction_dtypes_and_attributes() -> None:
    assert Tensor(1.5).dtype == np.float32
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(np.zeros(3, np.float64) + 1).dtype == np.float64
    assert Tensor([1, 2]).dtype.kind == "i"
    a = np.arange(6.0).reshape(2, 3)
    t = Tensor(a, requires_grad=True)
    assert t.data is a and t.shape == (2, 3) and t.ndim == 2 and len(t) == 2
    assert t.size == 6 and t.numel() == 6 and t.size() == (2, 3) and t.size(1) == 3
    assert t.device == "cpu" and t.grad is None and t.requires_grad and t.is_leaf
    assert t.numpy() is a and t.to("cpu") is t
    assert "requires_grad=True" in repr(t) and "float64" in repr(t)
    assert Tensor(np.array([[2.5]])).item() == 2.5
    assert isinstance(fastconv.Tensor, type) and fastconv.no_grad is no_grad
    p = Parameter(np.ones(2))
    assert p.requires_grad and isinstance(p, Tensor) and "Parameter" in repr(p)


def test_integer_tensors_cannot_require_grad() -> None:
    with pytest.raises(TypeError, match="floating point"):
        Tensor(np.arange(3), requires_grad=True)
    with pytest.raises(TypeError):
        Tensor("abc")
    with pytest.raises(TypeError):
        Tensor(np.arange(3)).exp()


def test_to_cuda_raises_without_backend() -> None:
    if fastconv.cuda.is_available():
        pytest.skip("CUDA backend present")
    with pytest.raises(RuntimeError, match="Tensor.to"):
        Tensor(np.ones(2)).to("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        Tensor(np.ones(2)).to("tpu")


def test_item_and_len_errors() -> None:
    with pytest.raises(ValueError, match=r"item.*\(2,\)"):
        Tensor(np.ones(2)).item()
    with pytest.raises(TypeError):
        len(Tensor(np.float64(1.0)))


# ----------------------------------------------------------------------------- arithmetic

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a.abs() ** b,
}

SHAPE_PAIRS = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 4)), ((2, 1, 3), (4, 1)),
               ((), (3,))]


@pytest.mark.parametrize("op", list(BINARY))
@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=str)
def test_binary_broadcasting_gradcheck_and_torch(op: str, shapes, rng) -> None:
    a = rng.standard_normal(shapes[0])
    b = rng.standard_normal(shapes[1])
    if op == "div":
        b = np.sign(b) * (np.abs(b) + 0.5)
    if op == "pow":
        a = np.abs(a) + 0.5
    check_binary(BINARY[op], a, b, rng)


def check_binary(fn, a: np.ndarray, b: np.ndarray, rng) -> None:
    """fn's value and both gradients against finite differences and torch."""
    gradcheck(fn, [a, b])
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    ours_a, ours_b = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    out, ref = fn(ours_a, ours_b), fn(ta, tb)
    assert_close_torch(out.data, ref)
    g = rng.standard_normal(ref.shape)
    out.backward(g)
    ref.backward(torch.tensor(g))
    assert_close_torch(ours_a.grad, ta.grad)
    assert_close_torch(ours_b.grad, tb.grad)


def test_scalars_arrays_and_reflected_ops(rng) -> None:
    a = rng.standard_normal((3, 4)) + 3.0
    c = np.abs(rng.standard_normal(4)) + 0.5
    fns = [lambda x, c: 2.0 + x, lambda x, c: x + 2, lambda x, c: 3.0 - x,
           lambda x, c: x - c, lambda x, c: c - x, lambda x, c: 2.5 * x, lambda x, c: x * c,
           lambda x, c: 1.5 / x, lambda x, c: x / 2.0, lambda x, c: c / x, lambda x, c: -x,
           lambda x, c: x ** 2, lambda x, c: x ** 0.5, lambda x, c: 2.0 ** x,
           lambda x, c: c + x, lambda x, c: c * x, lambda x, c: c ** x, lambda x, c: x ** c]
    for fn in fns:
        gradcheck(lambda x, fn=fn: fn(x, c), [a])
        out = fn(Tensor(a), c)
        assert isinstance(out, Tensor)
        ref = fn(torch.tensor(a), torch.tensor(c))
        assert_close_torch(out.data, ref)
    # scalars keep float32
    t32 = Tensor(a.astype(np.float32))
    assert (t32 * 2.0 + 1).dtype == np.float32 and (1.0 / t32).dtype == np.float32


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((4,), (4, 2)), ((3, 4), (4,)),
                                    ((4,), (4,)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 2)),
                                    ((3, 4), (2, 4, 2)), ((1, 3, 4), (2, 4, 3))], ids=str)
def test_matmul(shapes, rng) -> None:
    a, b = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    check_binary(lambda x, y: x @ y, a, b, rng)
    # reflected with an array operand
    assert_close_torch((a @ Tensor(b)).data, torch.tensor(a) @ torch.tensor(b))


def test_matmul_shape_error() -> None:
    with pytest.raises(ValueError, match=r"matmul.*\(3, 4\).*\(5, 2\)"):
        Tensor(np.ones((3, 4))) @ Tensor(np.ones((5, 2)))
    with pytest.raises(TypeError):
        Tensor(np.ones(3)) + "x"


def test_add_shape_mismatch_raises(rng) -> None:
    a, b = Tensor(rng.standard_normal((3, 4))), Tensor(rng.standard_normal((3, 5)))
    for name, fn in BINARY.items():
        with pytest.raises(ValueError, match=rf"{name}: shapes \(3, 4\) and \(3, 5\)"):
            fn(a, b)
    with pytest.raises(ValueError, match=r"matmul.*\(2, 3, 4\).*\(5, 4, 2\)"):
        Tensor(np.ones((2, 3, 4))) @ Tensor(np.ones((5, 4, 2)))


def test_bool_float_int(rng) -> None:
    assert bool(Tensor(np.array([2.0]))) and not bool(Tensor(0.0))
    assert float(Tensor(np.array([[1.5]]))) == 1.5 and int(Tensor(np.array(3))) == 3
    with pytest.raises(ValueError, match="ambiguous"):
        bool(Tensor(np.ones(2)))


# ----------------------------------------------------------------------------- reductions

REDUCTIONS = [(None, False), (0, False), (1, True), ((0, 2), False), ((0, 2), True), (-1, False),
              ((), False)]


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("dim,keepdim", REDUCTIONS, ids=str)
def test_reductions(name: str, dim, keepdim: bool, rng) -> None:
    a = rng.standard_normal((3, 4, 5))
    if name in ("max", "min") and (dim == () or isinstance(dim, tuple) or dim is None):
        fn = lambda x: getattr(x, name)(dim, keepdim)  # noqa: E731
        ref = getattr(torch, "amax" if name == "max" else "amin")(
            torch.tensor(a), dim=tuple(range(3)) if dim is None else dim, keepdim=keepdim)
        if dim == ():
            return  # torch.amax(dim=()) reduces everything; ours too, covered by None
    elif name in ("max", "min"):
        fn = lambda x: getattr(x, name)(dim, keepdim)  # noqa: E731
        ref = getattr(torch.tensor(a), name)(dim, keepdim).values
    else:
        if dim == ():
            return  # torch's dim=() semantics differ between versions
        fn = lambda x: getattr(x, name)(dim=dim, keepdim=keepdim)  # noqa: E731
        ref = getattr(torch.tensor(a), name)(dim=dim, keepdim=keepdim) if dim is not None \
            else getattr(torch.tensor(a), name)()
        if dim is None and keepdim:
            ref = ref.reshape(1, 1, 1)
    gradcheck(fn, [a])
    assert_close_torch(fn(Tensor(a)).data, ref)


def test_max_gradient_goes_to_argmax(rng) -> None:
    a = rng.standard_normal((4, 6))
    t = Tensor(a, requires_grad=True)
    t.max(1).sum().backward()
    expected = np.zeros_like(a)
    expected[np.arange(4), a.argmax(1)] = 1
    np.testing.assert_array_equal(t.grad, expected)
    ta = torch.tensor(a, requires_grad=True)
    ta.max(1).values.sum().backward()
    assert_close_torch(t.grad, ta.grad)


# ----------------------------------------------------------------------------- shape ops


def test_reshape_transpose_permute_T(rng) -> None:
    a = rng.standard_normal((2, 3, 4))
    ta = torch.tensor(a)
    cases = [(lambda x: x.reshape(6, 4), lambda x: x.reshape(6, 4)),
             (lambda x: x.reshape((4, -1)), lambda x: x.reshape((4, -1))),
             (lambda x: x.transpose(0, 2), lambda x: x.transpose(0, 2)),
             (lambda x: x.transpose(-1, 1), lambda x: x.transpose(-1, 1)),
             (lambda x: x.permute(2, 0, 1), lambda x: x.permute(2, 0, 1)),
             (lambda x: x.permute((1, 2, 0)), lambda x: x.permute((1, 2, 0))),
             (lambda x: x.reshape(6, 4).T, lambda x: x.reshape(6, 4).T),
             (lambda x: x.unsqueeze(1).squeeze(1), lambda x: x.unsqueeze(1).squeeze(1)),
             (lambda x: x.flatten(), lambda x: x.flatten())]
    for ours, theirs in cases:
        gradcheck(ours, [a])
        assert_close_torch(ours(Tensor(a)).data, theirs(ta))
    with pytest.raises(ValueError, match=r"reshape.*\(2, 3, 4\)"):
        Tensor(a).reshape(5, 5)
    with pytest.raises(ValueError, match="permute"):
        Tensor(a).permute(0, 0, 1)


INDEXES = [
    (1,), (slice(None), 2), (Ellipsis, slice(1, 3)), (slice(None, None, -1),),
    (np.array([0, 2, 2, 1]),), (slice(None), np.array([3, 0, 3])),
    (np.array([0, 1, 0]), np.array([2, 2, 2])), (np.array([[1, 0], [1, 1]]), slice(1, None)),
    (None, 0), (np.array([True, False, True]),),
]


@pytest.mark.parametrize("key", INDEXES, ids=lambda k: repr(k).replace(" ", ""))
def test_getitem(key, rng) -> None:
    a = rng.standard_normal((3, 4, 2))
    gradcheck(lambda x: x[key], [a])
    if any(isinstance(k, slice) and (k.step or 1) < 0 for k in key):
        return  # torch has no negative steps
    t = Tensor(a, requires_grad=True)
    ta = torch.tensor(a, requires_grad=True)
    tkey = tuple(torch.tensor(k) if isinstance(k, np.ndarray) else k for k in key)
    out, ref = t[key], ta[tkey]
    assert_close_torch(out.data, ref)
    g = rng.standard_normal(ref.shape)
    out.backward(g)
    ref.backward(torch.tensor(g))
    assert_close_torch(t.grad, ta.grad)


def test_getitem_with_tensor_index_and_error(rng) -> None:
    a = rng.standard_normal((5, 3))
    idx = Tensor(np.array([4, 4, 0]))
    t = Tensor(a, requires_grad=True)
    t[idx].sum().backward()
    assert t.grad[4].tolist() == [2.0, 2.0, 2.0] and t.grad[0].tolist() == [1.0] * 3
    with pytest.raises(IndexError, match=r"\(5, 3\)"):
        t[7]


# ----------------------------------------------------------------------------- elementwise

UNARY = {
    "exp": (lambda x: x.exp(), lambda x: x.exp(), lambda a: a),
    "log": (lambda x: x.log(), lambda x: x.log(), lambda a: np.abs(a) + 0.2),
    "sqrt": (lambda x: x.sqrt(), lambda x: x.sqrt(), lambda a: np.abs(a) + 0.2),
    "abs": (lambda x: x.abs(), lambda x: x.abs(), lambda a: a),
    "abs_builtin": (lambda x: abs(x), lambda x: abs(x), lambda a: a),
    "clamp_both": (lambda x: x.clamp(-0.5, 0.7), lambda x: x.clamp(-0.5, 0.7), lambda a: a),
    "clamp_min": (lambda x: x.clamp(min=0.1), lambda x: x.clamp(min=0.1), lambda a: a),
    "clamp_max": (lambda x: x.clamp(max=-0.1), lambda x: x.clamp(max=-0.1), lambda a: a),
    "relu": (lambda x: x.relu(), lambda x: x.relu(), lambda a: a),
    "sigmoid": (lambda x: x.sigmoid(), lambda x: x.sigmoid(), lambda a: a),
    "tanh": (lambda x: x.tanh(), lambda x: x.tanh(), lambda a: a),
    "softmax": (lambda x: x.softmax(0), lambda x: x.softmax(0), lambda a: a),
    "log_softmax": (lambda x: x.log_softmax(1), lambda x: x.log_softmax(1), lambda a: a),
}


@pytest.mark.parametrize("name", list(UNARY))
def test_unary(name: str, rng) -> None:
    ours, theirs, prep = UNARY[name]
    a = prep(rng.standard_normal((4, 5)) * 2)
    gradcheck(ours, [a])
    t, ta = Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    out, ref = ours(t), theirs(ta)
    assert_close_torch(out.data, ref)
    g = rng.standard_normal(ref.shape)
    out.backward(g)
    ref.backward(torch.tensor(g))
    assert_close_torch(t.grad, ta.grad)


def test_clamp_needs_a_bound() -> None:
    with pytest.raises(ValueError, match="clamp"):
        Tensor(np.ones(2)).clamp()


# ----------------------------------------------------------------------------- graph


def test_no_grad_context_and_decorator(rng) -> None:
    x = Tensor(rng.standard_normal(3), requires_grad=True)
    with no_grad():
        y = x * 2 + 1
    assert not y.requires_grad and y.is_leaf
    assert fastconv.tensor.is_grad_enabled()

    @no_grad()
    def f(t: Tensor) -> Tensor:
        return t.exp()

    assert not f(x).requires_grad
    z = x * 2
    assert z.requires_grad and not z.is_leaf
    with no_grad():
        with fastconv.tensor.enable_grad():
            assert (x * 3).requires_grad
        assert not (x * 3).requires_grad


def test_detach_cuts_the_graph(rng) -> None:
    a = rng.standard_normal(4)
    x = Tensor(a, requires_grad=True)
    y = x * x
    z = y.detach()
    assert not z.requires_grad and z.data is y.data
    (y + z * 5).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * a)


def test_gradient_accumulates_over_two_backward_calls(rng) -> None:
    a = rng.standard_normal((2, 3))
    x = Tensor(a, requires_grad=True)
    (x * x).sum().backward()
    first = x.grad.copy()
    (x * 3).sum().backward()
    np.testing.assert_allclose(first, 2 * a)
    np.testing.assert_allclose(x.grad, 2 * a + 3)
    # the same graph twice (kept after backward) accumulates too
    loss = (x.exp()).sum()
    x.grad = None
    loss.backward()
    loss.backward()
    np.testing.assert_allclose(x.grad, 2 * np.exp(a))
    # intermediates keep no grad unless asked
    h = x * 2
    h2 = x * 3
    h2.retain_grad()
    (h * h2).sum().backward()
    assert h.grad is None and h2.grad is not None


def test_backward_non_scalar_needs_grad(rng) -> None:
    a = rng.standard_normal((2, 3))
    x = Tensor(a, requires_grad=True)
    y = x * x
    with pytest.raises(RuntimeError, match=r"one-element.*\(2, 3\)"):
        y.backward()
    with pytest.raises(ValueError, match=r"grad shape \(3,\).*\(2, 3\)"):
        y.backward(np.ones(3))
    g = rng.standard_normal((2, 3))
    y.backward(Tensor(g))
    np.testing.assert_allclose(x.grad, 2 * a * g)
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(a).sum().backward()


def test_diamond_graph(rng) -> None:
    a = rng.standard_normal((3, 3))
    x = Tensor(a, requires_grad=True)
    h = x.exp()
    y = h * h.tanh() + h / (h + 1)

    def diamond(t: Tensor) -> Tensor:
        e = t.exp()
        return e * e.tanh() + e / (e + 1)

    gradcheck(diamond, [a])
    y.sum().backward()
    ta = torch.tensor(a, requires_grad=True)
    e = ta.exp()
    (e * e.tanh() + e / (e + 1)).sum().backward()
    assert_close_torch(x.grad, ta.grad)
    # x used twice directly
    x2 = Tensor(a, requires_grad=True)
    (x2 * x2 + x2).sum().backward()
    np.testing.assert_allclose(x2.grad, 2 * a + 1)


def test_deep_chain_has_no_recursion_limit(rng) -> None:
    a = rng.standard_normal(5)
    x = Tensor(a, requires_grad=True)
    y = x
    for _ in range(3000):
        y = y * 1.0001 + 0.001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.full(5, 1.0001 ** 3000), rtol=1e-10)
    assert y._op == "add"


def test_float32_gradients_stay_float32(rng) -> None:
    x = Tensor(rng.standard_normal((2, 3)).astype(np.float32), requires_grad=True)
    (x * x + x.mean()).sum().backward()
    assert x.grad.dtype == np.float32


def test_no_grad_is_per_thread_and_restored_on_error(rng) -> None:
    import threading

    x = Tensor(rng.standard_normal(2), requires_grad=True)
    seen = []
    with no_grad():
        t = threading.Thread(target=lambda: seen.append((x * 2).requires_grad))
        t.start()
        t.join()
    assert seen == [True]
    with pytest.raises(KeyError):
        with no_grad():
            raise KeyError("boom")
    assert (x * 2).requires_grad


# ----------------------------------------------------------------------------- properties

@st.composite
def broadcast_pair(draw):
    """Two shapes that broadcast together (dims dropped or set to 1 on either side)."""
    full = draw(st.lists(st.integers(1, 4), min_size=0, max_size=4))
    shapes = []
    for _ in range(2):
        drop = draw(st.integers(0, len(full)))
        shapes.append(tuple(1 if draw(st.booleans()) else s for s in full[drop:]))
    return shapes


@settings(max_examples=40, deadline=None)
@given(shapes=broadcast_pair(), op=st.sampled_from(["add", "sub", "mul", "div"]),
       seed=st.integers(0, 2**32 - 1))
def test_broadcasting_property_against_torch(shapes, op, seed) -> None:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shapes[0]) + 3.0
    b = rng.standard_normal(shapes[1]) + 3.0
    fn = BINARY[op]
    oa, ob = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    out, ref = fn(oa, ob), fn(ta, tb)
    assert_close_torch(out.data, ref)
    g = rng.standard_normal(ref.shape)
    out.backward(g)
    ref.backward(torch.tensor(g))
    assert oa.grad.shape == a.shape and ob.grad.shape == b.shape
    assert_close_torch(oa.grad, ta.grad)
    assert_close_torch(ob.grad, tb.grad)


def test_deep_chain_of_functional_ops(rng) -> None:
    from fastconv.nn import functional as F

    a = rng.standard_normal((2, 3)) * 0.1
    x = Tensor(a, requires_grad=True)
    tx = torch.tensor(a, requires_grad=True)
    y, ty = x, tx
    for i in range(1200):
        y = F.tanh(y) * 1.01 + x * 0.001 if i % 2 else F.sigmoid(y) - 0.5
        ty = torch.tanh(ty) * 1.01 + tx * 0.001 if i % 2 else torch.sigmoid(ty) - 0.5
    y.sum().backward()
    ty.sum().backward()
    assert_close_torch(y.data, ty)
    assert_close_torch(x.grad, tx.grad)


def test_array_protocol(rng) -> None:
    a = rng.standard_normal(3)
    t = Tensor(a)
    assert np.asarray(t) is a
    assert np.array(t) is not a and np.array_equal(np.array(t), a)
    assert np.asarray(t, dtype=np.float32).dtype == np.float32


@pytest.mark.parametrize("m", [1, 3, 4, 5, 9])
@pytest.mark.parametrize("b_layout", ["transposed", "row_major", "strided"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_matmul_every_path_and_layout(m: int, b_layout: str, dtype, rng) -> None:
    """_cpu.matmul: the streamed few-row loops (m <= 4, both orientations of B), the packed
    GEMM and its transposed form (B^T A^T for a transposed B), on every view layout, against
    float64 NumPy."""
    from fastconv import _cpu

    # n spans several of the streamed loops' column blocks (2048) and a partial one.
    k, n = 301, 4613
    a = rng.standard_normal((m, 2 * k)).astype(dtype)[:, ::2]  # A's rows are gathered
    if b_layout == "transposed":    # x @ W.T: columns of B contiguous
        b = rng.standard_normal((n, k)).astype(dtype).T
    elif b_layout == "row_major":
        b = rng.standard_normal((k, n)).astype(dtype)
    else:                           # neither stride is 1
        b = rng.standard_normal((2 * k, 3 * n)).astype(dtype)[::2, ::3]
    out = np.empty((m, n), dtype=dtype)
    _cpu.matmul(a, b, out)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    bound = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    assert np.all(np.abs(out - expected) <= 4 * k * np.finfo(dtype).eps * bound)
    again = np.empty_like(out)
    _cpu.matmul(a, b, again)
    np.testing.assert_array_equal(out, again)
    if m > 4:
        # The packed GEMM sums every element in one order whatever B's layout, a transposed
        # B (whose product is taken as B^T A^T) included.
        _cpu.matmul(a, np.ascontiguousarray(b), again)
        np.testing.assert_array_equal(out, again)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["relu", "tanh", "sigmoid"])
def test_activation_gradients_match_torch_and_the_array_path(name, dtype) -> None:
    # The backward passes run in C++ on NumPy arrays and as array expressions elsewhere
    # (CuPy; an ndarray subclass takes that path here): both equal torch's gradient, and
    # relu's is 0 where its output is not > 0, even for an infinite or NaN upstream value.
    import torch

    rng = np.random.default_rng(len(name))
    x = rng.standard_normal((3, 70, 129)).astype(dtype) * 3
    x[0, 0, :4] = [0.0, -0.0, np.nan, np.inf]
    g = rng.standard_normal(x.shape).astype(dtype)
    g[0, 1, :2] = [np.inf, np.nan]
    xt = torch.tensor(x, requires_grad=True)
    getattr(torch, name)(xt).backward(torch.tensor(g))
    expected = xt.grad.numpy()

    class Other(np.ndarray):
        pass

    results = []
    for wrap in (lambda a: a, lambda a: a.view(Other)):
        t = Tensor(wrap(x.copy()), requires_grad=True)
        getattr(t, name)().backward(wrap(g[:, :, ::-1].copy()[:, :, ::-1]))
        results.append(np.asarray(t.grad))
    tol = 1e-6 if dtype == np.float32 else 1e-14
    for got in results:
        assert got.dtype == dtype
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol, equal_nan=True)
    # From the same forward output (the forward's tanh may differ by an ulp between the
    # paths), the two backward paths agree bit for bit.
    y = getattr(Tensor(x), name)().data
    np.testing.assert_array_equal(activation_backward(name, g, y),
                                  np.asarray(activation_backward(name, g.view(Other),
                                                                 y.view(Other))))


def test_grads_never_share_memory() -> None:
    # .grad arrays are taken without a copy where that is safe: never one shared by two
    # tensors (add hands the same gradient to both inputs), a view, or the caller's grad.
    rng = np.random.default_rng(0)
    a, b = (Tensor(rng.standard_normal((3, 4)), requires_grad=True) for _ in range(2))
    c = Tensor(rng.standard_normal(12), requires_grad=True)
    g = rng.standard_normal((3, 4))
    (a + b + c.reshape(3, 4)).backward(g)
    grads = [a.grad, b.grad, c.grad, g]
    for i, x in enumerate(grads):
        for y in grads[i + 1:]:
            assert not np.shares_memory(x, y)
    for x in (a, b):
        np.testing.assert_array_equal(x.grad, g)
    np.testing.assert_array_equal(c.grad, g.reshape(12))
    leaf = Tensor(rng.standard_normal(5), requires_grad=True)
    upstream = rng.standard_normal(5)
    leaf.backward(upstream)
    assert not np.shares_memory(leaf.grad, upstream)
    leaf.grad[...] = 0  # the caller's array is untouched
    assert upstream.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_into_matches_numpy(dtype, rng) -> None:
    from fastconv._backend import add_into

    for shape in [(7,), (3, 50001), (2, 3, 33, 17)]:
        total, x = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
        expected = total + x
        add_into(total, x)
        np.testing.assert_array_equal(total, expected)
    total = rng.standard_normal((40, 60)).astype(dtype)[:, ::2]  # a strided view: NumPy's add
    x = rng.standard_normal((40, 30)).astype(dtype)
    expected = total + x
    add_into(total, x)
    np.testing.assert_array_equal(total, expected)
    with pytest.raises(ValueError, match="x"):
        fastconv._cpu.add_into(np.zeros((3, 4), dtype), np.zeros((4, 3), dtype))


def test_gradient_sums_in_place_leave_every_other_array_intact(rng) -> None:
    # Where two gradients of one tensor meet (a residual connection), the sum goes into the
    # first one's memory if nothing else can see it. Here x meets every kind of first
    # gradient: a fresh array (the conv's input gradient, from the host cache), one handed
    # to two parents at once (add), a view (reshape), the caller's grad, an array a backward
    # keeps (the product's saved factor) and a view of another tensor's gradient. Each sum
    # must equal torch's (or the exact one) and no other array may change.
    a = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    wa = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    conv = fastconv.nn.functional.conv
    x, w = Tensor(a, requires_grad=True), Tensor(wa, requires_grad=True)
    h = conv(x, w, padding=1)
    s = x + x
    v = x.reshape(2, 324).reshape(2, 4, 9, 9)
    y = (h + x) * s + conv(v, w, padding=1) + v + x * h.detach() + s
    upstream = rng.standard_normal(y.shape).astype(np.float32)
    kept = upstream.copy()
    y.backward(upstream)
    np.testing.assert_array_equal(upstream, kept)
    ta, tw = (torch.tensor(t, requires_grad=True) for t in (a, wa))
    th = torch.nn.functional.conv2d(ta, tw, padding=1)
    ts = ta + ta
    tv = ta.reshape(2, 324).reshape(2, 4, 9, 9)
    ty = ((th + ta) * ts + torch.nn.functional.conv2d(tv, tw, padding=1) + tv
          + ta * th.detach() + ts)
    ty.backward(torch.from_numpy(upstream))
    assert_close_torch(x.grad, ta.grad, rtol=1e-4, atol=1e-4)
    assert_close_torch(w.grad, tw.grad, rtol=1e-4, atol=1e-4)
    # x's first gradient a view of z's (add hands one array to z and to the reshape).
    b = rng.standard_normal((6, 4))
    x, z = Tensor(b, requires_grad=True), Tensor(b.reshape(24), requires_grad=True)
    ((z + x.reshape(24)) * 3.0 + x.reshape(24) * 2.0).sum().backward()
    np.testing.assert_array_equal(z.grad, np.full(24, 3.0))
    np.testing.assert_array_equal(x.grad, np.full((6, 4), 5.0))
    # The residual sums of a ResNet block, checked the same way through a training model.
    from fastconv.models.torch_twins import TWINS

    net = fastconv.models.resnet18().train().double()
    batch = rng.standard_normal((4, 3, 64, 64))
    out = net(Tensor(batch))
    grad = rng.standard_normal(out.shape)
    out.backward(grad)
    twin = TWINS["resnet18"]().train().double()
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                          for k, v in net.state_dict().items()})
    twin(torch.from_numpy(batch)).backward(torch.from_numpy(grad))
    theirs = dict(twin.named_parameters())
    for name, p in net.named_parameters():
        ref = theirs[name].grad
        assert_close_torch(p.grad, ref, rtol=1e-7, atol=1e-9 * float(ref.abs().max()))


def test_conv_weight_gradient_is_taken_without_a_copy_and_never_shared() -> None:
    # Large gradients come from fastconv's host cache (their base is a cache block, not an
    # array): taken as they are; a second leaf getting the same array gets a copy.
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((4, 8, 40, 40)).astype(np.float32))
    w = Tensor(rng.standard_normal((64, 8, 3, 3)).astype(np.float32), requires_grad=True)
    y = fastconv.nn.functional.conv(x, w, padding=1)
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    expected = fastconv.conv_backward_weight(x.data, g, 3, padding=1)
    np.testing.assert_array_equal(w.grad, expected)
    a, b = (Tensor(rng.standard_normal((600, 600)).astype(np.float32), requires_grad=True)
            for _ in range(2))
    (a * 2 + b).backward(np.ones((600, 600), np.float32))
    assert not np.shares_memory(a.grad, b.grad)
