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
tnn = torch.nn

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
        if isinstance(module, nn.modules._BatchNorm):
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


# -- torch twins: plain torch.nn transcriptions of torchvision's (and our own) models -----


class TorchLeNet5(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = tnn.Sequential(
            tnn.Conv2d(1, 6, 5), tnn.Tanh(), tnn.AvgPool2d(2),
            tnn.Conv2d(6, 16, 5), tnn.Tanh(), tnn.AvgPool2d(2),
            tnn.Conv2d(16, 120, 5), tnn.Tanh())
        self.classifier = tnn.Sequential(tnn.Linear(120, 84), tnn.Tanh(), tnn.Linear(84, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class TorchAlexNet(tnn.Module):
    def __init__(self, lrn: bool = False) -> None:
        super().__init__()

        def relu():
            if not lrn:
                return tnn.ReLU(inplace=True)
            return tnn.Sequential(tnn.ReLU(inplace=True),
                                  tnn.LocalResponseNorm(5, 1e-4, 0.75, 2.0))

        self.features = tnn.Sequential(
            tnn.Conv2d(3, 64, 11, 4, 2), relu(), tnn.MaxPool2d(3, 2),
            tnn.Conv2d(64, 192, 5, padding=2), relu(), tnn.MaxPool2d(3, 2),
            tnn.Conv2d(192, 384, 3, padding=1), tnn.ReLU(inplace=True),
            tnn.Conv2d(384, 256, 3, padding=1), tnn.ReLU(inplace=True),
            tnn.Conv2d(256, 256, 3, padding=1), tnn.ReLU(inplace=True), tnn.MaxPool2d(3, 2))
        self.avgpool = tnn.AdaptiveAvgPool2d((6, 6))
        self.classifier = tnn.Sequential(
            tnn.Dropout(0.5), tnn.Linear(9216, 4096), tnn.ReLU(inplace=True),
            tnn.Dropout(0.5), tnn.Linear(4096, 4096), tnn.ReLU(inplace=True),
            tnn.Linear(4096, 1000))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class TorchVGG(tnn.Module):
    def __init__(self, cfg: List) -> None:
        super().__init__()
        layers: List[tnn.Module] = []
        c = 3
        for v in cfg:
            if v == "M":
                layers.append(tnn.MaxPool2d(2, 2))
            else:
                layers += [tnn.Conv2d(c, v, 3, padding=1), tnn.ReLU(inplace=True)]
                c = v
        self.features = tnn.Sequential(*layers)
        self.avgpool = tnn.AdaptiveAvgPool2d((7, 7))
        self.classifier = tnn.Sequential(
            tnn.Linear(25088, 4096), tnn.ReLU(True), tnn.Dropout(0.5),
            tnn.Linear(4096, 4096), tnn.ReLU(True), tnn.Dropout(0.5), tnn.Linear(4096, 1000))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class TorchBasicBlock(tnn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.relu = tnn.ReLU(inplace=True)
        self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class TorchBottleneck(tnn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(planes * 4)
        self.relu = tnn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class TorchResNet(tnn.Module):
    def __init__(self, block, layers):
        super().__init__()
        self.inplanes = 64
        self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(64)
        self.relu = tnn.ReLU(inplace=True)
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
        self.fc = tnn.Linear(512 * block.expansion, 1000)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = tnn.Sequential(
                tnn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                tnn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return tnn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TorchBasicConv2d(tnn.Module):
    def __init__(self, in_channels, out_channels, **kwargs):
        super().__init__()
        self.conv = tnn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = tnn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class TorchInception(tnn.Module):
    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        super().__init__()
        self.branch1 = TorchBasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = tnn.Sequential(TorchBasicConv2d(in_channels, ch3x3red, kernel_size=1),
                                      TorchBasicConv2d(ch3x3red, ch3x3, kernel_size=3,
                                                       padding=1))
        self.branch3 = tnn.Sequential(TorchBasicConv2d(in_channels, ch5x5red, kernel_size=1),
                                      TorchBasicConv2d(ch5x5red, ch5x5, kernel_size=3,
                                                       padding=1))
        self.branch4 = tnn.Sequential(tnn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                      TorchBasicConv2d(in_channels, pool_proj, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x),
                          self.branch4(x)], 1)


class TorchGoogLeNet(tnn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = TorchBasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = tnn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = TorchBasicConv2d(64, 64, kernel_size=1)
        self.conv3 = TorchBasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = tnn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception3a = TorchInception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = TorchInception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = tnn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception4a = TorchInception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = TorchInception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = TorchInception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = TorchInception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = TorchInception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = tnn.MaxPool2d(2, 2, ceil_mode=True)
        self.inception5a = TorchInception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = TorchInception(832, 384, 192, 384, 48, 128, 128)
        self.aux1 = None  # torchvision with aux_logits=False
        self.aux2 = None
        self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
        self.dropout = tnn.Dropout(0.2)
        self.fc = tnn.Linear(1024, 1000)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def torch_nin() -> "torch.nn.Module":
    def mlp(c_in, chans, k, p):
        layers = [tnn.Conv2d(c_in, chans[0], k, padding=p), tnn.ReLU()]
        for a, b in zip(chans, chans[1:]):
            layers += [tnn.Conv2d(a, b, 1), tnn.ReLU()]
        return layers

    class NIN(tnn.Module):
        def __init__(self):
            super().__init__()
            self.features = tnn.Sequential(
                *mlp(3, (192, 160, 96), 5, 2), tnn.MaxPool2d(3, 2, 1), tnn.Dropout(0.5),
                *mlp(96, (192, 192, 192), 5, 2), tnn.AvgPool2d(3, 2, 1), tnn.Dropout(0.5),
                *mlp(192, (192, 192, 10), 3, 1))
            self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))

        def forward(self, x):
            return torch.flatten(self.avgpool(self.features(x)), 1)

    return NIN()


def _torch_blocks(ndim: int, specs) -> "torch.nn.Sequential":
    conv = {1: tnn.Conv1d, 3: tnn.Conv3d}[ndim]
    norm = {1: tnn.BatchNorm1d, 3: tnn.BatchNorm3d}[ndim]
    pool = {1: tnn.MaxPool1d, 3: tnn.MaxPool3d}[ndim]
    layers = []
    for c_in, c_out, k in specs:
        layers += [conv(c_in, c_out, k, padding=k // 2, bias=False), norm(c_out), tnn.ReLU(),
                   pool(2)]
    return tnn.Sequential(*layers)


class TorchConvNet1d(tnn.Module):
    def __init__(self, length: Optional[int]):
        super().__init__()
        self.features = _torch_blocks(1, ((1, 16, 7), (16, 32, 5), (32, 64, 3), (64, 128, 3)))
        self.pool = tnn.AdaptiveAvgPool1d(1) if length is None else tnn.Identity()
        flat = 128 if length is None else 128 * (length // 16)
        self.classifier = tnn.Sequential(tnn.Linear(flat, 64), tnn.ReLU(), tnn.Dropout(0.5),
                                         tnn.Linear(64, 5))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class TorchConvNet3d(tnn.Module):
    def __init__(self):
        super().__init__()
        self.features = _torch_blocks(3, ((1, 16, 3), (16, 32, 3), (32, 64, 3)))
        self.avgpool = tnn.AdaptiveAvgPool3d(1)
        self.dropout = tnn.Dropout(0.5)
        self.fc = tnn.Linear(64, 2)

    def forward(self, x):
        return self.fc(self.dropout(torch.flatten(self.avgpool(self.features(x)), 1)))


VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
         "M"]

# (model, torch twin factory, input shape): small inputs where global pooling allows.
TWINS: List[Tuple[str, Callable[[], "torch.nn.Module"], Tuple[int, ...]]] = [
    ("lenet5", TorchLeNet5, (2, 1, 32, 32)),
    ("alexnet", TorchAlexNet, (1, 3, 224, 224)),
    ("vgg16", lambda: TorchVGG(VGG16), (1, 3, 224, 224)),
    ("resnet18", lambda: TorchResNet(TorchBasicBlock, [2, 2, 2, 2]), (2, 3, 64, 64)),
    ("resnet50", lambda: TorchResNet(TorchBottleneck, [3, 4, 6, 3]), (1, 3, 64, 64)),
    ("googlenet", TorchGoogLeNet, (2, 3, 64, 64)),
    ("nin", torch_nin, (2, 3, 32, 32)),
    ("convnet1d", lambda: TorchConvNet1d(187), (3, 1, 187)),
    ("convnet3d", TorchConvNet3d, (2, 1, 16, 16, 16)),
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
    _compare(with_lrn, TorchAlexNet(lrn=True), (2, 3, 127, 127), rng)


def test_convnet1d_global_pooling_takes_any_length(rng: np.random.Generator) -> None:
    ours = models.convnet1d(length=None)
    _compare(ours, TorchConvNet1d(None), (2, 1, 300), rng)
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
    twin = TorchResNet(TorchBasicBlock, [2, 2, 2, 2])
    with torch.no_grad():  # non-default statistics, so loaded buffers are checked too
        for m in twin.modules():
            if isinstance(m, tnn.BatchNorm2d):
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
