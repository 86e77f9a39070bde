"""The network layer on the GPU: Tensors wrapping CuPy arrays, modules moved with .to("cuda"),
trained for a few steps; every loss, gradient and weight matches the same run on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import nn, optim
from fastconv.nn import functional as F

pytestmark = pytest.mark.cuda


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


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


@pytest.mark.parametrize("make_opt", [
    lambda p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-4),
    lambda p: optim.Adam(p, lr=1e-2),
], ids=["sgd_momentum", "adam"])
def test_training_on_gpu_matches_cpu(make_opt) -> None:
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
            losses.append(float(_host(loss.data)))
        np.testing.assert_allclose(losses[1], losses[0], rtol=1e-10)
    for (name, a), (_, b) in zip(cpu_model.state_dict().items(),
                                 gpu_model.state_dict().items()):
        np.testing.assert_allclose(_host(b), a, rtol=1e-9, atol=1e-12, err_msg=name)


def test_tensor_round_trip_and_gradient_on_gpu() -> None:
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
    np.testing.assert_allclose(_host(y.data), y_host.data, rtol=1e-5, atol=1e-5)
    x2 = fastconv.Tensor(x_host, requires_grad=True)
    (F.conv(x2, fastconv.Tensor(w_host), padding=1) ** 2).sum().backward()
    np.testing.assert_allclose(x.grad, x2.grad, rtol=1e-4, atol=1e-4)
