"""Saving and loading state dicts: `.npz`, `.safetensors`, and reading torch `.pth` files
(without torch, through fastconv.nn.torch_format).

A state dict here is a mapping of str keys to NumPy arrays, as `Module.state_dict()`
returns; the format follows the file's suffix.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Dict, Mapping, Union

import numpy as np

from .modules import Module
from .torch_format import is_zip, load_torch

__all__ = ["load", "save"]

PathLike = Union[str, "os.PathLike[str]"]

_ORDER_KEY = "fastconv.key_order"


def _suffix(path: PathLike) -> str:
    return Path(path).suffix.lower()


def save(state: Union[Module, Mapping[str, np.ndarray]], path: PathLike) -> None:
    """Write a module's state dict (or a mapping of names to arrays) to `path`.

    ".npz" uses np.savez, ".safetensors" the safetensors NumPy API; any other suffix
    raises ValueError (torch's .pth is read-only here: writing it would need torch).
    """
    if isinstance(state, Module):
        state = state.state_dict()
    # np.ascontiguousarray would turn 0-d arrays (num_batches_tracked) into 1-d ones.
    arrays = {str(key): np.asarray(value, order="C") for key, value in state.items()}
    suffix = _suffix(path)
    if suffix == ".npz":
        # np.savez would append ".npz" to a str path without it; a file object keeps `path`.
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    elif suffix == ".safetensors":
        from safetensors.numpy import save_file

        # safetensors stores tensors sorted by name; the metadata keeps the model's order.
        save_file(arrays, str(path), metadata={_ORDER_KEY: json.dumps(list(arrays))})
    else:
        raise ValueError(f"save: cannot tell the format of {str(path)!r}: use a .npz or "
                         f".safetensors suffix")


def load(path: PathLike) -> Dict[str, np.ndarray]:
    """Read a state dict: `.npz`, `.safetensors`, or a torch `.pth`/`.pt` file of tensors
    (torchvision weights, torch.save(model.state_dict())), the latter without torch through
    `fastconv.nn.load_torch` (which also reads whole checkpoints: nested dicts, numbers).
    Returns {key: NumPy array} in the file's order."""
    suffix = _suffix(path)
    if suffix == ".npz":
        return _load_npz(path)
    if suffix == ".safetensors":
        return _load_safetensors(path)
    if suffix in (".pth", ".pt"):
        return _state_dict(load_torch(path), path)
    raise ValueError(f"load: cannot tell the format of {str(path)!r}: expected .npz, "
                     f".safetensors, .pth or .pt")


def _damaged(path: PathLike, kind: str, error: Exception) -> ValueError:
    return ValueError(f"load: {str(path)!r} is not a readable {kind} file (damaged, truncated "
                      f"or another format): {type(error).__name__}: {error}")


def _load_npz(path: PathLike) -> Dict[str, np.ndarray]:
    # np.load falls back to unpickling anything that is not a zip or .npy file; check first,
    # so a damaged archive is reported as such (pickles stay refused: allow_pickle=False).
    with open(path, "rb") as file:  # ours to close, whatever np.load raises
        if not is_zip(file):
            raise ValueError(f"load: {str(path)!r} is not a .npz file (not a zip archive)")
        file.seek(0)
        return _read_npz(path, file)


def _read_npz(path: PathLike, file: "io.BufferedReader") -> Dict[str, np.ndarray]:
    try:
        with np.load(file, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, KeyError, OSError,
            NotImplementedError, RuntimeError) as error:  # RuntimeError: "encrypted member"
        if isinstance(error, ValueError) and "allow_pickle" in str(error):
            raise ValueError(f"load: {str(path)!r} holds object arrays (pickles), which "
                             f"are never loaded: store numeric arrays only") from None
        raise _damaged(path, ".npz", error) from None


def _load_safetensors(path: PathLike) -> Dict[str, np.ndarray]:
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    try:
        arrays = load_file(str(path))
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
        order = json.loads(metadata.get(_ORDER_KEY, "[]"))
    except (SafetensorError, json.JSONDecodeError, ValueError) as error:
        raise _damaged(path, ".safetensors", error) from None
    if not isinstance(order, list) or sorted(map(str, order)) != sorted(arrays):
        order = list(arrays)  # written by another tool: keep the file's order
    return {key: arrays[key] for key in order}


def _state_dict(obj: object, path: PathLike) -> Dict[str, np.ndarray]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"load: {str(path)!r} holds a {type(obj).__name__}, not a state "
                         f"dict of tensors")
    for key, value in obj.items():
        if not isinstance(value, np.ndarray):
            raise ValueError(f"load: {str(path)!r} entry {key!r} is a "
                             f"{type(value).__name__}, not a tensor (a checkpoint wrapping "
                             f"the state dict? read it with fastconv.nn.load_torch and pick "
                             f"the state dict)")
    return {str(key): value for key, value in obj.items()}
