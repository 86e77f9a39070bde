"""The benchmark tool (`python -m fastconv bench`, fastconv.bench) on tiny shapes: the table
and JSON, the checks that flag wrong results, the case tables of both devices, the `--gpu`
flag where no GPU can run, and the pytest-benchmark files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import _cpu
from fastconv.bench import cases as bench_cases
from fastconv.bench import report, run, run_case
from fastconv.bench.timing import open_device
from fastconv.cli import main, parser

ROOT = Path(__file__).resolve().parent.parent
GPU = fastconv.cuda.is_available()
FIELDS = {"op", "case", "shape", "unit", "fastconv_ms", "throughput", "roof_pct", "numpy_ms",
          "speedup_numpy", "torch_ms", "speedup_torch", "max_err", "mismatches", "note"}


def _env(**extra: str) -> dict:
    env = dict(os.environ)
    # The package as this test process imports it (source tree or installed).
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(fastconv.__file__).resolve().parent.parent)]
        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(extra)
    return env


def test_cli_smoke_writes_table_and_json(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--smoke", "--op", "conv", "col2im", "--json", str(out),
                 "--no-progress"]) == 0
    table = capsys.readouterr().out
    for title in ("fastconv ms", "GFLOP/s", "% peak", "GB/s", "% copy bw", "x numpy", "max err",
                  "FMA peak", "copy bandwidth", "geometric mean"):
        assert title in table
    data = json.loads(out.read_text())
    head = data["header"]
    assert {"cpu", "cores", "cpu_path", "threads", "numpy", "torch"} <= set(head)
    assert head["fma_peak_gflops"] > 0 and head["copy_gbps"] > 0
    rows = data["results"]
    assert [r["op"] for r in rows] == ["conv", "col2im"]
    for row in rows:
        assert FIELDS <= set(row)
        assert row["fastconv_ms"] > 0 and row["numpy_ms"] > 0 and row["throughput"] > 0
        assert row["max_err"] < 1e-5
    conv, col2im = rows
    assert conv["unit"] == "GFLOP/s" and col2im["unit"] == "GB/s"
    assert conv["roof_pct"] == pytest.approx(100 * conv["throughput"] / head["fma_peak_gflops"])
    assert col2im["roof_pct"] == pytest.approx(100 * col2im["throughput"] / head["copy_gbps"])


def test_smoke_run_covers_every_op_and_checks_torch_too(tmp_path: Path) -> None:
    """Every op through the same code the GPU run uses, on the CPU; torch ran on the very
    same memory and agrees with the reference too."""
    lines: list = []
    path = tmp_path / "bench.json"
    head, results = run("smoke", progress=False, json_path=str(path), echo=lines.append)
    assert {r.op for r in results} == set(bench_cases.OPS)
    for r in results:
        assert not r.bad and r.fastconv_ms and r.fastconv_ms > 0, r
        assert r.max_err is not None or r.mismatches == 0, r
        if r.op.startswith(("conv", "im2col", "col2im", "max_pool", "avg_pool")):
            assert r.torch_ms and r.speedup_torch and r.torch_err is not None, r
            assert r.torch_err < 1e-5, r
    assert f"all {len(bench_cases.OPS)} fastconv results match" in lines[0]
    data = json.loads(path.read_text())
    assert len(data["results"]) == len(results) and not any(r["bad"] for r in data["results"])


def test_fma_peak_probe_reports_a_positive_rate_and_rejects_bad_durations() -> None:
    assert _cpu.measure_fma_peak(0.02) > 0
    with pytest.raises(ValueError, match="seconds"):
        _cpu.measure_fma_peak(-1.0)


def test_torch_geomean_covers_only_conv_forward_cases_timed_by_both() -> None:
    rows = [report.Result("conv", "a", "", "GFLOP/s", fastconv_ms=1.0, torch_ms=2.0),
            report.Result("conv", "b", "", "GFLOP/s", fastconv_ms=4.0, torch_ms=2.0),
            report.Result("conv", "c", "", "GFLOP/s", fastconv_ms=3.0),
            report.Result("max_pool", "d", "", "GB/s", fastconv_ms=9.0, torch_ms=1.0)]
    assert report.torch_geomean(rows) == pytest.approx(1.0)
    assert report.torch_geomean(rows[2:3]) is None


@pytest.fixture(scope="module")
def cpu_device():
    return open_device("cpu", "smoke", use_torch=False)


def _head(device) -> dict:
    from fastconv.bench.runner import header

    return header(device, "smoke")


def test_unavailable_op_is_reported_not_raised(cpu_device) -> None:
    def setup(rng: np.random.Generator) -> bench_cases.Problem:
        def missing(x: np.ndarray) -> np.ndarray:
            raise NotImplementedError

        return bench_cases.Problem((np.ones(3),), missing, missing, None, 1.0, "byte")

    case = bench_cases.Case("box_convert", "missing", "3", "cpu", frozenset({"smoke"}), setup)
    row = run_case(cpu_device, case)
    assert row.fastconv_ms is None and row.numpy_ms is None and row.max_err is None
    assert "n/a" in report.format_table(_head(cpu_device), [row])


def test_compare_reports_relative_error_and_index_mismatches() -> None:
    ref = (np.array([2.0, -4.0]), np.array([0, 1, 2]))
    err, mismatches = report.compare((np.array([2.0, -3.0]), np.array([0, 2])), ref)
    assert err == 0.25 and mismatches == 2  # one differing index, one missing
    assert report.compare([np.array([np.nan])], [np.array([1.0])])[0] == float("inf")


def test_failing_op_is_reported_not_raised(cpu_device) -> None:
    def setup(rng: np.random.Generator) -> bench_cases.Problem:
        def broken(x: np.ndarray) -> np.ndarray:
            raise ValueError("bad geometry")

        return bench_cases.Problem((np.ones(3),), broken, np.negative, None, 1.0, "byte")

    case = bench_cases.Case("box_convert", "broken", "3", "cpu", frozenset({"smoke"}), setup)
    row = run_case(cpu_device, case)
    assert row.fastconv_ms is None and "bad geometry" in row.note and row.bad
    table = report.format_table(_head(cpu_device), [row])
    assert "FAILED" in table and "bad geometry" in table and "BAD" in table


def test_wrong_results_are_flagged() -> None:
    ok = report.Result("conv", "c", "s", dtype="float32", max_err=2e-6)
    assert not ok.bad
    assert report.Result("conv", "c", "s", dtype="float32", max_err=1e-3).bad
    assert report.Result("conv", "c", "s", dtype="float64", max_err=1e-9).bad
    assert report.Result("conv", "c", "s", max_err=float("nan")).bad
    assert report.Result("nms", "c", "s", mismatches=1).bad
    assert report.Result("nms", "c", "s", note="fastconv failed: TypeError: x").bad


def test_nms_differences_tell_rounding_from_errors() -> None:
    # Box 1 overlaps box 0 at IoU exactly 0.5 (a rounding coin flip at threshold 0.5);
    # box 2 overlaps box 1 heavily (knock-on); box 3 stands alone.
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 4.9], [50, 50, 60, 60]],
                     np.float32)
    ref = np.array([0, 2, 3])
    assert report.nms_differences(ref, ref, boxes, None, 0.5) == (0, 0)
    assert report.nms_differences(np.array([0, 1, 3]), ref, boxes, None, 0.5) == (2, 2)
    assert report.nms_differences(np.array([0, 2]), ref, boxes, None, 0.5) == (1, 0)
    assert report.nms_differences(np.array([0, 3, 2]), ref, boxes, None, 0.5) == (2, 0)
    # Another label: the near-threshold box 0 no longer explains box 1.
    labels = np.array([0, 1, 1, 0])
    assert report.nms_differences(np.array([0, 1, 3]), ref, boxes, labels, 0.5)[1] == 0
    row = report.Result("nms", "c", "s", mismatches=2, explained=2)
    assert not row.bad and report.Result("nms", "c", "s", mismatches=2, explained=1).bad


def test_cli_gpu_flag_parses() -> None:
    args = parser().parse_args(["bench", "--gpu", "--quick", "--op", "nms", "conv",
                                "--json", "out.json"])
    assert args.gpu and args.quick and args.op == ["nms", "conv"] and args.json == "out.json"
    assert not parser().parse_args(["bench"]).gpu


def test_cli_gpu_and_models_do_not_combine(capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "--gpu", "--models"]) == 2
    assert "--gpu and --models do not combine" in capsys.readouterr().err


@pytest.mark.skipif(GPU, reason="a GPU is here: the benchmark runs instead of refusing")
def test_bench_gpu_refuses_clearly_without_gpu() -> None:
    result = subprocess.run([sys.executable, "-m", "fastconv", "bench", "--gpu", "--smoke"],
                            capture_output=True, text=True, env=_env(), timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("python -m fastconv bench --gpu: cannot run here: ")
    assert fastconv.cuda.reason() in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_gpu_cases_cover_the_requested_layers() -> None:
    full = {(c.op, c.name): c for c in bench_cases.cases("full", device="cuda")}
    for layer in ("lenet5_c1", "alexnet_conv1", "vgg16_conv5", "resnet50_stem",
                  "resnet50_3x3", "resnet_3x3_128", "resnet50_3x3_256", "resnet50_3x3_512",
                  "resnet50_1x1", "inception_5x5", "depthwise_3x3", "conv3d_3x3x3"):
        assert ("conv", f"{layer}_b1") in full and ("conv", f"{layer}_b32") in full
    assert ("conv", "resnet50_3x3_f64") in full
    assert full[("conv", "resnet50_3x3_f64")].shape.startswith("32x64x56x56")
    assert ("conv_backward_input", "resnet50_3x3") in full
    assert ("conv_backward_weight", "resnet50_3x3") in full
    for op in ("max_pool", "avg_pool", "max_pool_backward", "avg_pool_backward"):
        assert full[(op, "resnet_3x3s2")].shape.startswith("32x64x112x112")
    assert ("box_iou", "4k_x_4k") in full
    assert {n for (op, n) in full if op == "nms"} == {"1k", "10k", "100k"}
    assert {n for (op, n) in full if op == "batched_nms"} == {"10k_80cls", "50k_1000cls"}
    assert [c.op for c in bench_cases.cases("full", ["nms"], "cuda")] == ["nms"] * 3
    assert all(c.device == "cuda" for c in full.values())
    with pytest.raises(ValueError, match="unknown op"):
        bench_cases.cases("full", ["bogus"], "cuda")


def test_cpu_cases_keep_their_layers() -> None:
    quick = {(c.op, c.name): c for c in bench_cases.cases("quick")}
    assert quick[("conv", "resnet50_3x3")].shape.startswith("1x64x56x56")
    assert ("conv_backward_input", "lenet5_c1") in quick
    assert ("conv_backward_input", "vgg16_conv5") not in quick
    full = {(c.op, c.name): c for c in bench_cases.cases("full")}
    assert full[("conv_backward_weight", "vgg16_conv5")].shape.startswith("8x512x14x14")
    assert ("conv", "resnet50_3x3_256") not in full  # a GPU-only layer


def test_pytest_benchmark_files_collect_both_devices() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "benchmarks/"],
        capture_output=True, text=True, cwd=ROOT, env=_env(FASTCONV_BENCH_MODE="smoke"),
        timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bench_ops.py::test_op[conv-smoke_2d-cpu-fastconv]" in result.stdout
    assert "bench_ops.py::test_op[conv-smoke_2d-cuda-torch]" in result.stdout
    assert "bench_ops.py::test_op[nms-smoke-cuda-fastconv]" in result.stdout
    assert "bench_ops.py::test_op[roi_align-smoke-cpu-numpy]" in result.stdout
