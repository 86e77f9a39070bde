"""Smoke test of the benchmark tool (`python -m fastconv bench`) on tiny shapes."""

from __future__ import annotations

import json

import numpy as np

from fastconv import bench, bench_cases
from fastconv.__main__ import main

FIELDS = {"op", "case", "shape", "unit", "fastconv_ms", "throughput", "numpy_ms",
          "speedup_numpy", "torch_ms", "speedup_torch", "max_err", "mismatches", "note"}


def test_cli_smoke_writes_table_and_json(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--smoke", "--op", "conv", "col2im", "--json", str(out),
                 "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "fastconv ms" in table and "x numpy" in table and "max err" in table
    data = json.loads(out.read_text())
    assert {"cpu", "cores", "cpu_path", "threads", "numpy", "torch"} <= set(data["header"])
    rows = data["results"]
    assert [r["op"] for r in rows] == ["conv", "col2im"]
    for row in rows:
        assert FIELDS <= set(row)
        assert row["fastconv_ms"] > 0 and row["numpy_ms"] > 0 and row["throughput"] > 0
        assert row["max_err"] < 1e-5


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
