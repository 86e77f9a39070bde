"""What was built and what runs: `fastconv.info()`."""

from __future__ import annotations

import platform
from typing import Any, Dict

from . import _backend, cuda
from ._version import __version__


def _cuda_build_text() -> str:
    build = cuda.build_info()
    if not build:
        return "not built"
    runtime = build["cuda_runtime"]
    text = (f"CUDA {runtime // 1000}.{runtime % 1000 // 10} runtime (static), "
            f"sm_{build['architectures'].replace(',', ', sm_')}")
    devices = ", ".join(f"{d['name']} (sm {d['compute_capability']})" for d in build["devices"])
    return f"{text}; devices: {devices or 'none'}"


def _host_cache_text() -> str:
    stats = _backend.host_cache_stats()
    if stats["limit_bytes"] == 0:
        return "off (FASTCONV_HOST_CACHE_MB=0)"
    return (f"{stats['idle_bytes'] / 2**20:.1f} MiB idle in {stats['idle_blocks']} blocks, "
            f"limit {stats['limit_bytes'] / 2**20:.0f} MiB")


def info(as_dict: bool = False) -> "str | Dict[str, Any]":
    """Version, compiler, the CPU instruction-set path in use (avx512, avx2 or baseline),
    OpenMP threads, the host output cache (idle MiB kept / limit), the CUDA build (runtime version, target architectures, devices) and
    whether GPU kernels can run (and why not).

    Returns a printable multi-line string, or the dict behind it with `as_dict=True`.
    """
    build = _backend.cpu_build_info()
    details: Dict[str, Any] = {
        "version": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "compiler": build["compiler"],
        "cpu_path": build["cpu_path"],
        "threads": build["max_threads"],
        "openmp": build["openmp"],
        "host_cache": _host_cache_text(),
        "cuda_build": _cuda_build_text(),
        "cuda_available": cuda.is_available(),
        "cuda_reason": cuda.reason(),
    }
    if as_dict:
        return details
    return "\n".join(f"{key:>15}: {value}" for key, value in details.items())
