"""What was built and what runs: info(), the CPU path switch, and the absent CUDA backend."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import fastconv


def test_info_reports_build_and_runtime() -> None:
    details = fastconv.info(as_dict=True)
    assert details["version"] == fastconv.__version__
    assert details["cpu_path"] in {"avx512", "avx2", "baseline"}
    assert details["threads"] >= 1
    assert details["compiler"]
    assert "limit 1024 MiB" in details["host_cache"]
    assert details["cuda_available"] is fastconv.cuda.is_available()
    assert bool(details["cuda_reason"]) is not fastconv.cuda.is_available()
    assert details["cuda_build"].startswith("CUDA ") or details["cuda_build"] == "not built"
    text = fastconv.info()
    assert "cpu_path" in text and details["cpu_path"] in text


@pytest.mark.parametrize("disabled,allowed", [("AVX512F", {"avx2", "baseline"}),
                                              ("avx512f, avx2", {"baseline"})])
def test_disable_cpu_features_forces_a_lower_path(disabled: str, allowed: set) -> None:
    env = dict(os.environ, FASTCONV_DISABLE_CPU_FEATURES=disabled)
    out = subprocess.run([sys.executable, "-c",
                          "import fastconv; print(fastconv.info(as_dict=True)['cpu_path'])"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out in allowed


def test_cuda_unavailable_raises_with_the_reason() -> None:
    if fastconv.cuda.is_available():
        fastconv.cuda.require("conv")  # no error where GPU kernels can run
        return
    with pytest.raises(RuntimeError, match="conv: got a GPU array, but .+"):
        fastconv.cuda.require("conv")


def test_cuda_module_imports_and_reports_without_a_gpu() -> None:
    """A CUDA build (CUDA runtime linked statically) imports anywhere and never raises when
    asked about devices; without one, info() says why it was not built."""
    build = fastconv.cuda.build_info()
    if not build:
        assert "fastconv._cuda" in fastconv.cuda.reason()
        return
    from fastconv import _cuda

    count, why = _cuda.device_status()
    assert count == len(build["devices"])
    assert (count == 0) == bool(why)
    assert build["architectures"]
    assert build["cuda_runtime"] >= 12000
