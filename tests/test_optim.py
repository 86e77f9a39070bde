"""fastconv.optim against torch.optim: step-by-step updates, param groups, schedules, errors."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
import torch

import fastconv
from fastconv import optim
from fastconv.tensor import Parameter

DTYPES = [np.float64, np.float32]
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}
SHAPES = [(3, 4), (5,), (2, 3, 2)]
STEPS = 10


class Param:
    """Stand-in with exactly the attributes fastconv.Tensor exposes to an optimizer."""

    def __init__(self, data: np.ndarray, requires_grad: bool = True) -> None:
        self.data = data
        self.grad: np.ndarray | None = None
        self.requires_grad = requires_grad


def tolerance(dtype: Any) -> dict[str, float]:
    # torch's CPU kernels may fuse multiply-adds that NumPy rounds twice, so the two drift
    # apart by a few ulps per step; the bounds leave room for that over STEPS steps only.
    if dtype == np.float32:
        return {"rtol": 2e-5, "atol": 1e-6}
    return {"rtol": 1e-12, "atol": 1e-13}


def make_pair(rng: np.random.Generator, dtype: Any, shapes=SHAPES):
    """The same random starting values as fastconv stand-ins and as torch leaves."""
    ours, theirs = [], []
    for shape in shapes:
        a = rng.standard_normal(shape).astype(dtype)
        ours.append(Param(a.copy()))
        theirs.append(torch.tensor(a.copy(), dtype=TORCH_DTYPE[dtype], requires_grad=True))
    return ours, theirs


def feed_grads(rng: np.random.Generator, ours, theirs, skip: frozenset = frozenset()) -> None:
    """Give both sides identical fresh gradients; indices in `skip` get None on both."""
    for i, (p, t) in enumerate(zip(ours, theirs)):
        if i in skip:
            p.grad, t.grad = None, None
            continue
        g = rng.standard_normal(p.data.shape).astype(p.data.dtype)
        p.grad = g
        t.grad = torch.from_numpy(g.copy())


def assert_same(ours, theirs, dtype: Any) -> None:
    for p, t in zip(ours, theirs):
        assert p.data.dtype == dtype
        np.testing.assert_allclose(p.data, t.detach().numpy(), **tolerance(dtype))


def run_both(make_ours: Callable, make_theirs: Callable, dtype: Any, seed: int,
             scheduler: tuple[Callable, Callable] | None = None) -> tuple:
    rng = np.random.default_rng(seed)
    ours, theirs = make_pair(rng, dtype)
    arrays = [p.data for p in ours]
    opt, topt = make_ours(ours), make_theirs(theirs)
    sched = tsched = None
    if scheduler is not None:
        sched, tsched = scheduler[0](opt), scheduler[1](topt)
    for _ in range(STEPS):
        feed_grads(rng, ours, theirs)
        opt.step()
        topt.step()
        if sched is not None:
            sched.step()
            tsched.step()
            assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-15)
        assert_same(ours, theirs, dtype)
    # Updates are in place: the arrays handed in are the ones that changed.
    assert all(p.data is a for p, a in zip(ours, arrays))
    return opt, ours


SGD_CONFIGS = [
    {"lr": 0.1},
    {"lr": 0.05, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    {"lr": 0.1, "weight_decay": 0.01},
    {"lr": 0.03, "momentum": 0.8, "weight_decay": 0.1},
    {"lr": 0.03, "momentum": 0.5, "weight_decay": 0.05, "nesterov": True},
    {"lr": 0.0, "momentum": 0.9},
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", SGD_CONFIGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_sgd_matches_torch(kwargs: dict, dtype: Any) -> None:
    opt, ours = run_both(lambda ps: optim.SGD(ps, **kwargs),
                         lambda ts: torch.optim.SGD(ts, **kwargs), dtype, seed=len(str(kwargs)))
    if kwargs.get("momentum", 0):
        for p in ours:
            buf = opt.state[p]["momentum_buffer"]
            assert buf.dtype == dtype and buf.shape == p.data.shape


ADAM_CONFIGS = [
    {},
    {"lr": 1e-2},
    {"lr": 1e-2, "weight_decay": 0.1},
    {"lr": 3e-3, "betas": (0.8, 0.99)},
    # beta1 = 0.5 puts torch's lerp on its other rounding branch (weight >= 0.5).
    {"lr": 1e-2, "betas": (0.5, 0.9), "eps": 1e-6, "weight_decay": 0.01},
    {"lr": 1e-2, "betas": (0.0, 0.0)},
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", ADAM_CONFIGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "defaults")
def test_adam_matches_torch(kwargs: dict, dtype: Any) -> None:
    opt, ours = run_both(lambda ps: optim.Adam(ps, **kwargs),
                         lambda ts: torch.optim.Adam(ts, **kwargs), dtype, seed=7 + len(kwargs))
    for p in ours:
        state = opt.state[p]
        assert state["step"] == STEPS
        assert state["exp_avg"].dtype == dtype and state["exp_avg_sq"].dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("which", ["SGD", "Adam"])
def test_param_groups_match_torch(which: str, dtype: Any) -> None:
    def groups(ps):
        return [{"params": ps[:1], "lr": 0.2},
                {"params": ps[1:2]},
                {"params": ps[2:], "lr": 0.01, "weight_decay": 0.1}]

    kwargs = {"lr": 0.05, "momentum": 0.9} if which == "SGD" else {"lr": 0.05}
    opt, _ = run_both(lambda ps: getattr(optim, which)(groups(ps), **kwargs),
                      lambda ts: getattr(torch.optim, which)(groups(ts), **kwargs), dtype, seed=3)
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.05, 0.01]
    assert [g["weight_decay"] for g in opt.param_groups] == [0, 0, 0.1]


def _lr_sequence(make_sched: Callable, opt: Any, epochs: int) -> list[list[float]]:
    sched = make_sched(opt)
    seq = [sched.get_last_lr()]
    for _ in range(epochs):
        opt.step()  # no grads: a no-op that keeps torch's call-order check quiet
        sched.step()
        seq.append(sched.get_last_lr())
    return seq


@pytest.mark.parametrize("name,kwargs", [
    ("StepLR", {"step_size": 3}),
    ("StepLR", {"step_size": 2, "gamma": 0.5}),
    ("CosineAnnealingLR", {"T_max": 5}),
    # 23 epochs run past T_max twice, through the minimum and back up the cosine.
    ("CosineAnnealingLR", {"T_max": 4, "eta_min": 0.001}),
])
def test_schedules_match_torch(name: str, kwargs: dict) -> None:
    ours = optim.SGD([{"params": [Param(np.zeros(2))], "lr": 0.1},
                      {"params": [Param(np.zeros(3))], "lr": 0.03}], lr=0.5, momentum=0.9)
    theirs = torch.optim.SGD([{"params": [torch.zeros(2, requires_grad=True)], "lr": 0.1},
                              {"params": [torch.zeros(3, requires_grad=True)], "lr": 0.03}],
                             lr=0.5, momentum=0.9)
    got = _lr_sequence(lambda o: getattr(optim, name)(o, **kwargs), ours, 23)
    want = _lr_sequence(lambda o: getattr(torch.optim.lr_scheduler, name)(o, **kwargs), theirs, 23)
    # Same Python float arithmetic in the same order: equal, not merely close.
    assert got == want
    assert [g["lr"] for g in ours.param_groups] == got[-1]
    assert [g["initial_lr"] for g in ours.param_groups] == [0.1, 0.03]


@pytest.mark.parametrize("dtype", DTYPES)
def test_scheduled_training_matches_torch(dtype: Any) -> None:
    run_both(lambda ps: optim.Adam(ps, lr=0.05), lambda ts: torch.optim.Adam(ts, lr=0.05), dtype,
             seed=11, scheduler=(lambda o: optim.CosineAnnealingLR(o, T_max=4),
                                 lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4)))
    run_both(lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
             lambda ts: torch.optim.SGD(ts, lr=0.1, momentum=0.9), dtype, seed=12,
             scheduler=(lambda o: optim.StepLR(o, 3, gamma=0.5),
                        lambda o: torch.optim.lr_scheduler.StepLR(o, 3, gamma=0.5)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("which,kwargs", [("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.1}),
                                          ("Adam", {"lr": 0.1, "weight_decay": 0.1})])
def test_params_without_grad_are_untouched(which: str, kwargs: dict, dtype: Any) -> None:
    rng = np.random.default_rng(5)
    ours, theirs = make_pair(rng, dtype)
    frozen = ours[1].data.copy()
    opt = getattr(optim, which)(ours, **kwargs)
    topt = getattr(torch.optim, which)(theirs, **kwargs)
    for step in range(STEPS):
        # Parameter 1 never has a grad; parameter 2 misses every other step, which must
        # neither decay it nor advance its momentum or Adam step count.
        feed_grads(rng, ours, theirs, skip=frozenset({1} | ({2} if step % 2 else set())))
        opt.step()
        topt.step()
        assert_same(ours, theirs, dtype)
    np.testing.assert_array_equal(ours[1].data, frozen)
    assert ours[1] not in opt.state
    if which == "Adam":
        assert opt.state[ours[2]]["step"] == STEPS // 2


def test_zero_grad() -> None:
    ps = [Param(np.ones(3)), Param(np.ones(2)), Param(np.ones(1), requires_grad=False)]
    opt = optim.SGD(ps, lr=0.1)
    for p in ps[:2]:
        p.grad = np.full(p.data.shape, 2.0)
    opt.zero_grad()
    assert all(p.grad is None for p in ps)
    opt.step()  # nothing to do
    np.testing.assert_array_equal(ps[0].data, np.ones(3))

    grad = np.full(3, 2.0)
    ps[0].grad = grad
    opt.zero_grad(set_to_none=False)
    assert ps[0].grad is grad and not grad.any()


def test_update_is_in_place_and_keeps_float32() -> None:
    data = np.ones((2, 3), dtype=np.float32)
    view = data[0]
    p = Param(data)
    opt = optim.Adam([p], lr=0.5)
    p.grad = np.ones((2, 3), dtype=np.float64)  # a wider grad must not widen the parameter
    opt.step()
    assert p.data is data and data.dtype == np.float32
    assert view[0] == pytest.approx(0.5)
    assert opt.state[p]["exp_avg"].dtype == np.float32


def test_package_exports_optim() -> None:
    assert fastconv.optim is optim and "optim" in fastconv.__all__


def _ps() -> list[Param]:
    return [Param(np.zeros(2))]


@pytest.mark.parametrize("make,exc,name", [
    (lambda: optim.SGD(_ps(), lr=-0.1), ValueError, "lr"),
    (lambda: optim.SGD(_ps(), lr=float("nan")), ValueError, "lr"),
    (lambda: optim.SGD(_ps(), lr="0.1"), TypeError, "lr"),
    (lambda: optim.SGD(_ps(), lr=0.1, momentum=-0.9), ValueError, "momentum"),
    (lambda: optim.SGD(_ps(), lr=0.1, weight_decay=-1e-4), ValueError, "weight_decay"),
    (lambda: optim.SGD(_ps(), lr=0.1, nesterov=True), ValueError, "momentum"),
    (lambda: optim.SGD([{"params": _ps(), "lr": -1.0}], lr=0.1), ValueError, "lr"),
    (lambda: optim.Adam(_ps(), lr=-1e-3), ValueError, "lr"),
    (lambda: optim.Adam(_ps(), eps=-1e-8), ValueError, "eps"),
    (lambda: optim.Adam(_ps(), weight_decay=-0.1), ValueError, "weight_decay"),
    (lambda: optim.Adam(_ps(), betas=(1.0, 0.999)), ValueError, "betas"),
    (lambda: optim.Adam(_ps(), betas=(0.9, -0.1)), ValueError, "betas"),
    (lambda: optim.Adam(_ps(), betas=(0.9,)), ValueError, "betas"),
    (lambda: optim.Adam(_ps(), betas=0.9), TypeError, "betas"),
    (lambda: optim.SGD([], lr=0.1), ValueError, "empty params"),
    (lambda: optim.Adam([{"params": []}]), ValueError, "empty params"),
    (lambda: optim.SGD(Param(np.zeros(2)), lr=0.1), TypeError, "params"),
    (lambda: optim.SGD([np.zeros(2)], lr=0.1), TypeError, "params"),
    (lambda: optim.SGD([Param(np.zeros(2, dtype=np.int64))], lr=0.1), TypeError, "params"),
    (lambda: optim.SGD(set(_ps()), lr=0.1), TypeError, "ordered"),
    (lambda: optim.SGD(_ps() * 2, lr=0.1), ValueError, "duplicate"),
    (lambda: optim.StepLR(optim.SGD(_ps(), lr=0.1), step_size=0), ValueError, "step_size"),
    (lambda: optim.StepLR(optim.SGD(_ps(), lr=0.1), step_size=1.5), TypeError, "step_size"),
    (lambda: optim.CosineAnnealingLR(optim.SGD(_ps(), lr=0.1), T_max=0), ValueError, "T_max"),
    (lambda: optim.CosineAnnealingLR(object(), T_max=3), TypeError, "optimizer"),
])
def test_bad_arguments(make: Callable, exc: type, name: str) -> None:
    with pytest.raises(exc, match=name):
        make()


def test_param_in_two_groups_rejected() -> None:
    p = Param(np.zeros(2))
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [p]}, {"params": [p], "lr": 0.2}], lr=0.1)


def test_grad_shape_mismatch_rejected() -> None:
    p = Param(np.zeros(2))
    opt = optim.SGD([p], lr=0.1)
    p.grad = np.zeros(3)
    with pytest.raises(ValueError, match="shape"):
        opt.step()


# -- L-BFGS ----------------------------------------------------------------------------------
#
# Both optimizers get the loss and the gradient from one NumPy function, so the comparison
# sees only the optimizers' arithmetic; the small network runs each side's own autograd.


def quadratic(n: int = 12, seed: int = 0) -> Callable:
    """f(x) = 1/2 x^T A x - b^T x with A symmetric positive definite, condition ~100.
    Summed elementwise, not by BLAS, whose rounding can depend on the arrays' alignment."""
    a, b = _spd_system(n, seed)
    return lambda x: (0.5 * np.sum(x[:, None] * a * x[None, :]) - np.sum(b * x),
                      np.sum(a * x[None, :], axis=1) - b)


def _spd_system(n: int, seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return q @ np.diag(np.geomspace(0.1, 10, n)) @ q.T, rng.standard_normal(n)


def rosenbrock(x: np.ndarray) -> tuple:
    r = x[1:] - x[:-1] ** 2
    grad = np.zeros_like(x)
    grad[1:] += 200 * r
    grad[:-1] += -400 * r * x[:-1] - 2 * (1 - x[:-1])
    return np.sum(100 * r ** 2 + (1 - x[:-1]) ** 2), grad


LBFGS_CONFIGS = [
    {"max_iter": 4},
    {"lr": 0.5, "max_iter": 3, "history_size": 2},
    {"line_search_fn": "strong_wolfe", "max_iter": 5},
    {"line_search_fn": "strong_wolfe", "max_iter": 7, "max_eval": 9, "history_size": 3},
    {"line_search_fn": "strong_wolfe", "max_iter": 20, "tolerance_grad": 1e-4},
    {"max_iter": 10, "tolerance_change": 1e-2},
    # line-search branches: extrapolation from a short first step, zoom after a long one,
    # the search cut off by max_eval
    {"line_search_fn": "strong_wolfe", "lr": 0.01, "max_iter": 6},
    {"line_search_fn": "strong_wolfe", "lr": 30, "max_iter": 6},
    {"line_search_fn": "strong_wolfe", "lr": 1e-3, "max_iter": 4, "max_eval": 3},
]
LBFGS_IDS = [",".join(f"{k}={v}" for k, v in c.items()) for c in LBFGS_CONFIGS]


def run_lbfgs(fn: Callable, x0: np.ndarray, kwargs: dict, steps: int, shapes: list) -> list:
    """Run fastconv's and torch's LBFGS side by side on fn (flat x -> (f, grad)) with x
    split into parameters of `shapes`; after every step the evaluation and iteration
    counts must agree. Returns per step the larger relative difference of the parameters
    and of the loss the step returned."""
    sizes = [int(np.prod(s)) for s in shapes]
    parts = np.split(x0, np.cumsum(sizes)[:-1])
    ours = [Param(p.reshape(s).copy()) for p, s in zip(parts, shapes)]
    theirs = [torch.tensor(p.reshape(s).copy(), requires_grad=True)
              for p, s in zip(parts, shapes)]
    opt, topt = optim.LBFGS(ours, **kwargs), torch.optim.LBFGS(theirs, **kwargs)
    calls = [0]

    def evaluate(params: list, set_grads: Callable) -> float:
        flat = np.concatenate([np.asarray(p).reshape(-1) for p in params])
        f, g = fn(flat)
        set_grads(np.split(g, np.cumsum(sizes)[:-1]))
        return float(f)

    def closure() -> float:
        calls[0] += 1

        def set_grads(gs: list) -> None:
            for p, g in zip(ours, gs):
                p.grad = g.reshape(p.data.shape).astype(p.data.dtype)
        return evaluate([p.data for p in ours], set_grads)

    def tclosure() -> float:
        def set_grads(gs: list) -> None:
            for p, g in zip(theirs, gs):
                p.grad = torch.from_numpy(g.reshape(p.shape).astype(x0.dtype))
        return evaluate([p.detach().numpy() for p in theirs], set_grads)

    errors = []
    for _ in range(steps):
        before = calls[0]
        loss, tloss = opt.step(closure), topt.step(tclosure)
        ours_flat = np.concatenate([p.data.reshape(-1) for p in ours])
        theirs_flat = np.concatenate([p.detach().numpy().reshape(-1) for p in theirs])
        state, tstate = opt.state[ours[0]], topt.state[theirs[0]]
        assert (state["func_evals"], state["n_iter"]) == (tstate["func_evals"],
                                                          tstate["n_iter"])
        assert calls[0] - before >= 1 and ours_flat.dtype == x0.dtype
        scale = np.abs(theirs_flat).max() + 1e-300
        errors.append(max(float(np.abs(ours_flat - theirs_flat).max() / scale),
                          abs(float(loss) - float(tloss)) / max(abs(float(tloss)), 1.0)))
    return errors


@pytest.mark.parametrize("kwargs", LBFGS_CONFIGS, ids=LBFGS_IDS)
def test_lbfgs_matches_torch_on_a_quadratic(kwargs: dict) -> None:
    x0 = np.random.default_rng(1).standard_normal(12)
    errors = run_lbfgs(quadratic(), x0, kwargs, steps=8, shapes=[(3, 2), (6,)])
    # torch fuses p + t * d into one multiply-add and sums dot products in another order:
    # last-bit differences, which the iteration carries forward.
    assert max(errors) < 1e-10, errors


@pytest.mark.parametrize("kwargs", LBFGS_CONFIGS, ids=LBFGS_IDS)
def test_lbfgs_matches_torch_on_rosenbrock(kwargs: dict) -> None:
    # The valley's ill-conditioning multiplies the two BLAS libraries' rounding
    # differences (dot products summed in another order) by about 10 per iteration;
    # the stopping tests and evaluation counts must still agree exactly.
    x0 = np.random.default_rng(2).standard_normal(6)
    errors = run_lbfgs(rosenbrock, x0, kwargs, steps=4, shapes=[(6,)])
    assert max(errors) < 1e-9, errors


def wavy(x: np.ndarray) -> tuple:
    """A non-convex sum of a bowl and ripples: the line search meets curvature of both
    signs."""
    return np.sum(0.5 * x ** 2 + 2 * np.cos(3 * x)), x - 6 * np.sin(3 * x)


@pytest.mark.parametrize("kwargs", [c for c in LBFGS_CONFIGS if "line_search_fn" in c],
                         ids=[i for c, i in zip(LBFGS_CONFIGS, LBFGS_IDS)
                              if "line_search_fn" in c])
def test_lbfgs_matches_torch_on_a_non_convex_function(kwargs: dict) -> None:
    # (Fixed steps on ripples are chaotic: last-bit differences grow to O(1) in a few
    # iterations, so only the line-search configurations can be compared here.)
    x0 = np.random.default_rng(4).uniform(-3, 3, 8)
    errors = run_lbfgs(wavy, x0, kwargs, steps=5, shapes=[(2, 4)])
    assert max(errors) < 1e-9, errors


def test_lbfgs_zoom_steps_away_from_the_bracket_ends() -> None:
    # sum log(1 + x^2) from far away with lr 100: the zoom's trial steps land next to the
    # bracket's ends and are moved 10% inside (torch's insufficient-progress rule)
    def cauchy(x: np.ndarray) -> tuple:
        return np.sum(np.log1p(x ** 2)), 2 * x / (1 + x ** 2)

    x0 = np.random.default_rng(3).uniform(-3, 3, 5)
    kwargs = {"line_search_fn": "strong_wolfe", "lr": 100, "max_iter": 8,
              "tolerance_change": 1e-6}
    errors = run_lbfgs(cauchy, x0, kwargs, steps=4, shapes=[(5,)])
    assert max(errors) < 1e-9, errors


def test_lbfgs_float32_stays_float32_and_close_to_torch() -> None:
    x0 = np.random.default_rng(3).standard_normal(12).astype(np.float32)
    errors = run_lbfgs(lambda x: tuple(np.asarray(v, dtype=np.float32)
                                       for v in quadratic()(x.astype(np.float64))),
                       x0, {"max_iter": 5, "line_search_fn": "strong_wolfe"}, steps=3,
                       shapes=[(12,)])
    assert max(errors) < 1e-4, errors


def test_lbfgs_trains_a_network_as_torch_does() -> None:
    from fastconv import Tensor, nn
    from fastconv.nn import functional as Fn

    fastconv.manual_seed(4)
    net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    twin = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(),
                               torch.nn.Linear(8, 2)).double()
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in net.state_dict().items()})
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((16, 5)), rng.standard_normal((16, 2))
    kwargs = {"max_iter": 6, "history_size": 4, "line_search_fn": "strong_wolfe"}
    opt = optim.LBFGS(net.parameters(), **kwargs)
    topt = torch.optim.LBFGS(twin.parameters(), **kwargs)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = Fn.mse_loss(net(Tensor(x)), Tensor(y))
        loss.backward()
        return loss

    def tclosure() -> torch.Tensor:
        topt.zero_grad()
        loss = torch.nn.functional.mse_loss(twin(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        return loss.detach()   # torch's LBFGS takes float() of it

    first = None
    for _ in range(5):
        loss, tloss = opt.step(closure), topt.step(tclosure)
        first = first if first is not None else float(loss)
        assert isinstance(loss, Tensor)
        assert float(loss) == pytest.approx(float(tloss), rel=1e-9)
        for (name, p), tp in zip(net.named_parameters(), twin.parameters()):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-8, atol=1e-10,
                                       err_msg=name)
    assert float(closure()) < 0.5 * first


def test_lbfgs_stops_at_a_stationary_point() -> None:
    a, b = _spd_system(4, 0)
    p = Param(np.linalg.solve(a, b))          # the minimizer: gradient ~1e-15
    opt = optim.LBFGS([p], max_iter=5)
    calls = []

    def closure() -> float:
        f, g = quadratic(4)(p.data)
        p.grad = g
        calls.append(f)
        return f

    assert opt.step(closure) == calls[0] and len(calls) == 1
    assert opt.state[p]["func_evals"] == 1 and opt.state[p]["n_iter"] == 0


@pytest.mark.parametrize("make,exc,name", [
    (lambda: optim.LBFGS(_ps(), lr=-1), ValueError, "lr"),
    (lambda: optim.LBFGS(_ps(), line_search_fn="armijo"), ValueError, "line_search_fn"),
    (lambda: optim.LBFGS(_ps(), history_size=0), ValueError, "history_size"),
    (lambda: optim.LBFGS(_ps(), max_iter=2.5), TypeError, "max_iter"),
    (lambda: optim.LBFGS(_ps(), max_eval=-1), ValueError, "max_eval"),
    (lambda: optim.LBFGS([{"params": _ps()}, {"params": _ps()}]), ValueError, "groups"),
    (lambda: optim.LBFGS(_ps()).step(), TypeError, "closure"),
    (lambda: optim.LBFGS(_ps()).step(1.0), TypeError, "closure"),
])
def test_lbfgs_bad_arguments(make: Callable, exc: type, name: str) -> None:
    with pytest.raises(exc, match=name):
        make()


class _ArrayPath(np.ndarray):
    """An ndarray subclass: the optimizers update it with array ops, not the fused step."""


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make, kwargs", [
    (optim.SGD, dict(lr=0.05)),
    (optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=1e-2)),
    (optim.SGD, dict(lr=0.05, momentum=0.8, dampening=0.3)),
    (optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    (optim.Adam, dict(lr=1e-2)),
    (optim.Adam, dict(lr=1e-2, betas=(0.3, 0.95), weight_decay=1e-2)),
], ids=str)
def test_fused_steps_equal_the_array_path_and_torch(make, kwargs, dtype) -> None:
    # Several parameters (one larger than a parallel chunk), several steps: the fused C++
    # step gives bitwise what the array ops give, and agrees with torch.
    import torch

    rng = np.random.default_rng(7)
    shapes = [(3,), (70, 41), (5, 3, 3, 3), (300, 257)]
    start = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(4)]
    # fastconv's SGD takes dampening per parameter group only.
    kwargs = dict(kwargs)
    group = {"dampening": kwargs.pop("dampening")} if "dampening" in kwargs else {}
    results = []
    for wrap in (lambda a: a, lambda a: a.view(_ArrayPath)):
        params = [Parameter(wrap(a.copy())) for a in start]
        opt = make([dict(params=params, **group)], **kwargs)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = wrap(g.copy())
            opt.step()
        results.append([np.asarray(p.data) for p in params])
    for fused, arrays in zip(*results):
        np.testing.assert_array_equal(fused, arrays)
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in start]
    topt = getattr(torch.optim, make.__name__)(tparams, **kwargs, **group)
    for step in grads:
        for p, g in zip(tparams, step):
            p.grad = torch.tensor(g)
        topt.step()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for ours, theirs in zip(results[0], tparams):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=tol, atol=tol)


def test_fused_step_handles_mixed_dtypes_and_layouts() -> None:
    # float32 and float64 parameters in one group, a non-contiguous one, and a loaded
    # state in another dtype: each takes the path that fits it, with the same results.
    rng = np.random.default_rng(3)
    a = Parameter(rng.standard_normal((4, 5)).astype(np.float32))
    b = Parameter(rng.standard_normal((6,)))
    c = Parameter(rng.standard_normal((8, 6)).astype(np.float32)[:, ::2])
    ga, gb, gc = (rng.standard_normal(p.shape).astype(p.dtype) for p in (a, b, c))
    opt = optim.Adam([a, b, c], lr=0.1)
    expected = []
    for p, g in ((a, ga), (b, gb), (c, gc)):
        solo = Parameter(np.ascontiguousarray(p.data).view(_ArrayPath))
        solo.grad = g.view(_ArrayPath)
        optim.Adam([solo], lr=0.1).step()
        expected.append(np.asarray(solo.data))
    for p, g in ((a, ga), (b, gb), (c, gc)):
        p.grad = g
    opt.step()
    for p, e in zip((a, b, c), expected):
        np.testing.assert_array_equal(p.data, e)
    opt.state[a]["exp_avg"] = opt.state[a]["exp_avg"].astype(np.float64)
    a.grad = ga
    opt.step()  # the float64 state takes the array path
    assert opt.state[a]["step"] == 2
