"""Whether the CUDA backend can run here, and why not.

GPU kernels need three things: the `fastconv._cuda` module (built when nvcc was found at
install time), CuPy (outputs and temporary memory come from its pool: `pip install
fastconv[gpu]`) and a CUDA device with a driver. The first missing one is the reason
reported by `reason()`, `fastconv.info()` and the RuntimeError of a GPU op.
"""

from __future__ import annotations

from typing import Any, Dict

from . import _backend


def is_available() -> bool:
    """True when fastconv's CUDA kernels can run on this machine."""
    return _backend.cuda_unavailable_reason() is None


def reason() -> str:
    """Why GPU kernels cannot run here ('' when they can)."""
    return _backend.cuda_unavailable_reason() or ""


def require(op: str) -> None:
    """Raise RuntimeError (with the reason) if `op` was asked to run on the GPU here."""
    _backend.require_cuda(op)


def build_info() -> Dict[str, Any]:
    """The CUDA build (runtime version, architectures) and devices; {} without `_cuda`."""
    return _backend.cuda_build_info()
