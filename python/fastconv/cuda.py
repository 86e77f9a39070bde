"""Whether the CUDA backend can run here, and why not.

The CUDA kernels (fastconv._cuda) are not part of this build yet; GPU arrays are
refused with a RuntimeError that says so, and `fastconv.info()` reports the reason.
"""

from __future__ import annotations

from typing import Optional


def _unavailable_reason() -> Optional[str]:
    try:
        from . import _cuda  # type: ignore[attr-defined]  # noqa: F401
    except ImportError:
        from ._cpu import build_info

        status = build_info()["cuda_status"] or "fastconv._cuda was not built"
        return f"fastconv._cuda is not available: CUDA backend {status}"
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
