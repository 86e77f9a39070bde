"""A small ConvNet trained for a few steps matches the same network and optimizer in
PyTorch step by step: losses, gradients and weights (float64, so differences are rounding
only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastconv
from fastconv import nn, optim
from fastconv.nn import functional as F


def small_convnet(lib) -> object:
    """The same architecture in fastconv.nn or torch.nn (conv-BN-ReLU-pool, conv, pool, FC)."""
    return lib.Sequential(
        lib.Conv2d(3, 6, 3, padding=1),
        lib.BatchNorm2d(6),
        lib.ReLU(),
        lib.MaxPool2d(2),
        lib.Conv2d(6, 8, 3, stride=2, padding=1),
        lib.ReLU(),
        lib.AvgPool2d(2),
        lib.Flatten(),
        lib.Linear(8 * 2 * 2, 10),
    )


OPTIMIZERS = {
    "sgd_momentum": (lambda p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-4),
                     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-4)),
    "sgd_nesterov": (lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
                     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    "adam": (lambda p: optim.Adam(p, lr=1e-2, weight_decay=1e-4),
             lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-4)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_training_matches_torch_step_by_step(name: str) -> None:
    fastconv.manual_seed(0)
    ours = small_convnet(nn)
    ours.double()
    twin = small_convnet(torch.nn).double()
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    make_ours, make_twin = OPTIMIZERS[name]
    opt, opt_t = make_ours(ours.parameters()), make_twin(twin.parameters())
    rng = np.random.default_rng(1)
    ours.train()
    twin.train()
    for step in range(5):
        x = rng.standard_normal((4, 3, 16, 16))
        labels = rng.integers(0, 10, size=4)
        opt.zero_grad()
        loss = F.cross_entropy(ours(fastconv.Tensor(x)), labels)
        loss.backward()
        opt.step()
        opt_t.zero_grad()
        loss_t = torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)),
                                                   torch.from_numpy(labels))
        loss_t.backward()
        opt_t.step()
        assert loss.item() == pytest.approx(loss_t.item(), rel=1e-10), step
        theirs = twin.state_dict()
        for key, value in ours.state_dict().items():
            np.testing.assert_allclose(value, theirs[key].numpy(), rtol=1e-9, atol=1e-12,
                                       err_msg=f"{key} after step {step}")
    # The network did learn something on its own data: the loss moved.
    assert loss.item() != pytest.approx(float(np.log(10)), rel=1e-3)


def test_input_gradient_for_style_transfer_matches_torch() -> None:
    """Descending on the input pixels: d(loss)/d(image) through the network."""
    fastconv.manual_seed(3)
    ours = small_convnet(nn)
    ours.double().eval()
    twin = small_convnet(torch.nn).double().eval()
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    image = np.random.default_rng(4).standard_normal((1, 3, 16, 16))
    x = fastconv.Tensor(image.copy(), requires_grad=True)
    features = ours[:4](x)
    gram = features.reshape(6, -1) @ features.reshape(6, -1).T
    (gram ** 2).sum().backward()
    xt = torch.from_numpy(image.copy()).requires_grad_(True)
    ft = twin[:4](xt)
    gt = ft.reshape(6, -1) @ ft.reshape(6, -1).T
    (gt ** 2).sum().backward()
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-9, atol=1e-9)
