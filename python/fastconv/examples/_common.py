"""What the three examples share: the command line, the minibatch training loop, the
evaluation and the loss/accuracy plot."""

from __future__ import annotations

import argparse
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, List, Optional, Sequence

import numpy as np

import fastconv
from fastconv import nn, optim
from fastconv.nn import functional as F


@dataclass
class History:
    """Per-epoch curves of one training run (what the plot shows) and its wall time."""

    train_loss: List[float] = field(default_factory=list)
    train_acc: List[float] = field(default_factory=list)
    test_loss: List[float] = field(default_factory=list)
    test_acc: List[float] = field(default_factory=list)
    seconds: float = 0.0


def parser(prog: str, description: str, epochs: int, plot: str) -> argparse.ArgumentParser:
    """The flags every example takes; `epochs` and `plot` are the example's defaults."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--epochs", type=int, default=epochs,
                   help=f"passes over the training set (default {epochs})")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the data split, the initialization and the batch order")
    p.add_argument("--plot", default=plot, metavar="PNG",
                   help=f"where to save the loss/accuracy plot (default {plot}); "
                        "'' for no plot")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--quick", action="store_true",
                   help="a smaller data set and fewer epochs: a smoke run for tests")
    return p


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray,
             batch_size: int = 256) -> tuple:
    """(mean cross-entropy, accuracy) of `model` on (x, y), in eval mode without a graph."""
    model.eval()
    total_loss = 0.0
    correct = 0
    with fastconv.no_grad():
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            logits = model(fastconv.Tensor(xb))
            # Weighted by batch size so a short last batch does not skew the mean.
            total_loss += float(F.cross_entropy(logits, yb, reduction="sum").item())
            correct += int((logits.numpy().argmax(axis=1) == yb).sum())
    return total_loss / len(x), correct / len(x)


def fit(model: nn.Module, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
        y_test: np.ndarray, *, epochs: int, batch_size: int, lr: float, seed: int,
        progress: bool = True, desc: str = "train",
        scheduler: Optional[Callable[[optim.Optimizer, int], Any]] = None,
        augment: Optional[Callable[[np.ndarray, np.random.Generator], np.ndarray]] = None,
        ) -> History:
    """Train `model` with Adam and cross-entropy; evaluate on the test split every epoch.

    The batch order comes from its own generator seeded with `seed`, so a run is
    reproducible independently of how many random numbers model construction drew.
    `scheduler(optimizer, epochs)` may return an LR scheduler stepped once per epoch;
    `augment(batch, rng)` may return a randomly altered copy of each training batch.
    """
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    opt = optim.Adam(model.parameters(), lr=lr)
    sched = scheduler(opt, epochs) if scheduler is not None else None
    history = History()
    steps_per_epoch = -(-len(x_train) // batch_size)
    start_time = time.perf_counter()
    bar = tqdm(total=epochs * steps_per_epoch, desc=desc, unit="step", disable=not progress,
               leave=False)
    try:
        for _ in range(epochs):
            model.train()
            order = rng.permutation(len(x_train))
            loss_sum = 0.0
            correct = 0
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                xb, yb = x_train[idx], y_train[idx]
                if augment is not None:
                    xb = augment(xb, rng)
                opt.zero_grad()
                logits = model(fastconv.Tensor(xb))
                loss = F.cross_entropy(logits, yb)
                loss.backward()
                opt.step()
                loss_sum += float(loss.item()) * len(idx)
                correct += int((logits.numpy().argmax(axis=1) == yb).sum())
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if sched is not None:
                sched.step()
            history.train_loss.append(loss_sum / len(x_train))
            history.train_acc.append(correct / len(x_train))
            test_loss, test_acc = evaluate(model, x_test, y_test)
            history.test_loss.append(test_loss)
            history.test_acc.append(test_acc)
            bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}", test_acc=f"{test_acc:.3f}")
    finally:
        bar.close()
    history.seconds = time.perf_counter() - start_time
    return history


@contextlib.contextmanager
def figure(path: str, title: str, **subplots: Any) -> Iterator[Any]:
    """The axes of a new matplotlib figure (plt.subplots(**subplots)); on leaving the block
    the figure gets `title` and is saved as a PNG at `path`, and is always closed (many runs
    in one process, as in the tests, would otherwise warn)."""
    import matplotlib

    # Agg: the examples run headless (CI, ssh); an interactive backend would need a display.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(**subplots)
    try:
        yield axes
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def save_plot(history: History, path: str, title: str) -> None:
    """Loss and accuracy per epoch, train and test, side by side, as a PNG at `path`."""
    epochs = np.arange(1, len(history.train_loss) + 1)
    with figure(path, title, ncols=2, figsize=(10, 4)) as (ax_loss, ax_acc):
        ax_loss.plot(epochs, history.train_loss, marker="o", label="train")
        ax_loss.plot(epochs, history.test_loss, marker="o", label="test")
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("cross-entropy")
        ax_loss.set_title("loss")
        ax_loss.legend()
        ax_acc.plot(epochs, history.train_acc, marker="o", label="train")
        ax_acc.plot(epochs, history.test_acc, marker="o", label="test")
        ax_acc.set_xlabel("epoch")
        ax_acc.set_ylabel("accuracy")
        ax_acc.set_ylim(0.0, 1.02)
        ax_acc.set_title(f"accuracy (final test {history.test_acc[-1]:.3f})")
        ax_acc.legend(loc="lower right")


def split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> tuple:
    """A stratified shuffle split (x_train, x_test, y_train, y_test), fixed by `seed`."""
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)


def report(name: str, history: History, plot: str, echo: Callable[[str], None] = print) -> None:
    """The closing lines every example prints."""
    echo(f"{name}: final test accuracy {history.test_acc[-1]:.4f} "
         f"(train {history.train_acc[-1]:.4f}) after {len(history.test_acc)} epochs, "
         f"{history.seconds:.1f} s")
    if plot:
        echo(f"plot saved to {plot}")


def run(args: argparse.Namespace, name: str, model: nn.Module, data: Sequence[np.ndarray], *,
        batch_size: int, lr: float,
        scheduler: Optional[Callable[[optim.Optimizer, int], Any]] = None,
        augment: Optional[Callable[[np.ndarray, np.random.Generator], np.ndarray]] = None,
        ) -> float:
    """Train, plot and report; returns the final test accuracy."""
    x_train, x_test, y_train, y_test = data
    history = fit(model, x_train, y_train, x_test, y_test, epochs=args.epochs,
                  batch_size=batch_size, lr=lr, seed=args.seed, progress=not args.no_progress,
                  desc=name, scheduler=scheduler, augment=augment)
    if args.plot:
        save_plot(history, args.plot, f"{name}: {len(x_train)} train / {len(x_test)} test")
    report(name, history, args.plot)
    return history.test_acc[-1]
