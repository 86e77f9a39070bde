"""The GPU tooling, checked where it can be without a GPU: tools/gpu_check.sh (syntax, step
selection, budget, logs) and tools/gpu_sanitize.py (its CPU dry run drives every case
through the same code the GPU run uses). The benchmark's GPU side is tested with the
benchmark (tests/test_bench.py)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

import fastconv

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "gpu_check.sh"
GPU = fastconv.cuda.is_available()


def _sanitize_module():
    """tools/gpu_sanitize.py as a module (registered first: its dataclasses look it up)."""
    if "gpu_sanitize" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_sanitize",
                                                      ROOT / "tools" / "gpu_sanitize.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_sanitize"] = module
        spec.loader.exec_module(module)
    return sys.modules["gpu_sanitize"]


def _env(**extra: str) -> dict:
    env = dict(os.environ)
    # The package as this test process imports it (source tree or installed).
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(fastconv.__file__).resolve().parent.parent)]
        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(PYTHON=sys.executable, **extra)
    return env


def _run_script(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env=_env(**env), timeout=120)


# ------------------------------------------------------------------------------------------
# tools/gpu_check.sh
# ------------------------------------------------------------------------------------------

def test_gpu_check_script_is_valid_bash() -> None:
    assert os.access(SCRIPT, os.X_OK)
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", "-S", "warning", str(SCRIPT)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_gpu_check_dry_run_runs_steps_in_order_with_offline_build(tmp_path: Path) -> None:
    result = _run_script("--dry-run", "bench", "test", "build", OUT=str(tmp_path),
                         GPU_CHECK_BUILD="pip")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    order = [out.index(f"[{name}]") for name in ("build", "test_cuda", "test_all", "bench")]
    assert order == sorted(order)
    assert "[env]" not in out and "[memcheck]" not in out
    assert "--no-build-isolation --no-deps --no-index" in out and "FASTCONV_CUDA=ON" in out
    assert f"--junitxml='{tmp_path}/junit_cuda.xml'" in out and "-m cuda" in out
    assert f"--json '{tmp_path}/bench_gpu.json'" in out


def test_gpu_check_builds_first_unless_told_not_to(tmp_path: Path) -> None:
    implied = _run_script("--dry-run", "sanitize", OUT=str(tmp_path))
    assert "[build]" in implied.stdout and "[memcheck]" in implied.stdout
    assert "--tool racecheck" in implied.stdout and "--only nms,pool_backward" in implied.stdout
    assert "--conv-paths gemm_large,direct" in implied.stdout
    assert "--error-exitcode 1" in implied.stdout
    skipped = _run_script("--dry-run", "--no-build", "sanitize", OUT=str(tmp_path))
    assert "[build]" not in skipped.stdout and "[synccheck]" in skipped.stdout
    fallback = _run_script("--dry-run", "build", OUT=str(tmp_path), GPU_CHECK_BUILD="dev")
    assert "tools/dev_build.sh" in fallback.stdout


def test_gpu_check_syncs_every_gpu_call_in_tests_and_sanitizers(tmp_path: Path) -> None:
    out = _run_script("--dry-run", "--no-build", "test", "sanitize", OUT=str(tmp_path)).stdout
    assert "export FASTCONV_CUDA_SYNC=1" in out and "-m cuda -x" in out
    env = _run_script("--dry-run", "env", OUT=str(tmp_path)).stdout
    assert "driver_version" in env and "580" in env


def test_gpu_check_rejects_unknown_steps(tmp_path: Path) -> None:
    result = _run_script("tset", OUT=str(tmp_path))
    assert result.returncode == 2
    assert "unknown step or flag 'tset'" in result.stderr and "Usage" in result.stderr


def test_gpu_check_out_of_budget_skips_and_fails(tmp_path: Path) -> None:
    result = _run_script("--no-build", "info", "bench", OUT=str(tmp_path / "out"),
                         GPU_CHECK_BUDGET="0", GPU_CHECK_LOGS=str(tmp_path / "logs"))
    assert result.returncode == 1
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert summary.count("SKIP") == 2 and "out of time budget" in summary
    assert "FAILED: info bench" in result.stdout


def test_gpu_check_records_a_real_check(tmp_path: Path) -> None:
    """`info` runs here for real: it passes only where the CUDA backend can run."""
    out, logs = tmp_path / "out", tmp_path / "logs"
    result = _run_script("--no-build", "info", OUT=str(out), GPU_CHECK_LOGS=str(logs),
                         GPU_CHECK_BUILD="pip")
    assert result.returncode == (0 if GPU else 1), result.stdout + result.stderr
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("PASS" if GPU else "FAIL") and "info.log" in summary
    log = (logs / "info.log").read_text()
    assert "cuda_available" in log and "exit" in log
    with tarfile.open(out / "logs.tar.gz") as tar:
        assert "./info.log" in tar.getnames()
    # The result files stay few: a remote runner may return only 8.
    assert len(list(out.iterdir())) <= 8
    assert result.stdout.rstrip().endswith("all checks passed" if GPU else "FAILED: info")


# ------------------------------------------------------------------------------------------
# tools/gpu_sanitize.py
# ------------------------------------------------------------------------------------------

def test_sanitize_driver_covers_every_gpu_op() -> None:
    sanitize = _sanitize_module()
    names = [c.name for c in sanitize.all_cases()]
    for op in ("conv_", "conv_backward_input_", "conv_backward_weight_", "im2col_", "col2im_",
               "max_pool_", "avg_pool_", "max_pool_backward_", "avg_pool_backward_",
               "box_iou_", "box_convert_", "nms_", "batched_nms_"):
        assert any(n.startswith(op) for n in names), op
    for suffix in ("1d", "2d", "3d", "depthwise", "f64"):
        assert any(n.startswith("conv_") and suffix in n for n in names), suffix
    racecheck = sanitize.select(sanitize.all_cases(), "nms,pool_backward")
    assert racecheck and {c.group for c in racecheck} == {"nms", "pool_backward"}
    # Every conv case runs on every CUDA path, the large tiles and direct kernels forced.
    for path in sanitize.CONV_PATHS:
        assert any(n.startswith("conv_2d") and n.endswith(f"@{path}") for n in names), path
    tiles = sanitize.select(sanitize.all_cases(), "conv,conv_backward", "gemm_large,direct")
    assert tiles and {c.conv_path for c in tiles} == {"gemm_large", "direct"}
    with pytest.raises(SystemExit, match="no such path"):
        sanitize.select(sanitize.all_cases(), None, "fastest")
    with pytest.raises(SystemExit, match="matches no group"):
        sanitize.select(sanitize.all_cases(), "nms,bogus")


def test_sanitize_driver_cpu_dry_run_passes(capsys: pytest.CaptureFixture) -> None:
    sanitize = _sanitize_module()
    assert sanitize.main(["--cpu-dry-run"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "match the CPU (CPU dry run)" in out


def test_sanitize_compare_catches_off_and_missing_results() -> None:
    sanitize = _sanitize_module()
    exact = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    magnitude = np.abs(exact) + 1
    near = exact + np.float32(2 * np.finfo(np.float32).eps)
    assert sanitize.compare(near, exact, magnitude, terms=4) == ""
    off = exact.copy()
    off[1, 2] += 1e-3
    assert "1 of 12 entries off, worst at flat 6" in sanitize.compare(off, exact, magnitude, 4)
    nan = exact.copy()
    nan[0, 0] = np.nan
    assert "entries off" in sanitize.compare(nan, exact, magnitude, 4)
    idx = np.arange(5)
    assert sanitize.compare(idx, idx, None, 1) == ""
    assert "differ" in sanitize.compare(idx[::-1].copy(), idx, None, 1)
    assert "expected int64(5,)" in sanitize.compare(idx[:4], idx, None, 1)


@pytest.mark.skipif(GPU, reason="a GPU is here: the driver runs instead of refusing")
def test_sanitize_driver_refuses_without_gpu(capsys: pytest.CaptureFixture) -> None:
    assert _sanitize_module().main(["--only", "nms"]) == 2
    assert "no GPU to check" in capsys.readouterr().err
