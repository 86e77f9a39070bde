"""What the detection examples share: the shapes splits as network inputs, the training
loop over minibatches with random mirroring, the evaluation (mAP@0.5 VOC and COCO mAP on
the held-out split) and the PNG grid of held-out images with predicted and true boxes."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

import fastconv
from fastconv import datasets, nn, optim
from fastconv.data import DataLoader
from fastconv.detection import kmeans_anchors, mean_average_precision

from . import _common

TRAIN_IMAGES, HELD_OUT_IMAGES = 2000, 500
TRAIN_SEED, HELD_OUT_SEED = 0, 1
# The course's display threshold (pc <= 0.6 dropped); the mAP uses every detection above
# EVAL_SCORE_THRESHOLD so that the precision/recall curve reaches low scores.
SHOW_SCORE_THRESHOLD = 0.6
EVAL_SCORE_THRESHOLD = 0.05
COLORS = ("tab:red", "tab:blue", "tab:green", "tab:purple")


@dataclass
class Split:
    """One split of fastconv.datasets.shapes: network inputs (N, 3, H, W) float32 in
    [0, 1], the uint8 images (N, H, W, 3), and per image its boxes and labels."""

    inputs: np.ndarray
    images: np.ndarray
    boxes: List[np.ndarray]
    labels: List[np.ndarray]

    @property
    def targets(self) -> List[Dict[str, np.ndarray]]:
        return [{"boxes": b, "labels": lab} for b, lab in zip(self.boxes, self.labels)]


@dataclass
class Result:
    """A finished run: mAP figures on the held-out split (mAP@0.5 per class), the mean
    training loss of each epoch and the training wall time (seconds)."""

    map_50: float
    coco_map: float
    per_class: Dict[int, float]
    losses: List[float]
    seconds: float


def as_input(images: np.ndarray) -> np.ndarray:
    """uint8 RGB images (N, H, W, 3) as network inputs (N, 3, H, W) float32 in [0, 1]."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255


def load_split(n: int, seed: int) -> Split:
    data = datasets.shapes(n, seed=seed)
    return Split(as_input(data.images), data.images, data.boxes, data.labels)


def prepare(args: argparse.Namespace, quick_epochs: int, anchor_count: int,
            ) -> Tuple[Split, Split, np.ndarray]:
    """Seed, cap the epochs of a --quick run, and load the data: (the training split, the
    held-out split, `anchor_count` anchor shapes by k-means on the training boxes)."""
    if args.quick:
        args.epochs = min(args.epochs, quick_epochs)
    fastconv.manual_seed(args.seed)
    train = load_split(min(args.train_images, TRAIN_IMAGES), TRAIN_SEED)
    held_out = load_split(HELD_OUT_IMAGES, HELD_OUT_SEED)
    shapes = np.concatenate([b[:, 2:] - b[:, :2] for b in train.boxes])
    return train, held_out, kmeans_anchors(shapes, anchor_count, seed=args.seed)


def mirrored(boxes: np.ndarray) -> np.ndarray:
    """Boxes (M, 4) xyxy fractions of an image flipped left to right."""
    out = boxes.copy()
    out[:, [0, 2]] = 1 - boxes[:, [2, 0]]
    return out


def parser(prog: str, description: str, epochs: int, plot: str,
           model: str) -> argparse.ArgumentParser:
    """The house flags plus where to save the model and the size of the run."""
    p = _common.parser(prog, description, epochs, plot)
    p.add_argument("--model", default=model, metavar="FILE",
                   help=f"where to save the trained model (default {model}); '' to skip")
    p.add_argument("--train-images", type=int, default=TRAIN_IMAGES, metavar="N",
                   help=f"use the first N training images (default {TRAIN_IMAGES})")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3, help="Adam's peak learning rate")
    return p


def train(model: nn.Module, count: int,
          loss_of: Callable[[np.ndarray, np.ndarray], fastconv.Tensor], *, epochs: int,
          batch_size: int, lr: float, seed: int, progress: bool,
          desc: str) -> Tuple[List[float], float]:
    """Adam with the learning rate annealed along a cosine over every step; each step
    draws `batch_size` of the `count` training images (shuffled per epoch with `seed`),
    mirrors each with probability 1/2 and calls loss_of(indices, mirrored flags).
    Returns (mean loss per epoch, seconds)."""
    from tqdm import tqdm

    loader = DataLoader(np.arange(count), batch_size, shuffle=True, seed=seed,
                        drop_last=True)
    rng = np.random.default_rng(seed + 1)
    opt = optim.Adam(model.parameters(), lr=lr)
    schedule = optim.CosineAnnealingLR(opt, T_max=max(epochs * len(loader), 1))
    losses: List[float] = []
    start = time.perf_counter()
    bar = tqdm(total=epochs * len(loader), desc=desc, unit="step", disable=not progress,
               leave=False)
    try:
        for _ in range(epochs):
            model.train()
            total = 0.0
            for index in loader:
                flip = rng.random(len(index)) < 0.5
                opt.zero_grad()
                loss = loss_of(index, flip)
                loss.backward()
                opt.step()
                schedule.step()
                total += loss.item()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            losses.append(total / max(len(loader), 1))
    finally:
        bar.close()
    return losses, time.perf_counter() - start


def flip_inputs(inputs: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """A copy of inputs (N, C, H, W) with the images where `flip` is set mirrored."""
    out = inputs.copy()
    out[flip] = inputs[flip][..., ::-1]
    return out


def evaluate(detections: List[Dict[str, np.ndarray]], split: Split, losses: List[float],
             seconds: float) -> Result:
    """mAP@0.5 (VOC, all points) and COCO mAP of the detections of `split`'s images."""
    voc = mean_average_precision(detections, split.targets, method="voc")
    coco = mean_average_precision(detections, split.targets)
    return Result(voc["map"], coco["map"], voc["map_per_class"], losses, seconds)


def report(name: str, result: Result, train_count: int, epochs: int,
           echo: Callable[[str], None] = print) -> None:
    per_class = ", ".join(f"{datasets.SHAPE_CLASSES[k]} {v:.3f}"
                          for k, v in sorted(result.per_class.items()))
    echo(f"{name}: held-out mAP@0.5 (VOC all points) {result.map_50:.4f}, COCO mAP@[.5:.95] "
         f"{result.coco_map:.4f} ({per_class}); {train_count} training images, {epochs} "
         f"epochs, {result.seconds:.1f} s of training, final loss {result.losses[-1]:.3f}")


def conclude(name: str, model: nn.Module, detections: List[Dict[str, np.ndarray]],
             held_out: Split, losses: List[float], seconds: float, train_count: int,
             args: argparse.Namespace, saved_hint: str = "") -> float:
    """Evaluate and report a trained detector, draw its held-out grid (--plot) and save it
    (--model); returns mAP@0.5."""
    result = evaluate(detections, held_out, losses, seconds)
    report(f"{name} shapes", result, train_count, args.epochs)
    if args.plot:
        save_grid(held_out, detections, args.plot,
                  f"{name} on held-out shapes: mAP@0.5 {result.map_50:.3f}")
        print(f"detections saved to {args.plot}")
    if args.model:
        nn.save(model, args.model)
        print(f"model saved to {args.model}{saved_hint}")
    return result.map_50


def save_grid(split: Split, detections: Sequence[Dict[str, np.ndarray]], path: str,
              title: str, count: int = 16, score_threshold: float = SHOW_SCORE_THRESHOLD,
              ) -> None:
    """The first `count` held-out images in a grid, each in its own frame: true boxes
    dashed black, detections scoring above score_threshold solid in their class colour
    with name and score."""
    count = min(count, len(split.images))
    cols = int(np.ceil(np.sqrt(count)))
    rows = -(-count // cols)
    with _common.figure(path, f"{title}\ndashed: ground truth; solid: detections with "
                        f"score > {score_threshold}", nrows=rows, ncols=cols,
                        figsize=(2.6 * cols, 2.6 * rows + 0.7), squeeze=False) as axes:
        for i, ax in enumerate(axes.ravel()):
            if i >= count:
                ax.axis("off")
                continue
            show_image(ax, split.images[i])
            h, w = split.images[i].shape[:2]
            draw_boxes(ax, split.boxes[i], w, h, color="black", linestyle="--")
            det = detections[i]
            keep = det["scores"] > score_threshold
            draw_boxes(ax, det["boxes"][keep], w, h, labels=det["labels"][keep],
                       scores=det["scores"][keep])


def show_image(ax, image: np.ndarray) -> None:
    """The image on a matplotlib axis inside a grey frame, without ticks (the shapes
    images have white backgrounds, which would run together in a grid)."""
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor("0.4")
        spine.set_linewidth(1.2)


def draw_boxes(ax, boxes: np.ndarray, width: int, height: int, *, labels=None, scores=None,
               color=None, linestyle="-", names: Sequence[str] = datasets.SHAPE_CLASSES,
               ) -> None:
    """Boxes (D, 4) xyxy fractions on a matplotlib axis showing a width x height image;
    with labels, each box in its class colour with the class name (`names[label]`) and
    its score on it."""
    from matplotlib.patches import Rectangle

    for d, (x1, y1, x2, y2) in enumerate(np.asarray(boxes).reshape(-1, 4)):
        label = None if labels is None else int(labels[d])
        edge = color or COLORS[label % len(COLORS)]
        # Pixel (col, row) covers [col - 0.5, col + 0.5] in imshow's coordinates.
        ax.add_patch(Rectangle((x1 * width - 0.5, y1 * height - 0.5), (x2 - x1) * width,
                               (y2 - y1) * height, fill=False, edgecolor=edge,
                               linestyle=linestyle, linewidth=1.5))
        if label is not None:
            text = names[label] if label < len(names) else str(label)
            if scores is not None:
                text = f"{text} {float(scores[d]):.2f}"
            # Above the box, or inside its top edge when it touches the image's top.
            top = y1 * height > 0.08 * height
            ax.text(x1 * width, y1 * height + (-1.5 if top else 1.5), text, color="white",
                    fontsize=6, va="bottom" if top else "top",
                    bbox=dict(facecolor=edge, alpha=0.8, pad=0.5, linewidth=0))
