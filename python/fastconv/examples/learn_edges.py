"""Learning to detect edges (the course's slide of that name): `python -m fastconv learn-edges`.

Instead of choosing the nine numbers of a 3x3 edge filter by hand, make them the weights
of a convolution layer and learn them from examples: pairs (image, target) whose target is
the image's response to a known kernel (Sobel's x kernel by default). One Conv2d(1, 1, 3,
bias=False) in float64 is trained by full-batch gradient descent on the mean squared error
and the learned weights are compared with the kernel.

Why gradient descent must find the kernel, and how close: the response is linear in the
filter, so the loss is the quadratic (w - k)^T G (w - k) with G the mean of p p^T over the
3x3 patches p of the images (fastconv.im2col). It is zero at w = k, its only minimum when
G is positive definite (any image with texture). With the step 1/L, L = 2 * the largest
eigenvalue of G (the loss's curvature), every step shrinks the error by at least
(1 - mu / L), mu = 2 * the smallest eigenvalue, so after T steps
||w_T - k|| <= (1 - mu / L)^T ||w_0 - k|| (in exact arithmetic; float64 adds rounding of
order 1e-15); the example prints that bound beside the error reached, which stays below it.

Data: random 64x64 crops of scikit-image's grass texture (the `examples` extra), each with
its mean removed (a constant offset does not change an edge response, but it makes G
badly conditioned, slowing the descent), or white noise (--data noise).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

import fastconv
from fastconv import filters, nn, optim
from fastconv.nn import functional as F

from . import _common

TARGETS = {"sobel_x": filters.SOBEL_X, "sobel_y": filters.SOBEL_Y,
           "scharr_x": filters.SCHARR_X, "scharr_y": filters.SCHARR_Y,
           "vertical": filters.VERTICAL, "horizontal": filters.HORIZONTAL}


@dataclass
class LearnedFilter:
    """The outcome of `learn_filter`: the learned (3, 3) kernel, the loss and the distance
    ||w - k|| (Frobenius) before each step and after the last, and the curvature bounds
    (mu, L) of the loss."""

    kernel: np.ndarray
    losses: List[float] = field(default_factory=list)
    errors: List[float] = field(default_factory=list)
    mu: float = 0.0
    big_l: float = 0.0

    def bound(self) -> np.ndarray:
        """The guaranteed error after each step: (1 - mu / L)^t * ||w_0 - k||."""
        t = np.arange(len(self.errors))
        return self.errors[0] * (1.0 - self.mu / self.big_l) ** t


def crops(source: str, count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 1, size, size) float64 training images with zero mean each: random crops of
    skimage's grass (scaled to [0, 1] first) or standard-normal noise."""
    if source == "noise":
        images = rng.standard_normal((count, 1, size, size))
    else:
        from skimage import data

        grass = data.grass().astype(np.float64) / 255.0
        top = rng.integers(0, grass.shape[0] - size + 1, count)
        left = rng.integers(0, grass.shape[1] - size + 1, count)
        images = np.stack([grass[t:t + size, s:s + size] for t, s in zip(top, left)])[:, None]
    return images - images.mean(axis=(2, 3), keepdims=True)


def curvature(images: np.ndarray) -> Tuple[float, float]:
    """(mu, L): twice the smallest and largest eigenvalues of G = mean p p^T over the 3x3
    patches p of `images` (N, 1, H, W), the extreme curvatures of the MSE loss."""
    cols = fastconv.im2col(images, 3)                     # (N, 9, patches)
    patches = cols.transpose(0, 2, 1).reshape(-1, 9)
    eig = np.linalg.eigvalsh(patches.T @ patches / len(patches))
    return 2.0 * float(eig[0]), 2.0 * float(eig[-1])


def learn_filter(images: np.ndarray, target: np.ndarray, steps: int, seed: int = 0,
                 progress: bool = False) -> LearnedFilter:
    """Learn a 3x3 filter from (images, their valid cross-correlation with `target`) by
    `steps` steps of full-batch gradient descent (optim.SGD, step 1/L) on the MSE."""
    from tqdm import tqdm

    fastconv.manual_seed(seed)
    layer = nn.Conv2d(1, 1, 3, bias=False)
    layer.weight = nn.Parameter(layer.weight.data.astype(np.float64))
    k = np.asarray(target, dtype=np.float64)
    responses = fastconv.conv(images, k[None, None])      # the examples' targets
    mu, big_l = curvature(images)
    opt = optim.SGD(layer.parameters(), lr=1.0 / big_l)
    result = LearnedFilter(kernel=k, mu=mu, big_l=big_l)
    x = fastconv.Tensor(images)
    for _ in tqdm(range(steps), desc="learn-edges", unit="step", disable=not progress,
                  leave=False):
        opt.zero_grad()
        loss = F.mse_loss(layer(x), responses)
        result.losses.append(float(loss.item()))
        result.errors.append(float(np.linalg.norm(layer.weight.data[0, 0] - k)))
        loss.backward()
        opt.step()
    result.losses.append(float(F.mse_loss(layer(x), responses).item()))
    result.errors.append(float(np.linalg.norm(layer.weight.data[0, 0] - k)))
    result.kernel = layer.weight.data[0, 0].copy()
    return result


def save_plot(result: LearnedFilter, target: np.ndarray, path: str, title: str) -> None:
    """Loss and error per step (with the guaranteed bound), and the learned and the target
    kernels with their values, as a PNG at `path`."""
    with _common.figure(path, title, ncols=3, figsize=(13, 4),
                        gridspec_kw={"width_ratios": [2, 1, 1]}) as axes:
        steps = np.arange(len(result.errors))
        axes[0].semilogy(steps, result.losses, label="loss (MSE)")
        axes[0].semilogy(steps, result.errors, label="||w - k||")
        axes[0].semilogy(steps, result.bound(), "--", label="bound (1 - mu/L)^t ||w0 - k||")
        axes[0].set_xlabel("gradient-descent step")
        axes[0].set_title(f"mu/L = {result.mu / result.big_l:.3f}")
        axes[0].legend()
        lim = float(np.abs(target).max())
        for ax, kernel, name in ((axes[1], result.kernel, "learned"),
                                 (axes[2], target, "target")):
            ax.imshow(kernel, cmap="coolwarm", vmin=-lim, vmax=lim)
            for (i, j), v in np.ndenumerate(kernel):
                ax.text(j, i, f"{v:.3f}", ha="center", va="center")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(name)


def main(argv: Optional[Sequence[str]] = None) -> float:
    """Learn a 3x3 edge filter with the flags in `argv`; returns ||learned - target||."""
    p = argparse.ArgumentParser(
        prog="python -m fastconv learn-edges",
        description="Learn a 3x3 edge filter by gradient descent from (image, Sobel "
                    "response) pairs and compare it with the kernel.")
    p.add_argument("--target", choices=sorted(TARGETS), default="sobel_x",
                   help="the kernel whose responses are the examples (default sobel_x)")
    p.add_argument("--data", choices=("grass", "noise"), default="grass",
                   help="crops of scikit-image's grass texture (default) or white noise")
    p.add_argument("--images", type=int, default=6, help="training images (default 6)")
    p.add_argument("--steps", type=int, default=400,
                   help="gradient-descent steps (default 400)")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops and the start")
    p.add_argument("--plot", default="learn_edges.png", metavar="PNG",
                   help="where to save the plot (default learn_edges.png); '' for none")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--quick", action="store_true",
                   help="2 images of 32x32 and 150 steps: a smoke run for tests")
    args = p.parse_args(argv)
    count, size = (2, 32) if args.quick else (args.images, 64)
    steps = min(args.steps, 150) if args.quick else args.steps
    rng = np.random.default_rng(args.seed)
    target = TARGETS[args.target]
    images = crops(args.data, count, size, rng)
    result = learn_filter(images, target, steps, args.seed, progress=not args.no_progress)
    np.set_printoptions(precision=4, suppress=True)
    print(f"learned 3x3 filter after {steps} steps on {count} {args.data} images "
          f"{size}x{size} (target {args.target}):\n{result.kernel}")
    print(f"||learned - target|| = {result.errors[-1]:.2e} (start {result.errors[0]:.2e}, "
          f"guaranteed <= {result.bound()[-1]:.2e} with mu/L = "
          f"{result.mu / result.big_l:.3f}); final loss {result.losses[-1]:.2e}")
    if args.plot:
        save_plot(result, target, args.plot,
                  f"learning {args.target} from {count} {args.data} images")
        print(f"plot saved to {args.plot}")
    return result.errors[-1]


if __name__ == "__main__":
    main()
