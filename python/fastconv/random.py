"""The one random-number generator behind parameter initialization (and dropout masks).

A single module-level NumPy Generator, so `fastconv.manual_seed(seed)` makes model
construction reproducible the way `torch.manual_seed` does.
"""

from __future__ import annotations

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Reseed fastconv's generator; later initializations and masks repeat exactly."""
    global _generator
    _generator = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    """The current generator (re-read it after `manual_seed`: seeding replaces it)."""
    return _generator
