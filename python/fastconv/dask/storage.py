"""Dask arrays backed by one .npy file on disk, read and written block by block.

Each block opens its own memory map and closes it when done, so the process holds (in its
resident set) only the blocks in flight, never the whole mapped file, and every worker of
a cluster that shares the file system can read and write its blocks.
"""

from __future__ import annotations

import os
from typing import Any, Sequence, Tuple, Union

import dask.array as da
import numpy as np

Chunks = Union[int, str, Sequence[Any], dict]


class NpyFile:
    """A .npy file as an array-like: shape, dtype, and __getitem__ / __setitem__ of one
    block through a memory map opened for that call only."""

    def __init__(self, path: Union[str, os.PathLike]) -> None:
        self.path = os.fspath(path)
        header = np.load(self.path, mmap_mode="r")
        if header.flags.f_contiguous and not header.flags.c_contiguous:
            raise ValueError(f"from_npy: {self.path} is in Fortran order; only C order is "
                             "read block by block")
        self.shape: Tuple[int, ...] = header.shape
        self.dtype = header.dtype
        self.ndim = header.ndim
        del header

    def __dask_tokenize__(self) -> tuple:
        stat = os.stat(self.path)
        return (type(self).__name__, self.path, stat.st_mtime_ns, stat.st_size)

    def __getitem__(self, index: Any) -> np.ndarray:
        mapped = np.load(self.path, mmap_mode="r")
        return np.array(mapped[index])

    def __setitem__(self, index: Any, value: Any) -> None:
        mapped = np.load(self.path, mmap_mode="r+")
        mapped[index] = value
        mapped.flush()


def from_npy(path: Union[str, os.PathLike], chunks: Chunks = "auto") -> da.Array:
    """The array in the .npy file at `path` as a Dask array with `chunks` (as
    dask.array.from_array takes them); each block is read when computed."""
    source = NpyFile(path)
    return da.from_array(source, chunks=chunks, lock=False, asarray=True,
                         meta=np.empty((0,) * source.ndim, source.dtype))


def to_npy(x: da.Array, path: Union[str, os.PathLike], compute: bool = True,
           **compute_kwargs: Any) -> Any:
    """Write the Dask array `x` (NumPy chunks) to a new .npy file at `path`, block by block
    and in parallel. The file is created at its full size first (sparse where the file
    system allows). With compute=False returns the Delayed write instead of running it;
    `compute_kwargs` (scheduler=..., num_workers=...) go to dask.array.store."""
    if not isinstance(x, da.Array):
        raise TypeError(f"to_npy: x must be a dask.array.Array, got {type(x).__name__}")
    created = np.lib.format.open_memmap(os.fspath(path), mode="w+", dtype=x.dtype,
                                        shape=x.shape)
    del created
    return da.store(x, NpyFile(path), lock=False, compute=compute, **compute_kwargs)
