"""A 1-D ConvNet on synthetic EKG-like signals: `python -m fastconv train-1d`.

Each sample is 5.12 s of a single-lead "EKG" at 100 Hz (512 samples): beats made of a P
wave, a QRS complex and a T wave, with random amplitude, baseline wander and noise. Four
classes, by rhythm:

0 normal       regular, 60-95 beats per minute
1 bradycardia  regular, 35-52 bpm
2 tachycardia  regular, 110-160 bpm
3 irregular    60-95 bpm on average but beat-to-beat intervals jitter by up to +-35%,
               the P wave is missing and 4-9 Hz "f waves" ripple the baseline (as in
               atrial fibrillation)

Rate classes need the network to count QRS spikes; the irregular class shows in neighbouring intervals
and in the baseline between beats, which is why the ConvNet keeps position (`length` given: flatten,
not a global pool) before its classifier.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

import fastconv
from fastconv import models, nn, optim

from . import _common

CLASSES = ("normal", "bradycardia", "tachycardia", "irregular")
RATE = 100.0      # samples per second
LENGTH = 512      # samples per signal
TEST_FRACTION = 0.25
# (low, high) beats per minute of each class.
BPM = {0: (60.0, 95.0), 1: (35.0, 52.0), 2: (110.0, 160.0), 3: (60.0, 95.0)}


def _beat(t: np.ndarray, p_wave: bool, scale: float) -> np.ndarray:
    """One PQRST complex centred (R peak) at t = 0 seconds, as Gaussian bumps."""

    def bump(center: float, width: float, height: float) -> np.ndarray:
        return height * np.exp(-0.5 * ((t - center) / width) ** 2)

    wave = (bump(-0.025, 0.010, -0.15) + bump(0.0, 0.012, 1.0) + bump(0.03, 0.012, -0.25)
            + bump(0.25, 0.045, 0.30))
    if p_wave:
        wave = wave + bump(-0.17, 0.025, 0.15)
    return scale * wave


def make_signals(n: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """(signals (n, 1, LENGTH) float32, labels (n,) int64), balanced over CLASSES."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    rng.shuffle(labels)
    t = np.arange(LENGTH) / RATE
    signals = np.empty((n, 1, LENGTH), np.float32)
    for i, label in enumerate(labels):
        period = 60.0 / rng.uniform(*BPM[int(label)])
        # Beats start before the window so the first visible interval is as regular as
        # the rest (no artificial "first beat at 0").
        beat_times = []
        time = -rng.uniform(0.0, period)
        while time < t[-1] + 0.5:
            beat_times.append(time)
            jitter = rng.uniform(-0.35, 0.35) if label == 3 else rng.normal(0.0, 0.02)
            time += period * (1.0 + jitter)
        scale = rng.uniform(0.6, 1.4)
        x = np.zeros(LENGTH)
        for beat_time in beat_times:
            x += _beat(t - beat_time, p_wave=label != 3, scale=scale)
        if label == 3:
            # Fibrillatory "f waves": the atria quiver at 4-9 Hz instead of beating.
            x += rng.uniform(0.06, 0.15) * np.sin(2 * np.pi * rng.uniform(4.0, 9.0) * t
                                                  + rng.uniform(0, 2 * np.pi))
        wander = rng.uniform(0.0, 0.3) * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t
                                                + rng.uniform(0, 2 * np.pi))
        x += wander + rng.normal(0.0, rng.uniform(0.02, 0.08), LENGTH)
        signals[i, 0] = x
    return signals, labels.astype(np.int64)


def convnet1d(num_classes: int = len(CLASSES)) -> nn.Module:
    """`fastconv.models.convnet1d` sized for (N, 1, LENGTH) signals; light dropout, since
    the synthetic set is small and clean enough that 0.5 only slows learning."""
    return models.convnet1d(in_channels=1, num_classes=num_classes, length=LENGTH,
                            dropout=0.2)


def main(argv: Optional[Sequence[str]] = None) -> float:
    """Train the 1-D ConvNet on synthetic EKG rhythms with the flags in `argv`; returns the
    final test accuracy."""
    args = _common.parser("python -m fastconv train-1d",
                          "Classify synthetic EKG-like rhythms (normal, bradycardia, "
                          "tachycardia, irregular) with a small 1-D ConvNet.",
                          epochs=8, plot="ekg_rhythms.png").parse_args(argv)
    if args.quick:
        args.epochs = min(args.epochs, 5)
    fastconv.manual_seed(args.seed)
    signals, labels = make_signals(1000 if args.quick else 1200, seed=args.seed)
    data = _common.split(signals, labels, TEST_FRACTION, args.seed)
    model = convnet1d()
    return _common.run(args, "1-D ConvNet EKG", model, data, batch_size=32, lr=3e-3,
                       scheduler=lambda opt, n: optim.CosineAnnealingLR(opt, T_max=n))


if __name__ == "__main__":
    main()
