"""fastconv.models against plain-torch twins of torchvision's architectures (torchvision
itself is not a dependency): parameter counts, summaries, state-dict names (strict
loading both ways) and eval-mode forward outputs."""

from __future__ import annotations

import functools
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import pytest

import fastconv
from fastconv import models, nn
from fastconv.tensor import Tensor

torch = pytest.importorskip("torch")
from fastconv.models import torch_twins as twins  # noqa: E402  (needs torch)

RTOL = 1e-4  # max|ours - torch| / max|torch|, float32

# name -> (parameters, summary input shape, torchvision's GFLOPS figure (multiply-adds) or
# None for the non-torchvision nets)
EXPECTED: Dict[str, Tuple[int, Tuple[int, ...], Optional[float]]] = {
    "lenet5": (61_706, (1, 32, 32), None),
    "alexnet": (61_100_840, (3, 224, 224), 0.71),
    "vgg16": (138_357_544, (3, 224, 224), 15.47),
    "vgg19": (143_667_240, (3, 224, 224), 19.63),
    "resnet18": (11_689_512, (3, 224, 224), 1.81),
    "resnet34": (21_797_672, (3, 224, 224), 3.66),
    "resnet50": (25_557_032, (3, 224, 224), 4.09),
    "resnet101": (44_549_160, (3, 224, 224), 7.80),
    "resnet152": (60_192_808, (3, 224, 224), 11.51),
    "googlenet": (6_624_904, (3, 224, 224), 1.50),
    "nin": (966_986, (3, 32, 32), None),
    "convnet1d": (124_373, (1, 187), None),
    "convnet3d": (69_906, (1, 32, 32, 32), None),
}


@functools.lru_cache(maxsize=None)
def _built(name: str) -> nn.Module:
    """One instance per model for the read-only tests (VGG's construction alone takes
    seconds); tests that load weights build their own."""
    fastconv.manual_seed(0)
    return getattr(models, name)()


def _count(model: nn.Module) -> int:
    return sum(p.data.size for p in model.parameters())


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261124)


def _randomize_norms(model: nn.Module, rng: np.random.Generator) -> None:
    """Non-trivial BatchNorm statistics and affine terms, so eval mode is not the identity
    and a wrong eps or mixed-up buffer shows."""
    for module in model.modules():
        if isinstance(module, nn.modules.BatchNormNd):
            c = module.num_features
            module.running_mean[...] = rng.normal(0.0, 0.2, c)
            module.running_var[...] = rng.uniform(0.5, 1.5, c)
            module.weight.data[...] = rng.uniform(0.5, 1.5, c)
            module.bias.data[...] = rng.normal(0.0, 0.2, c)


def _compare(ours: nn.Module, twin: "torch.nn.Module", shape: Tuple[int, ...],
             rng: np.random.Generator) -> np.ndarray:
    """Strictly load our state dict into the twin (proves torchvision's names and shapes),
    run both in eval mode on one random input and check the relative error."""
    _randomize_norms(ours, rng)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    ours.eval()
    twin.eval()
    x = rng.standard_normal(shape).astype(np.float32)
    with fastconv.no_grad():
        got = np.asarray(ours(Tensor(x)).data)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape
    assert np.all(np.isfinite(got))
    error = np.max(np.abs(got - expected)) / np.max(np.abs(expected))
    assert error < RTOL, f"relative error {error:.3g}"
    return got


# (model, torch twin factory, input shape): small inputs where global pooling allows.
TWINS: List[Tuple[str, Callable[[], "torch.nn.Module"], Tuple[int, ...]]] = [
    ("lenet5", twins.TorchLeNet5, (2, 1, 32, 32)),
    ("alexnet", twins.TorchAlexNet, (1, 3, 224, 224)),
    ("vgg16", twins.TWINS["vgg16"], (1, 3, 224, 224)),
    ("resnet18", twins.TWINS["resnet18"], (2, 3, 64, 64)),
    ("resnet50", twins.TWINS["resnet50"], (1, 3, 64, 64)),
    ("googlenet", twins.TorchGoogLeNet, (2, 3, 64, 64)),
    ("nin", twins.torch_nin, (2, 3, 32, 32)),
    ("convnet1d", lambda: twins.TorchConvNet1d(187), (3, 1, 187)),
    ("convnet3d", twins.TorchConvNet3d, (2, 1, 16, 16, 16)),
]


# -- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(EXPECTED))
def test_parameter_count(name: str) -> None:
    assert _count(_built(name)) == EXPECTED[name][0]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_summary(name: str, capsys: pytest.CaptureFixture) -> None:
    params, shape, gmacs = EXPECTED[name]
    table = nn.summary(_built(name), shape)
    print(table)
    assert table.total_params == params
    assert f"Total params: {params:,}" in capsys.readouterr().out
    if gmacs is not None:
        # torchvision's published GFLOPS (multiply-adds of conv and linear layers).
        assert table.total_mult_adds / 1e9 == pytest.approx(gmacs, rel=0.02)


@pytest.mark.parametrize("name,twin,shape", TWINS, ids=[t[0] for t in TWINS])
def test_forward_matches_torch(name: str, twin: Callable[[], "torch.nn.Module"],
                               shape: Tuple[int, ...], rng: np.random.Generator) -> None:
    # The cached instance: _compare only randomizes BatchNorm terms and sets eval mode,
    # which the count and summary tests do not look at.
    _compare(_built(name), twin(), shape, rng)


def test_alexnet_lrn_keeps_torchvision_keys_and_matches_torch(
        rng: np.random.Generator) -> None:
    plain, with_lrn = _built("alexnet"), models.alexnet(lrn=True)
    assert _count(with_lrn) == EXPECTED["alexnet"][0]
    assert list(with_lrn.state_dict()) == list(plain.state_dict())
    lrns = [m for m in with_lrn.modules() if isinstance(m, nn.LocalResponseNorm)]
    assert [(m.size, m.alpha, m.beta, m.k) for m in lrns] == [(5, 1e-4, 0.75, 2.0)] * 2
    # 127x127 leaves a 3x3 map: the adaptive pool spreads it over overlapping 6x6 windows.
    _compare(with_lrn, twins.TorchAlexNet(lrn=True), (2, 3, 127, 127), rng)


def test_convnet1d_global_pooling_takes_any_length(rng: np.random.Generator) -> None:
    ours = models.convnet1d(length=None)
    _compare(ours, twins.TorchConvNet1d(None), (2, 1, 300), rng)
    with pytest.raises(ValueError, match="187"):
        models.convnet1d()(Tensor(np.zeros((1, 1, 200), np.float32)))


@pytest.mark.parametrize("name,shape", [("vgg19", (1, 3, 32, 32)), ("resnet34", (1, 3, 32, 32)),
                                        ("resnet101", (1, 3, 32, 32)),
                                        ("resnet152", (1, 3, 32, 32))])
def test_small_input_forward(name: str, shape: Tuple[int, ...]) -> None:
    model = _built(name).eval()
    with fastconv.no_grad():
        out = model(Tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32)))
    assert out.shape == (shape[0], 1000)
    assert np.all(np.isfinite(np.asarray(out.data)))


def test_options() -> None:
    assert models.resnet18(num_classes=7, in_channels=1).fc.weight.shape == (7, 512)
    assert models.resnet18(in_channels=1).conv1.weight.shape == (64, 1, 7, 7)
    assert models.googlenet(num_classes=5).fc.weight.shape == (5, 1024)
    assert models.lenet5(num_classes=4).classifier[2].weight.shape == (4, 84)
    zero = models.resnet50(zero_init_residual=True)
    assert not np.any(zero.layer1[0].bn3.weight.data)
    out = models.convnet3d(in_channels=2, num_classes=3)(
        Tensor(np.zeros((1, 2, 8, 8, 8), np.float32)))
    assert out.shape == (1, 3)


def test_resnet18_loads_torch_pth(tmp_path, rng: np.random.Generator) -> None:
    """A state dict torch saved as .pth goes through fastconv.nn.load into our model."""
    torch.manual_seed(0)
    twin = twins.TWINS["resnet18"]()
    with torch.no_grad():  # non-default statistics, so loaded buffers are checked too
        for m in twin.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
    path = tmp_path / "resnet18.pth"
    torch.save(twin.state_dict(), path)
    ours = models.resnet18()
    ours.load_state_dict(nn.load(path))
    ours.eval()
    twin.eval()
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    with fastconv.no_grad():
        got = np.asarray(ours(Tensor(x)).data)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(got - expected)) / np.max(np.abs(expected)) < RTOL


@pytest.mark.parametrize("in_size,out_size", [(3, 6), (7, 7), (10, 3), (5, 2), (1, 7), (9, 3)])
def test_adaptive_avg_pool_any_sizes(in_size: int, out_size: int,
                                     rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3, in_size, in_size + 1)).astype(np.float32)
    ours = models.AdaptiveAvgPool2d((out_size, out_size))(Tensor(x))
    expected = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), out_size).numpy()
    np.testing.assert_allclose(np.asarray(ours.data), expected, rtol=1e-5, atol=1e-6)
    x1 = rng.standard_normal((2, 3, in_size + 2)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(models.AdaptiveAvgPool1d(out_size)(Tensor(x1)).data),
        torch.nn.functional.adaptive_avg_pool1d(torch.from_numpy(x1), out_size).numpy(),
        rtol=1e-5, atol=1e-6)


def test_adaptive_avg_pool_gradient(rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 2, 5, 4, 3))
    xo = Tensor(x, requires_grad=True)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    models.AdaptiveAvgPool3d((3, 3, 2))(xo).sum().backward()
    torch.nn.functional.adaptive_avg_pool3d(xt, (3, 3, 2)).sum().backward()
    np.testing.assert_allclose(np.asarray(xo.grad), xt.grad.numpy(), rtol=1e-12)
