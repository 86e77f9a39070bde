"""The training benchmark (`python -m fastconv bench --train`, fastconv.bench.train) on
LeNet-5 with few steps: the table and JSON, the agreement check against torch in float64,
the memory children (the fastconv one never imports torch), and the flags that cannot
combine with --train."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

import fastconv  # noqa: E402
from fastconv.bench import step as train_step  # noqa: E402
from fastconv.bench import train  # noqa: E402
from fastconv.cli import main  # noqa: E402


def test_cli_quick_prints_the_table_and_writes_json(tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "train.json"
    monkeypatch.setitem(train.MODELS, "lenet5", train.Case((8, 1, 32, 32), 10, 2, 0.9))
    assert main(["bench", "--train", "--quick", "--json", str(out), "--no-progress"]) == 0
    table = capsys.readouterr().out
    for title in ("fastconv ms", "torch ms", "ratio", "target", "grad err fc/torch",
                  "weight err fc/torch", "step MiB fc/torch", "peak MiB fc/torch"):
        assert title in table
    row_line = table.strip().splitlines()[-1]
    assert row_line.startswith("lenet5") and "8x1x32x32" in row_line and "BAD" not in row_line
    data = json.loads(out.read_text())
    assert data["header"]["threads"] == int(fastconv.info(as_dict=True)["threads"])
    (row,) = data["results"]
    assert row["model"] == "lenet5" and row["reps"] == 10 and not row["bad"]
    assert row["fastconv_ms"] > 0 and row["torch_ms"] > 0
    assert row["ratio"] == pytest.approx(row["fastconv_ms"] / row["torch_ms"])
    # float32 against float64 after two steps: rounding-sized, in both frameworks.
    for key in ("fastconv_grad_err", "torch_grad_err", "fastconv_weight_err",
                "torch_weight_err"):
        assert 0 < row[key] < 1e-4, key
    for key in ("fastconv_step_mib", "torch_step_mib"):
        assert 0 < row[key] < row[key.replace("step", "peak")], key


def test_a_wrong_gradient_is_flagged(monkeypatch) -> None:
    """The check can fail: fastconv's cross-entropy scaled by 1.01 changes every gradient
    by 1%, far beyond rounding."""
    from fastconv.nn import functional

    cross_entropy = functional.cross_entropy
    monkeypatch.setattr(functional, "cross_entropy",
                        lambda logits, target: cross_entropy(logits, target) * 1.01)
    monkeypatch.setitem(train.MODELS, "lenet5", train.Case((8, 1, 32, 32), 10, 1, 0.9))
    (row,) = train.run(["lenet5"], reps=1, memory=False, progress=False, echo=lambda s: None)
    assert row.bad and row.fastconv_grad_err > 5e-3 and row.torch_grad_err < 1e-4
    assert row.fastconv_step_mib is None


def test_memory_children_import_only_their_framework(tmp_path) -> None:
    fastconv.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 1, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 4).astype(np.int64)
    state = fastconv.models.lenet5().state_dict()
    out = train.measure_memory("lenet5", state, x, y, threads=1, steps=2)
    assert out["fastconv"]["torch_imported"] is False
    assert out["torch"]["torch_imported"] is True
    for framework in train_step.FRAMEWORKS:
        mib = out[framework]
        assert 0 < mib["step_mib"] and mib["base_mib"] + mib["step_mib"] <= mib["peak_mib"]


def test_build_rejects_an_unknown_framework_and_model() -> None:
    with pytest.raises(ValueError, match="framework must be one of"):
        train_step.build("jax", "lenet5", {})
    with pytest.raises(ValueError, match="unknown model"):
        train.run(["lenet7"], memory=False, progress=False)


@pytest.mark.parametrize("flag", ["--gpu", "--no-torch"])
def test_cli_train_does_not_combine(flag, capsys) -> None:
    assert main(["bench", "--train", flag]) == 2
    assert "--train runs on the CPU against PyTorch" in capsys.readouterr().err
