"""fastconv.style: the Gram matrix and the two costs against the course's formulas written
out in NumPy, finite differences and torch autograd; the costs' gradient with respect to
the image against torch on the same network (EfficientNet-Lite0 and VGG-16/19 read from
a torch checkpoint); style_transfer and its command line."""

from __future__ import annotations

import re
from collections import OrderedDict

import numpy as np
import pytest

import fastconv
from fastconv import Tensor, nn, style
from fastconv.models.vgg import CONFIGS

from _cases import gradcheck, needs_weights

torch = pytest.importorskip("torch")
F = torch.nn.functional

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"



@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20260418)


# -- the course's formulas, written out ------------------------------------------------------


def gram_by_hand(a: np.ndarray) -> np.ndarray:
    """G[n, k, k'] = sum over cells of a[n, k] a[n, k'], one product at a time."""
    flat = a.reshape(a.shape[0], a.shape[1], -1)
    out = np.zeros((a.shape[0], a.shape[1], a.shape[1]))
    for n in range(a.shape[0]):
        for k in range(a.shape[1]):
            for k2 in range(a.shape[1]):
                out[n, k, k2] = np.sum(flat[n, k] * flat[n, k2])
    return out


def style_by_hand(a_s: np.ndarray, a_g: np.ndarray) -> float:
    """1 / (2 n_H n_W n_C)^2 sum_kk' (G(S) - G(G))^2, summed over the batch."""
    cells, channels = int(np.prod(a_g.shape[2:])), a_g.shape[1]
    diff = gram_by_hand(a_s) - gram_by_hand(a_g)
    return float(np.sum(diff ** 2) / (2.0 * cells * channels) ** 2)


SHAPES = [(1, 3, 4, 5), (2, 4, 3, 3), (1, 2, 7), (2, 3, 2, 3, 2)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gram_matrix_is_the_sum_of_products(shape, rng) -> None:
    a = rng.standard_normal(shape)
    g = style.gram_matrix(a)
    assert isinstance(g, Tensor) and g.shape == shape[:1] + (shape[1], shape[1])
    np.testing.assert_allclose(g.numpy(), gram_by_hand(a), rtol=1e-13, atol=1e-13)
    # the PyTorch tutorial's scaling: G / (C * cells)
    scaled = style.gram_matrix(Tensor(a), normalization="torch").numpy()
    np.testing.assert_allclose(scaled, gram_by_hand(a) / (shape[1] * np.prod(shape[2:])),
                               rtol=1e-13)
    g32 = style.gram_matrix(a.astype(np.float32))
    assert g32.dtype == np.float32
    np.testing.assert_allclose(g32.numpy(), gram_by_hand(a), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_costs_are_the_course_formulas(shape, rng) -> None:
    a_c, a_g = rng.standard_normal(shape), rng.standard_normal(shape)
    a_s = rng.standard_normal(shape)
    content = style.content_cost(a_c, a_g)
    assert isinstance(content, Tensor) and content.shape == ()
    assert content.item() == pytest.approx(0.5 * np.sum((a_c - a_g) ** 2), rel=1e-13)
    assert style.style_cost(a_s, a_g).item() == pytest.approx(style_by_hand(a_s, a_g),
                                                              rel=1e-12)
    # summed over the batch: the cost of a batch is the sum of its images' costs
    per_image = sum(style.style_cost(a_s[i:i + 1], a_g[i:i + 1]).item()
                    for i in range(shape[0]))
    assert style.style_cost(a_s, a_g).item() == pytest.approx(per_image, rel=1e-12)
    # the content cost is a plain sum: any layout, e.g. the course's (n_H, n_W, n_C)
    flat = style.content_cost(a_c.reshape(-1), a_g.reshape(-1)).item()
    assert flat == pytest.approx(content.item(), rel=1e-13)


def test_style_images_of_another_size_compare_per_cell(rng) -> None:
    a_s, a_g = rng.standard_normal((1, 3, 6, 8)), rng.standard_normal((1, 3, 4, 5))
    g_s = gram_by_hand(a_s) / 48
    g_g = gram_by_hand(a_g) / 20
    expected = np.sum((g_s - g_g) ** 2) / (2.0 * 3) ** 2
    assert style.style_cost(a_s, a_g).item() == pytest.approx(expected, rel=1e-12)
    # a style batch of 1 serves every generated image
    a_g2 = rng.standard_normal((2, 3, 4, 5))
    both = style.style_cost(a_s, a_g2).item()
    assert both == pytest.approx(style.style_cost(a_s, a_g2[:1]).item()
                                 + style.style_cost(a_s, a_g2[1:]).item(), rel=1e-12)


def test_torch_tutorial_normalization(rng) -> None:
    # "Neural Transfer Using PyTorch": gram = F F^T / (a * b * c * d), mse_loss of grams,
    # content mse_loss (batch 1)
    a_c, a_g, a_s = (rng.standard_normal((1, 5, 6, 7)) for _ in range(3))

    def tutorial_gram(t):
        a, b, c, d = t.size()
        features = t.view(a * b, c * d)
        return torch.mm(features, features.t()).div(a * b * c * d)

    tc, tg, ts = (torch.from_numpy(a) for a in (a_c, a_g, a_s))
    assert style.content_cost(a_c, a_g, normalization="torch").item() == pytest.approx(
        F.mse_loss(tg, tc).item(), rel=1e-13)
    assert style.style_cost(a_s, a_g, normalization="torch").item() == pytest.approx(
        F.mse_loss(tutorial_gram(tg), tutorial_gram(ts)).item(), rel=1e-12)


def test_keras_example_normalization(rng) -> None:
    # keras examples/neural_style_transfer.py: content sum((C - G)^2); style
    # sum((S - C)^2) / (4 * channels^2 * size^2), channels = 3, size = image pixels
    a_c, a_g, a_s = (rng.standard_normal((1, 4, 5, 6)) for _ in range(3))
    assert style.content_cost(a_c, a_g, normalization="keras").item() == pytest.approx(
        np.sum((a_c - a_g) ** 2), rel=1e-13)
    pixels = 40 * 48
    expected = np.sum((gram_by_hand(a_s) - gram_by_hand(a_g)) ** 2) / (4.0 * 9 * pixels ** 2)
    got = style.style_cost(a_s, a_g, normalization="keras", pixels=pixels).item()
    assert got == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="pixels"):
        style.style_cost(a_s, a_g, normalization="keras")


@pytest.mark.parametrize("normalization", style.NORMALIZATIONS)
def test_gradients_by_finite_differences(normalization, rng) -> None:
    shape = (2, 3, 4, 3)
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    gradcheck(lambda t: style.gram_matrix(t, normalization=normalization), [a])
    gradcheck(lambda x, y: style.content_cost(x, y, normalization=normalization), [a, b])
    kw = {"pixels": 100} if normalization == "keras" else {}
    gradcheck(lambda x, y: style.style_cost(x, y, normalization=normalization, **kw) * 1e3,
              [a, b])
    # a style target of batch 1 and another size (not for keras)
    if normalization != "keras":
        s = rng.standard_normal((1, 3, 5, 2))
        gradcheck(lambda x, y: style.style_cost(x, y, normalization=normalization) * 1e3,
                  [s, a])


def test_gradients_match_torch_autograd(rng) -> None:
    a_s, a_c = rng.standard_normal((1, 6, 5, 5)), rng.standard_normal((1, 6, 5, 5))
    a_g = rng.standard_normal((1, 6, 5, 5))
    x = Tensor(a_g.copy(), requires_grad=True)
    cost = style.content_cost(a_c, x) * 3 + style.style_cost(a_s, x) * 50
    cost.backward()
    tx = torch.from_numpy(a_g.copy()).requires_grad_(True)
    flat_s, flat_g = torch.from_numpy(a_s).reshape(6, -1), tx.reshape(6, -1)
    tcost = (0.5 * ((torch.from_numpy(a_c) - tx) ** 2).sum() * 3
             + ((flat_s @ flat_s.T - flat_g @ flat_g.T) ** 2).sum() / (2.0 * 25 * 6) ** 2 * 50)
    tcost.backward()
    assert cost.item() == pytest.approx(tcost.item(), rel=1e-13)
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_cost_errors(rng) -> None:
    a = rng.standard_normal((1, 3, 4, 4))
    with pytest.raises(ValueError, match="normalization"):
        style.gram_matrix(a, normalization="gatys")
    with pytest.raises(ValueError, match=r"\(N, C, \*spatial\)"):
        style.gram_matrix(a[0, 0])
    with pytest.raises(TypeError, match="Tensor or a NumPy"):
        style.content_cost([1.0], a)
    with pytest.raises(ValueError, match="same shape"):
        style.content_cost(a, a[:, :, :3])
    with pytest.raises(ValueError, match="channels"):
        style.style_cost(a[:, :2], a)
    with pytest.raises(TypeError, match="one kind and dtype"):
        style.content_cost(a.astype(np.float32), a)
    with pytest.raises(ValueError, match="one spatial size"):
        style.style_cost(a, a[:, :, :3], normalization="keras", pixels=16)


# -- the image's gradient through a real network, against torch ----------------------------


def torch_cost(model, x, content, style_img, content_layer, style_layers, weights, alpha,
               beta, mean, std):
    """J(G) of the course in torch, layers read with forward hooks."""
    modules = dict(model.named_modules())
    wanted = [content_layer, *style_layers]

    def features(img):
        got = {}
        handles = [modules[name].register_forward_hook(
            lambda m, i, o, name=name: got.setdefault(name, o)) for name in wanted]
        try:
            model((img - mean) / std)
        finally:
            for h in handles:
                h.remove()
        return got

    with torch.no_grad():
        fc, fs = features(content), features(style_img)
    fg = features(x)
    cost = alpha * 0.5 * ((fc[content_layer] - fg[content_layer]) ** 2).sum()
    for name, w in zip(style_layers, weights):
        a_s, a_g = fs[name], fg[name]
        c, cells = a_g.shape[1], a_g[0, 0].numel()
        g_s = a_s.reshape(c, -1) @ a_s.reshape(c, -1).T
        g_g = a_g.reshape(c, -1) @ a_g.reshape(c, -1).T
        cost = cost + beta * w * ((g_s - g_g) ** 2).sum() / (2.0 * cells * c) ** 2
    return cost


def check_cost_gradient_against_torch(model, twin, content, style_img, spec, size, rtol):
    content = np.asarray(content, dtype=np.float64)
    style_img = np.asarray(style_img, dtype=np.float64)
    weights = [0.7, 1.3, 2.1][:len(spec.style_layers)]
    cost = style.StyleTransferCost(model, content, style_img,
                                   content_layer=spec.content_layer,
                                   style_layers=spec.style_layers, style_weights=weights,
                                   alpha=10, beta=40, mean=spec.mean, std=spec.std)
    start = np.random.default_rng(5).random((1, 3) + size)
    x = Tensor(start.copy(), requires_grad=True)
    total = cost(x)
    total.backward()
    mean = torch.tensor(spec.mean, dtype=torch.float64).reshape(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float64).reshape(1, 3, 1, 1)
    tx = torch.from_numpy(start.copy()).requires_grad_(True)

    def batch(img):
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)[None]))

    ttotal = torch_cost(twin, tx, batch(content), batch(style_img), spec.content_layer,
                        spec.style_layers, weights, 10, 40, mean, std)
    ttotal.backward()
    assert total.item() == pytest.approx(ttotal.item(), rel=rtol)
    grad, tgrad = x.grad, tx.grad.numpy()
    assert np.abs(tgrad).max() > 0
    np.testing.assert_allclose(grad, tgrad, rtol=rtol, atol=rtol * np.abs(tgrad).max())


@needs_weights
def test_image_gradient_matches_torch_on_efficientnet() -> None:
    from fastconv.models.torch_twins import TWINS

    model, spec = style.feature_model("efficientnet_lite0")
    model.double()
    twin = TWINS["efficientnet_lite0"]().double().eval()
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                          for k, v in model.state_dict().items()})
    for p in twin.parameters():
        p.requires_grad_(False)
    rng = np.random.default_rng(3)
    spec = style.FeatureSpec("_blocks.3", ("_blocks.0", "_blocks.2"), spec.mean, spec.std)
    check_cost_gradient_against_torch(model, twin, rng.random((32, 40, 3)),
                                      rng.random((32, 40, 3)), spec, (32, 40), 1e-9)


def torch_vgg_features(config):
    layers, channels = [], 3
    for v in config:
        if v == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
        else:
            layers += [torch.nn.Conv2d(channels, v, 3, padding=1), torch.nn.ReLU(inplace=True)]
            channels = v
    return torch.nn.Sequential(OrderedDict(features=torch.nn.Sequential(*layers)))


@pytest.mark.parametrize("depth", [16, 19])
def test_vgg_from_a_torch_checkpoint(depth, tmp_path) -> None:
    torch.manual_seed(depth)
    twin = torch_vgg_features(CONFIGS[depth]).eval()
    state = OrderedDict(twin.state_dict())      # float32, as torchvision's checkpoints
    # a torchvision checkpoint also holds the classifier, which style transfer ignores
    state["classifier.0.weight"] = torch.zeros(2, 3)
    path = tmp_path / f"vgg{depth}.pth"
    torch.save(state, path)
    model, spec = style.feature_model(f"vgg{depth}", weights=path)
    assert not model.training
    model.double()
    twin.double()
    for p in twin.parameters():
        p.requires_grad_(False)
    rng = np.random.default_rng(depth)
    spec = style.FeatureSpec(spec.content_layer, spec.style_layers[:3], spec.mean, spec.std)
    check_cost_gradient_against_torch(model, twin, rng.random((32, 32, 3)),
                                      rng.random((32, 32, 3)), spec, (32, 32), 1e-9)


def test_vgg_without_weights_warns() -> None:
    with pytest.warns(UserWarning, match="random weights"):
        model, spec = style.feature_model("vgg16")
    assert spec is style.FEATURES["vgg16"]
    names = dict(model.named_modules())
    assert spec.content_layer in names and all(n in names for n in spec.style_layers)
    assert isinstance(names["features.25"], nn.ReLU) and isinstance(names["features.20"],
                                                                    nn.ReLU)
    with pytest.raises(ValueError, match="features must be"):
        style.feature_model("resnet50")


@needs_weights
def test_feature_layers_exist_in_efficientnet() -> None:
    model, spec = style.feature_model("efficientnet_lite0")
    names = dict(model.named_modules())
    assert spec.content_layer in names and all(n in names for n in spec.style_layers)


# -- style_transfer --------------------------------------------------------------------------


def small_net() -> nn.Module:
    fastconv.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_style_transfer_lowers_the_cost(optimizer, rng) -> None:
    net = small_net().train()
    flags_before = [p.requires_grad for p in net.parameters()]
    content = (rng.random((40, 36, 3)) * 255).astype(np.uint8)
    style_img = rng.random((50, 50))          # grey, float in [0, 1]
    costs = []
    out = style.style_transfer(content, style_img, features=net, content_layer="3",
                               style_layers=["1", "3", "5"], steps=12, optimizer=optimizer,
                               lr=0.05 if optimizer == "adam" else None,
                               callback=lambda step, cost: costs.append(cost))
    assert out.shape == (40, 36, 3) and out.dtype == np.float64
    assert out.min() >= 0 and out.max() <= 1
    assert len(costs) == 12 and costs[-1] < costs[0]
    # the network is left as it was
    assert net.training and [p.requires_grad for p in net.parameters()] == flags_before


def test_style_transfer_sizes_inits_and_snapshots(rng, tmp_path) -> None:
    net = small_net()
    content, style_img = rng.random((30, 60, 3)), rng.random((64, 64, 3))
    kw = dict(features=net, content_layer="3", style_layers=["1", "5"], steps=2)
    a = style.style_transfer(content, style_img, size=24, init="noise", seed=4, **kw)
    b = style.style_transfer(content, style_img, size=24, init="noise", seed=4, **kw)
    c = style.style_transfer(content, style_img, size=24, init="noise", seed=5, **kw)
    assert a.shape == (24, 24, 3) and np.array_equal(a, b) and not np.array_equal(a, c)
    out = style.style_transfer(content, style_img, size=(20, 32), scales=(0.5, 1.0),
                               save_every=2, save_path=str(tmp_path / "s{step}.png"), **kw)
    assert out.shape == (20, 32, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s2.png", "s4.png"]
    assert (tmp_path / "s4.png").read_bytes()[:8] == PNG_MAGIC
    given = style.style_transfer(content, style_img, init=content, **kw)
    assert given.shape == content.shape


def test_style_transfer_errors(rng) -> None:
    net = small_net()
    img = rng.random((32, 32, 3))
    kw = dict(features=net, content_layer="3", style_layers=["1"], steps=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        style.style_transfer(img * 255, img, **kw)
    with pytest.raises(ValueError, match="optimizer"):
        style.style_transfer(img, img, optimizer="sgd", **kw)
    with pytest.raises(ValueError, match="init"):
        style.style_transfer(img, img, init="zeros", **kw)
    with pytest.raises(ValueError, match="scales"):
        style.style_transfer(img, img, scales=(1.0, 0.5), **kw)
    with pytest.raises(ValueError, match="no layer 'nope'"):
        style.style_transfer(img, img, features=net, content_layer="nope",
                             style_layers=["1"], steps=1)
    with pytest.raises(ValueError, match="content_layer and style_layers"):
        style.style_transfer(img, img, features=net)
    with pytest.raises(ValueError, match="RGB image"):
        style.style_transfer(img[..., :2], img, **kw)
    with pytest.raises(TypeError, match="features"):
        style.style_transfer(img, img, features=3)


@needs_weights
def test_style_transfer_command(tmp_path, capsys) -> None:
    from fastconv import __main__ as cli

    out = tmp_path / "out.png"
    assert cli.main(["style-transfer", "chelsea", "gravel", "-o", str(out), "--quick",
                     "--no-progress", "--seed", "1", "--save-every", "3"]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC
    printed = capsys.readouterr().out
    assert str(out) in printed and "64x64, 6 lbfgs steps" in printed
    first, last = (float(v) for v in re.search(r"cost (\S+) -> (\S+),", printed).groups())
    assert last < 0.9 * first          # EfficientNet-Lite0's features, six L-BFGS steps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png", "out_step0003.png",
                                                          "out_step0006.png"]


# -- CuPy (skipped without a GPU) ------------------------------------------------------------


@pytest.mark.cuda
def test_costs_on_cupy_match_numpy(rng) -> None:
    import cupy

    a_s, a_g = rng.standard_normal((2, 5, 6, 7)), rng.standard_normal((2, 5, 6, 7))
    for norm in style.NORMALIZATIONS:
        kw = {"pixels": 99} if norm == "keras" else {}
        x = Tensor(cupy.asarray(a_g), requires_grad=True)
        cost = style.style_cost(cupy.asarray(a_s), x, normalization=norm, **kw) \
            + style.content_cost(cupy.asarray(a_s), x, normalization=norm)
        cost.backward()
        y = Tensor(a_g.copy(), requires_grad=True)
        ref = style.style_cost(a_s, y, normalization=norm, **kw) \
            + style.content_cost(a_s, y, normalization=norm)
        ref.backward()
        assert isinstance(x.grad, cupy.ndarray)
        assert cost.item() == pytest.approx(ref.item(), rel=1e-12)
        np.testing.assert_allclose(cupy.asnumpy(x.grad), y.grad, rtol=1e-10, atol=1e-12)
        g = style.gram_matrix(cupy.asarray(a_g), normalization=norm)
        np.testing.assert_allclose(cupy.asnumpy(g.data), gram_by_hand(a_g)
                                   / ((5 * 42) if norm == "torch" else 1), rtol=1e-12)


@pytest.mark.cuda
def test_style_transfer_and_lbfgs_on_cupy(rng) -> None:
    import cupy

    net = small_net().to("cuda")
    content, style_img = rng.random((24, 24, 3)), rng.random((24, 24, 3))
    kw = dict(features=net, content_layer="3", style_layers=["1", "5"], steps=5)
    ours = style.style_transfer(cupy.asarray(content), cupy.asarray(style_img), **kw)
    assert isinstance(ours, cupy.ndarray) and ours.shape == (24, 24, 3)
    ref = style.style_transfer(content, style_img, features=small_net(), content_layer="3",
                               style_layers=["1", "5"], steps=5)
    np.testing.assert_allclose(cupy.asnumpy(ours), ref, atol=2e-2)
