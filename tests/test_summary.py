"""fastconv.nn.summary: the parameter and multiply-add counts of the classic lessons."""

from __future__ import annotations

import numpy as np
import pytest

from fastconv import nn


def test_conv_versus_dense_parameters():
    """A 5x5 conv 32x32x3 -> 28x28x6 has 456 parameters; the dense layer with the same
    input and output sizes has about 14.45 million."""
    conv = nn.summary(nn.Sequential(nn.Conv2d(3, 6, 5)), (3, 32, 32))
    (row,) = conv.rows
    assert row.name == "0" and row.type == "Conv2d"
    assert row.output_shape == (1, 6, 28, 28) and row.activations == 28 * 28 * 6
    assert row.params == conv.total_params == 456
    assert row.mult_adds == 28 * 28 * 6 * 5 * 5 * 3

    dense = nn.summary(nn.Sequential(nn.Flatten(), nn.Linear(32 * 32 * 3, 28 * 28 * 6)),
                       (3, 32, 32))
    assert dense.total_params == 3072 * 4704 + 4704 == 14_455_392
    assert dense.total_mult_adds == 3072 * 4704


def test_bottleneck_mult_adds():
    """28x28x192 -> 32 channels by a 5x5 "same" conv: ~120.4 M multiply-adds; a 1x1
    16-channel bottleneck first: 2.4 M + 10.0 M = ~12.4 M."""
    direct = nn.summary(nn.Conv2d(192, 32, 5, padding="same"), (192, 28, 28))
    assert direct.total_mult_adds == 28 * 28 * 32 * 5 * 5 * 192 == 120_422_400
    assert direct.rows[0].name == "Conv2d"

    bottleneck = nn.summary(nn.Sequential(nn.Conv2d(192, 16, 1), nn.ReLU(),
                                          nn.Conv2d(16, 32, 5, padding=2)), (192, 28, 28))
    first, relu, second = bottleneck.rows
    assert first.mult_adds == 2_408_448 and relu.mult_adds == 0
    assert second.mult_adds == 10_035_200
    assert bottleneck.total_mult_adds == 12_443_648
    assert round(bottleneck.total_mult_adds / 1e6, 1) == 12.4


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, groups=1),
                                      nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False),
                                      nn.Dropout(0.5))
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(8, 10)

    def forward(self, x):
        return self.classifier(self.flatten(self.pool(self.features(x))))


def test_table_and_modes():
    model = _Net()
    model.features[1].eval()  # a mixed state must come back as it was
    before = [m.training for m in model.modules()]
    stats_before = model.features[1].running_mean.copy()
    result = nn.summary(model, (3, 16, 16))
    assert [m.training for m in model.modules()] == before
    np.testing.assert_array_equal(model.features[1].running_mean, stats_before)
    names = [row.name for row in result.rows]
    assert names == ["features.0", "features.1", "features.2", "features.3", "features.4",
                     "features.5", "pool", "flatten", "classifier"]
    assert result.rows[4].mult_adds == 8 * 8 * 8 * 2 * 9  # groups=4: 2 input channels each
    assert result.rows[4].params == 8 * 2 * 9
    assert result.rows[-1].output_shape == (1, 10)
    assert result.total_params == sum(p.data.size for p in model.parameters()) == 474
    assert result.trainable_params == result.total_params
    assert result.total_mult_adds == sum(row.mult_adds for row in result.rows)
    text = str(result)
    for expected in ["features.4", "Conv2d", "(1, 8, 8, 8)", "Total params: 474",
                     "Mult-adds", f"{result.total_mult_adds:,}"]:
        assert expected in text
    assert len(text.splitlines()) == len(result.rows) + 8


def test_input_shape_with_batch():
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    assert nn.summary(model, (8, 3, 10, 10)).rows[0].output_shape == (1, 4, 8, 8)
    assert nn.summary(model, (3, 10, 10)).input_shape == (3, 10, 10)


def test_bad_shape_names_the_layer():
    with pytest.raises(ValueError, match=r"1 \(Conv2d\)"):
        nn.summary(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3)), (3, 10, 10))
