"""Whole-network inference benchmark: forward time of `fastconv.models` networks against
twins written in plain torch.nn with the same weights (copied through the state dict), in
one process, with PyTorch limited to fastconv's thread count.

Entry point: `python -m fastconv bench --models [--quick]`. The twins are written out here
rather than taken from torchvision so the comparison needs nothing beyond torch itself and
so the architecture being timed is visible next to the timing.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import fastconv
from fastconv import models

# name -> (input shape, reps) of the full run; warm-up calls come on top.
MODELS: Dict[str, Tuple[Tuple[int, ...], int]] = {
    "lenet5": ((64, 1, 32, 32), 20),
    "vgg16": ((1, 3, 224, 224), 5),
    "resnet50": ((1, 3, 224, 224), 5),
}
WARMUP = 2


@dataclass
class ModelResult:
    """One row of the table (milliseconds are medians per forward)."""

    model: str
    input_shape: Tuple[int, ...]
    fastconv_ms: float
    torch_ms: Optional[float]
    speedup: Optional[float]       # torch ms / fastconv ms: > 1 means fastconv is faster
    max_rel_err: Optional[float]   # max|fastconv - torch| / max|torch|
    reps: int


# ------------------------------------------------------------------ torch twins


def torch_lenet5(torch: Any) -> Any:
    """`models.LeNet5` in torch.nn (same module tree, so the state dict maps 1:1)."""
    nn = torch.nn

    class LeNet5(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2),
                nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
                nn.Conv2d(16, 120, 5), nn.Tanh())
            self.classifier = nn.Sequential(nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10))

        def forward(self, x: Any) -> Any:
            return self.classifier(torch.flatten(self.features(x), 1))

    return LeNet5()


def torch_vgg16(torch: Any) -> Any:
    """VGG-16 (configuration D) with torchvision's module names."""
    nn = torch.nn
    layers: List[Any] = []
    channels = 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(v), 3, padding=1), nn.ReLU(inplace=True)]
            channels = int(v)

    class VGG(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
                nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 1000))

        def forward(self, x: Any) -> Any:
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return VGG()


def torch_resnet50(torch: Any) -> Any:
    """ResNet-50 (bottleneck blocks 3-4-6-3) with torchvision's module names."""
    nn = torch.nn

    class Bottleneck(nn.Module):
        def __init__(self, inplanes: int, planes: int, stride: int = 1,
                     downsample: Optional[Any] = None) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x: Any) -> Any:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            return self.relu(self.bn3(self.conv3(out)) + identity)

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = self._layer(64, 3)
            self.layer2 = self._layer(128, 4, 2)
            self.layer3 = self._layer(256, 6, 2)
            self.layer4 = self._layer(512, 3, 2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(2048, 1000)

        def _layer(self, planes: int, blocks: int, stride: int = 1) -> Any:
            downsample = None
            if stride != 1 or self.inplanes != planes * 4:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False),
                    nn.BatchNorm2d(planes * 4))
            layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * 4
            layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

        def forward(self, x: Any) -> Any:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet()


TWINS: Dict[str, Callable[[Any], Any]] = {
    "lenet5": torch_lenet5, "vgg16": torch_vgg16, "resnet50": torch_resnet50,
}


# ------------------------------------------------------------------ timing


def _median_ms(fn: Callable[[], Any], reps: int) -> Tuple[float, Any]:
    """Median milliseconds per call after WARMUP untimed calls, and the last result."""
    out = None
    for _ in range(WARMUP):
        out = fn()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        samples.append(time.perf_counter() - start)
    return 1e3 * statistics.median(samples), out


def _randomize_buffers(model: fastconv.nn.Module, rng: np.random.Generator) -> None:
    """Give BatchNorm running statistics non-trivial values, so eval-mode normalization is
    actually exercised by the comparison (fresh ones are mean 0, variance 1)."""
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            buf[...] = rng.normal(0.0, 0.1, buf.shape)
        elif name.endswith("running_var"):
            buf[...] = rng.uniform(0.5, 1.5, buf.shape)


def bench_model(name: str, shape: Sequence[int], reps: int, torch: Optional[Any],
                seed: int = 0) -> ModelResult:
    """Time one network's forward (eval mode, no graph) in fastconv and, with `torch`, in
    its twin; compare the outputs."""
    fastconv.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = getattr(models, name)().eval()
    _randomize_buffers(model, rng)
    x = rng.standard_normal(tuple(shape)).astype(np.float32)
    with fastconv.no_grad():
        ours_ms, ours = _median_ms(lambda: model(fastconv.Tensor(x)), reps)
    ours = ours.numpy()
    torch_ms = err = speedup = None
    if torch is not None:
        twin = TWINS[name](torch).eval()
        # strict: a missing or renamed key would mean the twin is not the same network.
        twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                              for k, v in model.state_dict().items()}, strict=True)
        xt = torch.from_numpy(x)
        with torch.no_grad():
            torch_ms, theirs = _median_ms(lambda: twin(xt), reps)
        theirs = theirs.numpy()
        err = float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30))
        speedup = torch_ms / ours_ms
    return ModelResult(name, tuple(shape), ours_ms, torch_ms, speedup, err, reps)


def format_table(results: Sequence[ModelResult], threads: int) -> str:
    """The aligned table, with a line saying how it was measured."""
    lines = [f"forward pass, eval mode, no autograd; median ms after {WARMUP} warm-up calls; "
             f"{threads} threads each; speed-up = torch ms / fastconv ms"]
    titles = ["model", "input", "fastconv ms", "torch ms", "speed-up", "max rel err"]
    rows = [[r.model, "x".join(map(str, r.input_shape)), f"{r.fastconv_ms:.2f}",
             "" if r.torch_ms is None else f"{r.torch_ms:.2f}",
             "" if r.speedup is None else f"{r.speedup:.2f}",
             "" if r.max_rel_err is None else f"{r.max_rel_err:.1e}"] for r in results]
    widths = [max(len(row[i]) for row in rows + [titles]) for i in range(len(titles))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines += [line(titles), line(["-" * w for w in widths])] + [line(r) for r in rows]
    return "\n".join(lines)


def run(names: Optional[Sequence[str]] = None, quick: bool = False, use_torch: bool = True,
        reps: Optional[int] = None, progress: bool = True,
        echo: Callable[[str], None] = print) -> List[ModelResult]:
    """Benchmark `names` (default: all of MODELS; `quick`: lenet5 only, 3 reps), print the
    table through `echo` and return the rows. `reps` overrides the per-model count."""
    from tqdm import tqdm

    selected = list(names) if names is not None else (["lenet5"] if quick else list(MODELS))
    threads = int(fastconv.info(as_dict=True)["threads"])
    torch = None
    if use_torch:
        try:
            import torch
        except ImportError:
            torch = None
        else:
            # Same core count for both: otherwise the comparison measures thread counts.
            torch.set_num_threads(threads)
    results = []
    for name in tqdm(selected, desc="models", unit="model", disable=not progress,
                     leave=False):
        shape, default_reps = MODELS[name]
        n = reps if reps is not None else (3 if quick else default_reps)
        results.append(bench_model(name, shape, n, torch))
    echo(format_table(results, threads))
    return results
