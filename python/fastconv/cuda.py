"""Whether the CUDA backend can run here, and why not.

GPU kernels need three things: the `fastconv._cuda` module (built when nvcc was found at
install time), CuPy (outputs and temporary memory come from its pool: `pip install
fastconv[gpu]`) and a CUDA device with a driver. The first missing one is the reason
reported by `reason()`, `fastconv.info()` and the RuntimeError of a GPU op.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Optional


@functools.lru_cache(maxsize=None)
def _unavailable_reason() -> Optional[str]:
    try:
        from . import _cuda  # type: ignore[attr-defined]
    except ImportError as error:
        from ._cpu import build_info

        status = build_info()["cuda_status"] or f"import failed ({error})"
        return f"fastconv._cuda is not available: CUDA backend {status}"
    count, why = _cuda.device_status()
    if count == 0:
        return f"no usable CUDA device: {why}"
    try:
        import cupy  # noqa: F401
    except ImportError:
        return "CuPy is not installed (pip install 'fastconv[gpu]')"
    return None


def is_available() -> bool:
    """True when fastconv's CUDA kernels can run on this machine."""
    return _unavailable_reason() is None


def reason() -> str:
    """Why GPU kernels cannot run here ('' when they can)."""
    return _unavailable_reason() or ""


def require(op: str) -> None:
    """Raise RuntimeError (with the reason) if `op` was asked to run on the GPU here."""
    why = _unavailable_reason()
    if why is not None:
        raise RuntimeError(f"{op}: got a GPU array, but {why}")


def build_info() -> Dict[str, Any]:
    """The CUDA build (runtime version, architectures) and devices; {} without `_cuda`."""
    try:
        from . import _cuda  # type: ignore[attr-defined]
    except ImportError:
        return {}
    return dict(_cuda.build_info())
