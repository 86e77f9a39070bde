"""LeNet-5 (LeCun et al. 1998) for 32x32 single-channel images."""

from __future__ import annotations

from .. import nn
from ..tensor import Tensor
from ._layers import flatten

__all__ = ["LeNet5", "lenet5"]


class LeNet5(nn.Module):
    """Input (N, in_channels, 32, 32) -> logits (N, num_classes).

    features: C1 conv 6@5x5 -> tanh -> S2 avg pool 2 -> C3 conv 16@5x5 -> tanh -> S4 avg
    pool 2 -> C5 conv 120@5x5 -> tanh (1x1 maps); classifier: F6 Linear 120->84 -> tanh ->
    Linear 84->num_classes. C3 is fully connected to S2 (the paper's sparse connection table
    was a 1998 compute saving) and the trainable pooling coefficients and RBF output are
    replaced by plain averaging and a linear layer, as every modern rendition: 61,706
    parameters with the defaults.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), nn.Tanh(), nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
            # C5 as a convolution, not a Linear: on a larger input it slides, as in the paper.
            nn.Conv2d(16, 120, 5), nn.Tanh(),
        )
        self.classifier = nn.Sequential(nn.Linear(120, 84), nn.Tanh(),
                                        nn.Linear(84, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(flatten(self.features(x)))


def lenet5(num_classes: int = 10, in_channels: int = 1) -> LeNet5:
    """LeNet-5 for (N, in_channels, 32, 32) input (61,706 parameters for 1 channel and 10
    classes)."""
    return LeNet5(num_classes=num_classes, in_channels=in_channels)
