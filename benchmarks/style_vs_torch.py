"""fastconv.style.style_transfer against the same optimization in PyTorch, in one process.

    python benchmarks/style_vs_torch.py [--size 256] [--steps 100] [--style gravel]
        [--png docs/style_transfer_chelsea_gravel.png]

The same setup on both sides: EfficientNet-Lite0 with its ImageNet weights (fastconv's
model and its plain-torch twin loaded from the same state dict), float32, chelsea (centre
square) as content and a bundled texture as style at SIZE x SIZE, the default layers and
input normalization of style.FEATURES["efficientnet_lite0"], alpha = 10, beta = 40 and the
same lambda_l, the content image as the initial image, and STEPS L-BFGS iterations
(lr 1, history 100, no line search; one iteration per step, pixels clamped to [0, 1]
after each) with fastconv.optim.LBFGS and torch.optim.LBFGS.

The two runs are interleaved: fastconv's style_transfer calls back after each of its
steps and the callback takes one torch step, so both see the same machine load. Time
per iteration: fastconv from callback to callback less the torch step inside, torch its
step; both over steps 2..STEPS (step 1 of fastconv includes its setup). The cost of each
final image is evaluated by both implementations. Prints the cost curves, the final
costs and their ratio, and the times per iteration and their ratio.
"""

from __future__ import annotations

import argparse
import time
from typing import Dict, List, Optional

import numpy as np
import torch

import fastconv
from fastconv import models, style
from fastconv.models.torch_twins import TWINS
from fastconv.visualize import save_image

ALPHA, BETA = 10.0, 40.0


def square(image: np.ndarray, size: int) -> np.ndarray:
    """The centred square of an (H, W[, 3]) uint8 image, RGB float64 in [0, 1], resized."""
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[top:top + side, left:left + side, :3].astype(np.float64) / 255.0
    return np.clip(models.resize(crop, (size, size)), 0.0, 1.0)


class TorchStyle:
    """J(G) of the course in torch on the twin, layers read with forward hooks."""

    def __init__(self, twin: torch.nn.Module, content: np.ndarray, style_img: np.ndarray,
                 spec: style.FeatureSpec, weights: List[float]) -> None:
        self.twin, self.spec, self.weights = twin, spec, weights
        self.mean = torch.tensor(spec.mean, dtype=torch.float32).reshape(1, 3, 1, 1)
        self.std = torch.tensor(spec.std, dtype=torch.float32).reshape(1, 3, 1, 1)
        self.modules = dict(twin.named_modules())
        with torch.no_grad():
            self.content = self.features(batch(content))[spec.content_layer]
            acts = self.features(batch(style_img))
            self.grams = {name: gram(acts[name]) for name in spec.style_layers}

    def features(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        got: Dict[str, torch.Tensor] = {}
        wanted = [self.spec.content_layer, *self.spec.style_layers]

        class Done(Exception):
            pass

        def hook(name: str):
            def run(module, inputs, output):
                got.setdefault(name, output)
                if len(got) == len(wanted):
                    raise Done
            return run

        handles = [self.modules[name].register_forward_hook(hook(name)) for name in wanted]
        try:
            self.twin((x - self.mean) / self.std)
        except Done:
            pass
        finally:
            for h in handles:
                h.remove()
        return got

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        acts = self.features(x)
        a_g = acts[self.spec.content_layer]
        cost = ALPHA * 0.5 * ((a_g - self.content) ** 2).sum()
        for name, w in zip(self.spec.style_layers, self.weights):
            a = acts[name]
            c, cells = a.shape[1], a[0, 0].numel()
            cost = cost + BETA * w * ((gram(a) - self.grams[name]) ** 2).sum() / (
                2.0 * cells * c) ** 2
        return cost


def gram(a: torch.Tensor) -> torch.Tensor:
    flat = a.reshape(a.shape[1], -1)
    return flat @ flat.T


def batch(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[None],
                                                 dtype=np.float32))


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--style", default="gravel", help="a scikit-image sample texture")
    parser.add_argument("--png", default="", help="write fastconv | torch results here")
    args = parser.parse_args(argv)
    from skimage import data

    torch.set_num_threads(2)
    content = square(data.chelsea(), args.size)
    style_img = square(getattr(data, args.style)(), args.size)
    model, spec = style.feature_model("efficientnet_lite0")
    twin = TWINS["efficientnet_lite0"]().eval()
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                          for k, v in model.state_dict().items()})
    for p in twin.parameters():
        p.requires_grad_(False)

    # the same lambda_l on both sides: fastconv's default, N / L
    ours_cost = style.StyleTransferCost(model, content, style_img, content_layer=spec.content_layer,
                                        style_layers=spec.style_layers, alpha=ALPHA, beta=BETA,
                                        mean=spec.mean, std=spec.std)
    weights = list(ours_cost.style_weights)
    torch_cost = TorchStyle(twin, content, style_img, spec, weights)

    x = batch(content).requires_grad_(True)
    topt = torch.optim.LBFGS([x], lr=1, max_iter=1, history_size=100)

    def closure() -> torch.Tensor:
        topt.zero_grad()
        cost = torch_cost(x)
        cost.backward()
        return cost.detach()

    stamps: List[float] = []
    torch_seconds: List[float] = []
    ours_costs: List[float] = []
    torch_costs: List[float] = []

    def torch_step(step: int, cost: float) -> None:
        stamps.append(time.perf_counter())
        ours_costs.append(cost)
        start = time.perf_counter()
        torch_costs.append(float(topt.step(closure)))
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
        torch_seconds.append(time.perf_counter() - start)

    ours = style.style_transfer(content, style_img, steps=args.steps, alpha=ALPHA, beta=BETA,
                                style_weights=weights, callback=torch_step)
    theirs = x.detach().numpy()[0].transpose(1, 2, 0).astype(np.float64)

    ours_step = [b - a - t for a, b, t in zip(stamps, stamps[1:], torch_seconds)]
    print(f"{args.size}x{args.size} chelsea + {args.style}, {args.steps} L-BFGS steps, "
          f"EfficientNet-Lite0 layers {spec.content_layer} / {', '.join(spec.style_layers)}, "
          f"alpha {ALPHA:g}, beta {BETA:g}, lambda {weights[0]:.4g} each; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    print("step    J fastconv     J torch   (J at the start of the step)")
    for i in sorted(set(range(0, args.steps, max(1, args.steps // 10))) | {args.steps - 1}):
        print(f"{i + 1:4d}  {ours_costs[i]:11.5g} {torch_costs[i]:11.5g}")

    def evaluate(image: np.ndarray) -> tuple:
        tensor = fastconv.Tensor(np.ascontiguousarray(image.transpose(2, 0, 1)[None],
                                                      dtype=np.float32))
        with fastconv.no_grad():
            a = float(ours_cost(tensor).item())
        with torch.no_grad():
            b = float(torch_cost(batch(image)))
        return a, b

    (ours_by_ours, ours_by_torch), (theirs_by_ours, theirs_by_torch) = map(evaluate,
                                                                           (ours, theirs))
    print(f"final J of fastconv's image: {ours_by_ours:.5g} (fastconv) {ours_by_torch:.5g} "
          f"(torch); of torch's image: {theirs_by_ours:.5g} (fastconv) "
          f"{theirs_by_torch:.5g} (torch)")
    print(f"final J ratio fastconv / torch: {ours_by_torch / theirs_by_torch:.3f} "
          f"(target <= 1.1)")
    ours_ms, torch_ms = 1e3 * np.median(ours_step), 1e3 * np.median(torch_seconds[1:])
    print(f"time per iteration (median of steps 2..{args.steps}): fastconv {ours_ms:.0f} ms, "
          f"torch {torch_ms:.0f} ms, torch / fastconv {torch_ms / ours_ms:.2f}x "
          f"(means {1e3 * np.mean(ours_step):.0f} / {1e3 * np.mean(torch_seconds[1:]):.0f} ms)")
    if args.png:
        save_image(np.concatenate([ours, np.ones((args.size, 4, 3)), theirs], axis=1),
                   args.png)
        print(f"fastconv | torch images saved to {args.png}")


if __name__ == "__main__":
    main()
