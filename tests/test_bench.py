"""Smoke test of the benchmark tool (`python -m fastconv bench`) on tiny shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastconv import _cpu, bench, bench_cases
from fastconv.__main__ import main

FIELDS = {"op", "case", "shape", "unit", "fastconv_ms", "throughput", "roof_pct", "numpy_ms",
          "speedup_numpy", "torch_ms", "speedup_torch", "max_err", "mismatches", "note"}


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


def test_fma_peak_probe_reports_a_positive_rate_and_rejects_bad_durations() -> None:
    assert _cpu.measure_fma_peak(0.02) > 0
    with pytest.raises(ValueError, match="seconds"):
        _cpu.measure_fma_peak(-1.0)


def test_torch_geomean_covers_only_conv_forward_cases_timed_by_both() -> None:
    rows = [bench.Result("conv", "a", "", "GFLOP/s", fastconv_ms=1.0, torch_ms=2.0),
            bench.Result("conv", "b", "", "GFLOP/s", fastconv_ms=4.0, torch_ms=2.0),
            bench.Result("conv", "c", "", "GFLOP/s", fastconv_ms=3.0),
            bench.Result("max_pool", "d", "", "GB/s", fastconv_ms=9.0, torch_ms=1.0)]
    assert bench.torch_geomean(rows) == pytest.approx(1.0)
    assert bench.torch_geomean(rows[2:3]) is None


def test_unavailable_op_is_reported_not_raised() -> None:
    def setup(rng: np.random.Generator) -> bench_cases.Problem:
        def missing(x: np.ndarray) -> np.ndarray:
            raise NotImplementedError

        return bench_cases.Problem((np.ones(3),), missing, missing, None, 1.0, "GB/s")

    case = bench_cases.Case("box_convert", "missing", "3", frozenset({"smoke"}), setup)
    row = bench.run_case(case, "smoke", None)
    assert row.fastconv_ms is None and row.numpy_ms is None and row.max_err is None
    assert "n/a" in bench.format_table(bench.header("smoke", None, False), [row])


def test_compare_reports_relative_error_and_index_mismatches() -> None:
    ref = (np.array([2.0, -4.0]), np.array([0, 1, 2]))
    err, mismatches = bench.compare((np.array([2.0, -3.0]), np.array([0, 2])), ref)
    assert err == 0.25 and mismatches == 2  # one differing index, one missing


def test_failing_op_is_reported_not_raised() -> None:
    def setup(rng: np.random.Generator) -> bench_cases.Problem:
        def broken(x: np.ndarray) -> np.ndarray:
            raise ValueError("bad geometry")

        return bench_cases.Problem((np.ones(3),), broken, np.negative, None, 1.0, "GB/s")

    case = bench_cases.Case("box_convert", "broken", "3", frozenset({"smoke"}), setup)
    row = bench.run_case(case, "smoke", None)
    assert row.fastconv_ms is None and "bad geometry" in row.note
    table = bench.format_table(bench.header("smoke", None, False), [row])
    assert "FAILED" in table and "bad geometry" in table
