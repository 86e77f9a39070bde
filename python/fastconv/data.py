"""Minibatches over in-memory data: `DataLoader`, the small cousin of
torch.utils.data.DataLoader for arrays (no workers, no collate functions)."""

from __future__ import annotations

import numbers
from typing import Any, Iterator, Tuple

import numpy as np

from ._backend import is_gpu


def _length(op: str, name: str, value: Any) -> int:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") \
            or not hasattr(value, "__getitem__"):
        raise TypeError(f"{op}: {name} must be an array or a sequence, got "
                        f"{type(value).__name__}")
    if getattr(value, "ndim", 1) == 0:
        raise ValueError(f"{op}: {name} must have a first (sample) dim, got a 0-d array")
    return len(value)


class DataLoader:
    """Batches of the samples of one or more equally long arrays (first dim = sample).

    DataLoader(data, batch_size=1, shuffle=False, *, seed=0, drop_last=False)

    `data` is one input or a tuple of inputs of one length. An input is an array (NumPy or
    CuPy; batched along its first dim) or a list or other sequence (say, one array of
    boxes per image, of different lengths; batched as a list of its items). Iterating
    yields one batch per step: a tuple with one batch per input when `data` is a tuple,
    else the batch itself. Batches are slices (views) when `shuffle` is False and
    fancy-indexed copies otherwise.

    `shuffle` draws a new permutation at each iteration (each epoch) from one NumPy
    generator seeded with `seed` when the loader is made, so the epochs of a run differ
    and two loaders with the same seed give the same batches. `drop_last` leaves out the
    last batch when it is short. `len(loader)` is the number of batches per epoch, as
    torch's.
    """

    def __init__(self, data: Any, batch_size: int = 1,
                 shuffle: bool = False, *, seed: int = 0, drop_last: bool = False) -> None:
        op = "DataLoader"
        self.single = not isinstance(data, tuple)
        parts: Tuple[Any, ...] = (data,) if self.single else data
        if not parts:
            raise ValueError(f"{op}: data is an empty tuple (give at least one array)")
        lengths = [_length(op, "data" if self.single else f"data[{i}]", d)
                   for i, d in enumerate(parts)]
        if len(set(lengths)) > 1:
            raise ValueError(f"{op}: the arrays of data must have one length (samples), "
                             f"got lengths {lengths}")
        for name, value in (("batch_size", batch_size), ("seed", seed)):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{op}: {name} must be an int, got {value!r}")
        if batch_size < 1:
            raise ValueError(f"{op}: batch_size must be >= 1, got {batch_size}")
        self.parts = parts
        self.size = lengths[0]
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.generator = np.random.default_rng(int(seed))

    def __len__(self) -> int:
        if self.drop_last:
            return self.size // self.batch_size
        return -(-self.size // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        order = self.generator.permutation(self.size) if self.shuffle else None
        for b in range(len(self)):
            start = b * self.batch_size
            stop = min(start + self.batch_size, self.size)
            index: Any = slice(start, stop) if order is None else order[start:stop]
            batch = tuple(self._take(part, index) for part in self.parts)
            yield batch[0] if self.single else batch

    @staticmethod
    def _take(part: Any, index: Any) -> Any:
        if isinstance(part, np.ndarray) or is_gpu(part):
            return part[index if isinstance(index, slice) else _index_for(part, index)]
        if isinstance(index, slice):
            return list(part[index])
        return [part[int(i)] for i in index]


def _index_for(part: Any, index: np.ndarray) -> Any:
    """`index` on `part`'s device (CuPy arrays take CuPy indices)."""
    if is_gpu(part):
        import cupy

        return cupy.asarray(index)
    return index
