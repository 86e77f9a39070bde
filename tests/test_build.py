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
    assert details["cuda_available"] is False
    assert "fastconv._cuda" in details["cuda_reason"]
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


def test_cuda_is_reported_unavailable_without_the_backend() -> None:
    assert fastconv.cuda.is_available() is False
    with pytest.raises(RuntimeError, match="conv: got a GPU array"):
        fastconv.cuda.require("conv")
