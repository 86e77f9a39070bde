"""fastconv.nn layers against their torch.nn twins: forward, input and parameter gradients,
state-dict names, loading errors, initialization, modes and error messages."""

from __future__ import annotations

import copy
from collections import OrderedDict

import numpy as np
import pytest

import fastconv
from fastconv import nn, optim
from fastconv.nn import functional as F
from fastconv.tensor import Tensor

torch = pytest.importorskip("torch")

@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261124)


TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-9, atol=1e-11)}


def _np(value) -> np.ndarray:
    """A gradient or output as NumPy, whether it is a Tensor or an array."""
    return np.asarray(getattr(value, "data", value))


def _twin(ours: nn.Module, twin: "torch.nn.Module", dtype) -> "torch.nn.Module":
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    return twin.double() if dtype == np.float64 else twin


def _check_against_torch(ours: nn.Module, twin: "torch.nn.Module", shape, dtype,
                         rng: np.random.Generator) -> None:
    """Forward output, input gradient and every parameter gradient agree with torch."""
    if dtype == np.float64:
        ours.double()
    twin = _twin(ours, twin, dtype)
    x = rng.standard_normal(shape).astype(dtype)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    xo = Tensor(x, requires_grad=True)
    expected = twin(xt)
    got = ours(xo)
    np.testing.assert_allclose(_np(got), expected.detach().numpy(), **TOL[dtype])
    g = rng.standard_normal(expected.shape).astype(dtype)
    expected.backward(torch.from_numpy(g))
    got.backward(g)
    np.testing.assert_allclose(_np(xo.grad), xt.grad.numpy(), **TOL[dtype])
    theirs = dict(twin.named_parameters())
    names = [name for name, _ in ours.named_parameters()]
    assert names == list(theirs)
    for name, param in ours.named_parameters():
        np.testing.assert_allclose(_np(param.grad), theirs[name].grad.numpy(), **TOL[dtype],
                                   err_msg=name)
    for name, buf in ours.named_buffers():
        np.testing.assert_allclose(_np(buf), twin.get_buffer(name).numpy(), **TOL[dtype],
                                   err_msg=name)


# (layer name, constructor args, constructor kwargs, input shape)
LAYERS = [
    ("Conv1d", (3, 4, 3), dict(stride=2, padding=1), (2, 3, 11)),
    ("Conv1d", (4, 6, 3), dict(dilation=2, groups=2, bias=False), (2, 4, 12)),
    ("Conv2d", (3, 8, 3), dict(padding=1), (2, 3, 9, 8)),
    ("Conv2d", (3, 4, 3), dict(padding="same"), (2, 3, 7, 6)),
    ("Conv2d", (3, 4, 3), dict(padding="valid"), (2, 3, 7, 6)),
    ("Conv2d", (4, 6, (3, 2)), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2),
     (2, 4, 9, 10)),
    ("Conv2d", (4, 4, 3), dict(groups=4, padding=1), (2, 4, 6, 6)),
    ("Conv3d", (2, 3, (2, 3, 3)), dict(stride=(1, 2, 2), padding=1), (2, 2, 4, 7, 6)),
    ("MaxPool1d", (2,), {}, (2, 3, 9)),
    ("MaxPool2d", (3, 2, 1), {}, (2, 3, 9, 8)),
    ("MaxPool2d", (3, 2), dict(ceil_mode=True), (2, 3, 10, 9)),
    ("MaxPool3d", (2,), {}, (2, 2, 4, 6, 5)),
    ("AvgPool1d", (3, 2, 1), {}, (2, 3, 10)),
    ("AvgPool2d", (3, 2, 1), dict(count_include_pad=False), (2, 3, 9, 8)),
    ("AvgPool2d", (2,), dict(ceil_mode=True), (2, 3, 7, 7)),
    ("AvgPool3d", (2,), {}, (2, 2, 4, 6, 4)),
    ("AdaptiveAvgPool2d", ((1, 1),), {}, (2, 3, 5, 7)),
    ("AdaptiveAvgPool2d", (2,), {}, (2, 3, 4, 6)),
    ("Linear", (7, 5), {}, (4, 7)),
    ("Linear", (7, 5), dict(bias=False), (2, 3, 7)),
    ("ReLU", (), {}, (3, 4, 5)),
    ("Sigmoid", (), {}, (3, 4, 5)),
    ("Tanh", (), {}, (3, 4, 5)),
    ("Softmax", (), dict(dim=1), (3, 4, 5)),
    ("Softmax", (), dict(dim=-1), (3, 4, 5)),
    ("Flatten", (), {}, (2, 3, 4, 5)),
    ("Flatten", (), dict(start_dim=1, end_dim=2), (2, 3, 4, 5)),
    ("Identity", (), {}, (2, 3)),
    ("LocalResponseNorm", (5,), dict(alpha=1e-2, beta=0.75, k=2.0), (2, 7, 4, 3)),
    ("LocalResponseNorm", (2,), {}, (2, 4, 5)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,args,kwargs,shape", LAYERS,
                         ids=[f"{n}-{i}" for i, (n, *_) in enumerate(LAYERS)])
def test_layer_matches_torch(name, args, kwargs, shape, dtype, rng):
    ours = getattr(nn, name)(*args, **kwargs)
    twin = getattr(torch.nn, name)(*args, **kwargs)
    _check_against_torch(ours, twin, shape, dtype, rng)


def test_conv_generic_and_padding_pairs(rng):
    """Conv(ndim, ...) is ConvNd; (before, after) padding pairs reach fastconv.conv."""
    fastconv.manual_seed(2)
    generic = nn.Conv(2, 4, 6, 3, stride=2, padding=((1, 0), (0, 2)), groups=2)
    fastconv.manual_seed(2)
    named = nn.Conv2d(4, 6, 3, stride=2, padding=((1, 0), (0, 2)), groups=2)
    for key, value in generic.state_dict().items():
        np.testing.assert_array_equal(value, named.state_dict()[key])
    x = rng.standard_normal((2, 4, 7, 8)).astype(np.float32)
    expected = fastconv.conv(x, generic.weight.data, generic.bias.data, stride=2,
                             padding=((1, 0), (0, 2)), groups=2)
    np.testing.assert_array_equal(_np(generic(Tensor(x))), expected)
    assert _np(named(Tensor(x))).shape == (2, 6, 3, 4)


BATCH_NORMS = [
    ("BatchNorm1d", (8, 5)), ("BatchNorm1d", (8, 5, 3)), ("BatchNorm2d", (4, 5, 3, 2)),
    ("BatchNorm3d", (2, 5, 3, 2, 2)),
]
BN_OPTIONS = [dict(), dict(momentum=None), dict(affine=False),
              dict(track_running_stats=False), dict(eps=1e-3, momentum=0.3)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", BN_OPTIONS, ids=str)
@pytest.mark.parametrize("name,shape", BATCH_NORMS)
def test_batch_norm_matches_torch(name, shape, kwargs, dtype, rng):
    """Train steps update running stats as torch; eval then uses them."""
    ours = getattr(nn, name)(5, **kwargs)
    twin = getattr(torch.nn, name)(5, **kwargs)
    if ours.affine:  # non-trivial affine parameters
        ours.load_state_dict({**ours.state_dict(),
                              "weight": rng.uniform(0.5, 1.5, 5),
                              "bias": rng.standard_normal(5)})
    for _ in range(3):
        _check_against_torch(ours, twin, shape, dtype, rng)
        twin.zero_grad()
        ours.zero_grad()
    ours.eval()
    twin.eval()
    _check_against_torch(ours, twin, shape, dtype, rng)
    if ours.track_running_stats:
        assert int(ours.num_batches_tracked) == 3
        assert ours.state_dict()["num_batches_tracked"].dtype == np.int64


def test_sequential_matches_torch(rng):
    def build(m):
        return m.Sequential(
            m.Conv2d(3, 6, 3, padding=1), m.BatchNorm2d(6), m.ReLU(), m.MaxPool2d(2),
            m.Conv2d(6, 8, 3, stride=2, padding=1, groups=2), m.Tanh(),
            m.AdaptiveAvgPool2d((1, 1)), m.Flatten(), m.Linear(8, 4), m.Softmax(dim=1))

    fastconv.manual_seed(0)
    ours, twin = build(nn), build(torch.nn)
    _check_against_torch(ours, twin, (3, 3, 8, 8), np.float64, rng)


def test_sequential_container():
    layers = [nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten()]
    seq = nn.Sequential(*layers)
    assert len(seq) == 3
    assert list(seq) == layers
    assert seq[1] is layers[1] and seq[-1] is layers[2]
    assert list(seq[1:]) == layers[1:] and isinstance(seq[1:], nn.Sequential)
    assert [name for name, _ in seq.named_children()] == ["0", "1", "2"]
    named = nn.Sequential(OrderedDict([("conv", layers[0]), ("act", layers[1])]))
    assert list(named.state_dict()) == ["conv.weight", "conv.bias"]
    seq.append(nn.Identity())
    assert len(seq) == 4 and isinstance(seq[3], nn.Identity)
    assert repr(seq).splitlines()[:2] == [
        "Sequential(", "  (0): Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1), padding=0)"]


def test_parameter_reexport_and_deepcopy(rng):
    assert nn.Parameter is fastconv.tensor.Parameter
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3))
    clone = copy.deepcopy(model)
    clone[0].weight.data[...] = 0
    assert np.any(model[0].weight.data != 0)
    assert list(clone.state_dict()) == list(model.state_dict())
    x = Tensor(rng.standard_normal((2, 2, 5, 5)).astype(np.float32))
    model.eval(), clone.eval()
    assert _np(clone(x)).shape == _np(model(x)).shape == (2, 3, 3, 3)


def test_dropout(rng):
    p = 0.25
    layer = nn.Dropout(p)
    x = rng.uniform(1.0, 2.0, (64, 50)).astype(np.float32)
    layer.eval()
    np.testing.assert_array_equal(_np(layer(Tensor(x))), x)
    layer.train()
    xt = Tensor(x, requires_grad=True)
    y = layer(xt)
    out = _np(y)
    kept = out != 0
    np.testing.assert_allclose(out[kept], x[kept] / (1 - p), rtol=1e-6)
    assert abs((~kept).mean() - p) < 0.03  # 3200 draws: a 5-sigma band is about 0.04
    y.backward(np.ones_like(x))
    np.testing.assert_allclose(_np(xt.grad), kept / (1 - p), rtol=1e-6)
    with pytest.raises(ValueError, match="probability"):
        nn.Dropout(1.5)
    # Masks come from fastconv's generator, so manual_seed repeats them.
    masks = []
    for _ in range(2):
        fastconv.manual_seed(5)
        masks.append(_np(layer(Tensor(x))) != 0)
    np.testing.assert_array_equal(masks[0], masks[1])


def _build(net, m) -> None:
    """The same children on a fastconv or a torch module (`m` is nn or torch.nn)."""
    net.features = m.Sequential(m.Conv2d(3, 4, 3), m.BatchNorm2d(4), m.ReLU(),
                                m.Conv2d(4, 6, 3, bias=False), m.MaxPool2d(2))
    net.bn = m.BatchNorm1d(6)
    net.head = m.Linear(6, 2)


class _Net(nn.Module):
    def __init__(self, m) -> None:
        super().__init__()
        _build(self, m)

    def forward(self, x):
        x = self.features(x)
        x = nn.Flatten()(nn.AdaptiveAvgPool2d(1)(x))
        return self.head(self.bn(x))


class _TorchNet(torch.nn.Module):
    def __init__(self, m) -> None:
        super().__init__()
        _build(self, m)


def test_state_dict_keys_match_torch():
    ours, twin = _Net(nn), _TorchNet(torch.nn)
    assert list(ours.state_dict()) == list(twin.state_dict())
    for key, value in ours.state_dict().items():
        assert isinstance(value, np.ndarray)
        assert value.shape == tuple(twin.state_dict()[key].shape), key
    assert "features.1.num_batches_tracked" in ours.state_dict()
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in twin.named_buffers()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in twin.named_modules()]
    assert [n for n, _ in ours.named_children()] == ["features", "bn", "head"]
    assert len(list(ours.parameters())) == len(list(twin.parameters())) == 9
    assert len(list(ours.buffers())) == 6 and len(list(ours.modules())) == 9
    # torch's state dict loads back into ours and the values arrive.
    ours.load_state_dict({k: v for k, v in twin.state_dict().items()})
    np.testing.assert_array_equal(ours.features[0].weight.data,
                                  twin.features[0].weight.detach().numpy())


def test_state_dict_is_a_copy():
    layer = nn.Linear(3, 2)
    state = layer.state_dict()
    state["weight"][...] = 7
    assert not np.any(layer.weight.data == 7)


def test_load_state_dict_in_place_and_cast():
    layer = nn.Conv2d(2, 3, 3)
    weight = layer.weight.data
    new = np.arange(weight.size, dtype=np.float64).reshape(weight.shape)
    result = layer.load_state_dict({"weight": new, "bias": np.ones(3)})
    assert layer.weight.data is weight and weight.dtype == np.float32
    np.testing.assert_array_equal(weight, new.astype(np.float32))
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert tuple(result) == ([], [])


def test_load_state_dict_errors():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3))
    good = model.state_dict()
    bad = dict(good)
    del bad["1.running_var"]
    bad["2.weight"] = np.zeros(3)
    bad["0.bias"] = np.zeros(4)
    before = model.state_dict()
    with pytest.raises(ValueError) as info:
        model.load_state_dict(bad)
    message = str(info.value)
    assert "missing keys: 1.running_var" in message
    assert "unexpected keys: 2.weight" in message
    assert "0.bias: checkpoint (4,), model (3,)" in message
    for key, value in model.state_dict().items():  # nothing half-loaded
        np.testing.assert_array_equal(value, before[key])

    del bad["0.bias"]
    result = model.load_state_dict(bad, strict=False)
    assert result.missing_keys == ["0.bias", "1.running_var"]
    assert result.unexpected_keys == ["2.weight"]
    with pytest.raises(ValueError, match="shape mismatches"):
        model.load_state_dict({**good, "1.weight": np.ones((3, 1))}, strict=False)


def test_load_old_checkpoint_without_num_batches_tracked():
    model = nn.BatchNorm2d(3)
    state = model.state_dict()
    del state["num_batches_tracked"]
    assert model.load_state_dict(state).missing_keys == []


@pytest.mark.parametrize("layer,fan_in", [
    (lambda: nn.Conv2d(6, 8, 3, groups=2), 3 * 9),
    (lambda: nn.Conv1d(4, 2, 5), 20),
    (lambda: nn.Conv3d(2, 4, (1, 2, 3)), 12),
    (lambda: nn.Linear(50, 40), 50),
])
def test_init_distribution(layer, fan_in):
    fastconv.manual_seed(1)
    module = layer()
    bound = 1 / np.sqrt(fan_in)
    for param in (module.weight, module.bias):
        data = param.data
        assert data.dtype == np.float32
        assert np.all(np.abs(data) <= bound)
        assert len(np.unique(data)) > 1
    weights = module.weight.data
    if weights.size >= 1000:  # U(-b, b) has std b / sqrt(3)
        assert abs(weights.std() - bound / np.sqrt(3)) < 0.05 * bound
    fastconv.manual_seed(1)
    np.testing.assert_array_equal(layer().weight.data, weights)


def test_batch_norm_init():
    bn = nn.BatchNorm2d(4)
    np.testing.assert_array_equal(bn.weight.data, np.ones(4, np.float32))
    np.testing.assert_array_equal(bn.bias.data, np.zeros(4, np.float32))
    np.testing.assert_array_equal(bn.running_var, np.ones(4, np.float32))
    assert bn.weight.data.dtype == np.float32


def test_train_eval_propagate_and_zero_grad(rng):
    model = _Net(nn)
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    model(Tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    assert model.to("cpu") is model
    with pytest.raises(ValueError, match="device"):
        model.to("tpu")


def test_shape_mismatch_names_the_layer(rng):
    model = _Net(nn)
    model.features[3] = nn.Conv2d(5, 6, 3)
    x = Tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    with pytest.raises(ValueError, match=r"features\.3 \(Conv2d\).*5 input channels.*"
                                         r"\(2, 4, 6, 6\)"):
        model(x)
    with pytest.raises(ValueError, match=r"^head \(Linear\).*\(\*, 6\).*\(2, 7\)"):
        nn.Sequential(OrderedDict(head=nn.Linear(6, 2)))(
            Tensor(np.zeros((2, 7), np.float32)))
    # An error from the kernel itself (window larger than the input) is named too.
    with pytest.raises(ValueError, match=r"^1 \(Conv2d\): "):
        nn.Sequential(nn.ReLU(), nn.Conv2d(3, 2, 9))(x)
    with pytest.raises(ValueError, match=r"^Linear: "):
        nn.Linear(3, 2)(Tensor(np.zeros((2, 4), np.float32)))


def test_custom_module_attributes():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = 2.0
            self.w = nn.Parameter(np.ones(3, np.float32))
            self.register_buffer("count", np.zeros((), np.int64))

    net = Net()
    assert net.scale == 2.0 and list(net.state_dict()) == ["w", "count"]
    net.w = nn.Parameter(np.zeros(2, np.float32))
    assert net.state_dict()["w"].shape == (2,)
    with pytest.raises(TypeError, match="cannot assign ndarray as parameter 'w'"):
        net.w = np.zeros(2, np.float32)
    net.w = None
    assert list(net.state_dict()) == ["count"] and net.w is None
    net.count = np.ones((), np.int64)
    assert net.state_dict()["count"] == 1
    net.child = nn.ReLU()
    with pytest.raises(TypeError, match="as child module 'child'"):
        net.child = 3
    with pytest.raises(NotImplementedError):
        net(1)
    with pytest.raises(AttributeError, match="missing"):
        net.missing  # noqa: B018


def test_inference_calls_reuse_validated_geometry_and_match_the_functional_ops() -> None:
    """Layers called again on a validated shape without recording run straight through
    their kernels; results equal the functional ops bit for bit, and any change of input
    shape, dtype or layer geometry is validated again."""
    import fastconv.nn.functional as F

    rng = np.random.default_rng(3)
    conv = nn.Conv2d(3, 9, 3, padding=1)
    avg, mx = nn.AvgPool2d(2), nn.MaxPool2d(3, stride=2, padding=1)
    lin, tanh = nn.Linear(12, 5), nn.Tanh()
    with fastconv.no_grad():
        for shape in [(4, 3, 8, 8), (4, 3, 8, 8), (2, 3, 6, 10), (2, 3, 6, 10)]:
            x = Tensor(rng.standard_normal(shape).astype(np.float32))
            np.testing.assert_array_equal(
                conv(x).data, F.conv(x, conv.weight, conv.bias, padding=1).data)
            np.testing.assert_array_equal(avg(x).data, F.avg_pool(x, 2).data)
            np.testing.assert_array_equal(mx(x).data,
                                          F.max_pool(x, 3, stride=2, padding=1).data)
            np.testing.assert_array_equal(tanh(x).data, F.tanh(x).data)
        flat = Tensor(rng.standard_normal((7, 12)).astype(np.float32))
        for _ in range(2):
            np.testing.assert_array_equal(lin(flat).data,
                                          F.linear(flat, lin.weight, lin.bias).data)
        x = Tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
        conv(x)
        conv.stride, conv.padding = (2, 2), 0  # a changed layer is validated again
        assert conv(x).shape == (2, 9, 3, 3)
        conv.padding = [1, 1]  # mutable arguments are never remembered
        assert conv(x).shape == (2, 9, 4, 4)
        conv.padding[0] = 0
        assert conv(x).shape == (2, 9, 3, 4)
        conv.padding = 5  # too much padding for a 3x3 kernel: still an error
        with pytest.raises(ValueError, match="padding"):
            conv(x)
        with pytest.raises(ValueError, match="input channels"):
            conv(Tensor(np.zeros((2, 4, 8, 8), np.float32)))
        with pytest.raises(TypeError):
            avg(Tensor(np.zeros((2, 3, 8, 8), np.int32)))
        x64 = Tensor(rng.standard_normal((2, 3, 8, 8)))
        np.testing.assert_array_equal(avg(x64).data, F.avg_pool(x64, 2).data)
    # Recording for backward takes the functional path, gradients included.
    x = Tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32), requires_grad=True)
    avg(x).sum().backward()
    np.testing.assert_allclose(x.grad, np.full(x.shape, 0.25, np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("activation", [None, "ReLU", "ReLU6"])
def test_batch_norm_forward_then_equals_the_separate_ops(dtype, with_residual,
                                                         activation) -> None:
    """The fused inference pass is bitwise the sequence bn -> add -> ReLU/ReLU6 (NaN
    kept)."""
    rng = np.random.default_rng()
    bn = nn.BatchNorm2d(6)
    bn.weight.data[...] = rng.uniform(0.5, 1.5, 6)
    bn.bias.data[...] = rng.normal(0, 0.3, 6)
    bn.running_mean[...] = rng.normal(0, 0.2, 6)
    bn.running_var[...] = rng.uniform(0.5, 2.0, 6)
    if dtype == np.float64:
        bn.double()
    bn.eval()
    # Scaled so that ReLU6's cap at 6 is reached too.
    x = (4 * rng.standard_normal((3, 6, 7, 5))).astype(dtype)
    x[0, 1, 2, 3] = np.nan
    residual = Tensor(rng.standard_normal(x.shape).astype(dtype)) if with_residual else None
    act = None if activation is None else getattr(nn, activation)(inplace=True)
    with fastconv.no_grad():
        fused = bn.forward_then(Tensor(x), residual, act).data
        expected = bn(Tensor(x))
        if residual is not None:
            expected = expected + residual
        if act is not None:
            expected = getattr(nn, activation)()(expected)
    np.testing.assert_array_equal(fused, expected.data)
    assert np.isnan(fused[0, 1, 2, 3])
    finite = fused[~np.isnan(fused)]
    if activation is not None:
        assert (finite >= 0).all() and (finite == 0).any()
    if activation == "ReLU6":
        assert (finite <= 6).all() and (finite == 6).any()


def test_batch_norm_forward_then_falls_back_when_training_or_hooked() -> None:
    rng = np.random.default_rng()
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    residual = rng.standard_normal(x.shape).astype(np.float32)
    bn, relu = nn.BatchNorm2d(3), nn.ReLU()

    # Training: batch statistics, running stats updated, gradients through all three ops.
    xt, rt = Tensor(x, requires_grad=True), Tensor(residual, requires_grad=True)
    out = bn.forward_then(xt, rt, relu)
    out.sum().backward()
    ref_bn = nn.BatchNorm2d(3)
    xr, rr = Tensor(x, requires_grad=True), Tensor(residual, requires_grad=True)
    ref = relu(ref_bn(xr) + rr)
    ref.sum().backward()
    np.testing.assert_array_equal(out.data, ref.data)
    np.testing.assert_array_equal(xt.grad, xr.grad)
    np.testing.assert_array_equal(rt.grad, rr.grad)
    np.testing.assert_array_equal(bn.running_mean, ref_bn.running_mean)

    # Eval with a hook on the activation: the hook still sees the ReLU's call.
    bn.eval()
    seen = []
    relu.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    with fastconv.no_grad():
        bn.forward_then(Tensor(x), Tensor(residual), relu)
    assert seen == [x.shape]

    # A residual of another shape is the add's error, as without fusion.
    with fastconv.no_grad(), pytest.raises(ValueError):
        bn.forward_then(Tensor(x), Tensor(residual[:, :, :4]), None)


# ----------------------------------------------------------------------------------------
# The network layer on the GPU: Tensors wrapping CuPy arrays, modules moved with .to("cuda"),
# trained for a few steps; every loss, gradient and weight matches the same run on the CPU.
# ----------------------------------------------------------------------------------------

def small_convnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, stride=2, padding=1, groups=2),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 2 * 2, 10),
    )


def host_array(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


@pytest.mark.cuda
@pytest.mark.parametrize("make_opt", [
    lambda p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-4),
    lambda p: optim.Adam(p, lr=1e-2),
], ids=["sgd_momentum", "adam"])
def test_cuda_training_on_gpu_matches_cpu(make_opt) -> None:
    import cupy

    fastconv.manual_seed(0)
    cpu_model = small_convnet().double()
    gpu_model = small_convnet().double()
    gpu_model.load_state_dict(cpu_model.state_dict())
    gpu_model.to("cuda")
    assert all(p.device == "cuda" for p in gpu_model.parameters())
    opt_cpu, opt_gpu = make_opt(cpu_model.parameters()), make_opt(gpu_model.parameters())
    rng = np.random.default_rng(3)
    for _ in range(3):
        x = rng.standard_normal((4, 3, 16, 16))
        labels = rng.integers(0, 10, size=4)
        losses = []
        for model, opt, xs, ys in ((cpu_model, opt_cpu, x, labels),
                                   (gpu_model, opt_gpu, cupy.asarray(x), cupy.asarray(labels))):
            opt.zero_grad()
            out = model(fastconv.Tensor(xs))
            assert out.device == ("cuda" if model is gpu_model else "cpu")
            loss = F.cross_entropy(out, ys)
            loss.backward()
            opt.step()
            losses.append(float(host_array(loss.data)))
        np.testing.assert_allclose(losses[1], losses[0], rtol=1e-10)
    for (name, a), (_, b) in zip(cpu_model.state_dict().items(),
                                 gpu_model.state_dict().items()):
        np.testing.assert_allclose(host_array(b), a, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.cuda
def test_cuda_tensor_round_trip_and_gradient_on_gpu() -> None:
    import cupy

    rng = np.random.default_rng(0)
    x_host = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w_host = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    x = fastconv.Tensor(x_host, requires_grad=True)
    xg = x.to("cuda")
    assert isinstance(xg.data, cupy.ndarray) and xg.device == "cuda"
    y = F.conv(xg, fastconv.Tensor(cupy.asarray(w_host)), padding=1)
    (y * y).sum().backward()
    # The gradient flows back through .to("cuda") to the host leaf.
    assert isinstance(x.grad, np.ndarray)
    y_host = F.conv(fastconv.Tensor(x_host, requires_grad=True), fastconv.Tensor(w_host),
                    padding=1)
    np.testing.assert_allclose(host_array(y.data), y_host.data, rtol=1e-5, atol=1e-5)
    x2 = fastconv.Tensor(x_host, requires_grad=True)
    (F.conv(x2, fastconv.Tensor(w_host), padding=1) ** 2).sum().backward()
    np.testing.assert_allclose(x.grad, x2.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("training", [True, False])
def test_sequential_runs_batch_norm_and_relu_as_one_op(training) -> None:
    # nn.Sequential hands a ReLU to the batch norm before it (one node in training, one
    # pass in inference): the same values and gradients as torch's separate layers; a hook
    # on the ReLU, or a layer error, still sees the layers one by one.
    import torch

    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 5, 6)).astype(np.float32) * 2 + 1
    ours = nn.Sequential(nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
                         nn.Conv2d(5, 2, 1))
    ours.train(training)
    theirs = torch.nn.Sequential(torch.nn.Conv2d(4, 5, 3, padding=1), torch.nn.BatchNorm2d(5),
                                 torch.nn.ReLU(), torch.nn.Conv2d(5, 2, 1))
    theirs.train(training)
    ours[1].weight.data[...] = rng.uniform(0.5, 2, 5)
    ours[1].running_var[...] = rng.uniform(0.5, 2, 5)
    theirs.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in ours.state_dict().items()})
    xt = torch.tensor(x, requires_grad=True)
    out_t = theirs(xt)
    g = rng.standard_normal(tuple(out_t.shape)).astype(np.float32)
    out_t.backward(torch.tensor(g))
    xf = fastconv.Tensor(x.copy(), requires_grad=True)
    out = ours(xf)
    out.backward(g)
    np.testing.assert_allclose(out.data, out_t.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(xf.grad, xt.grad.numpy(), rtol=1e-4, atol=1e-4)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)
    np.testing.assert_allclose(ours[1].running_mean, theirs[1].running_mean.numpy(), rtol=1e-5,
                               atol=1e-6)
    seen = []
    ours[2].register_forward_hook(lambda module, args, output: seen.append(output.shape))
    ours(fastconv.Tensor(x))
    assert seen == [(3, 5, 5, 6)]
    with pytest.raises(ValueError, match=r"^1 \(BatchNorm2d\): expected 5 channels"):
        nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(5), nn.ReLU())(fastconv.Tensor(x))
