"""The benchmark's results: one `Result` per case, the checks that fill its error columns,
and one table for every device."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

# Largest acceptable relative error of a float result against the float64 reference. A
# wrong index or a missed term gives O(1); honest rounding of a few thousand float32
# products gives ~1e-6 relative to the largest output.
ERR_LIMIT = {"float32": 1e-4, "float64": 1e-12}
# An IoU this close to the threshold may round to either side: float32 kernels that
# contract to FMA differently (CPU vs GPU) may then keep different boxes, both correctly.
NMS_ROUNDING = 1e-5


@dataclass
class Result:
    """One row of the table (times in milliseconds; None means n/a)."""

    op: str
    case: str
    shape: str
    unit: str = ""  # the throughput's unit: GFLOP/s, TFLOP/s or GB/s
    device: str = "cpu"
    dtype: str = "float32"
    fastconv_ms: Optional[float] = None
    throughput: Optional[float] = None
    roof_pct: Optional[float] = None  # throughput in % of the FMA peak or copy bandwidth
    numpy_ms: Optional[float] = None
    speedup_numpy: Optional[float] = None
    torch_ms: Optional[float] = None
    speedup_torch: Optional[float] = None  # torch ms / fastconv ms
    max_err: Optional[float] = None  # max|fastconv - ref| / max(1, max|ref|), ref in float64
    mismatches: Optional[int] = None  # index outputs (NMS, max-pool indices) that differ
    torch_err: Optional[float] = None
    torch_mismatches: Optional[int] = None
    # NMS on the GPU: kept-set differences all explained by an IoU within NMS_ROUNDING of
    # the threshold.
    explained: int = 0
    reps_fastconv: int = 0
    reps_numpy: int = 0
    reps_torch: int = 0
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.note.startswith(("fastconv failed", "setup failed", "reference failed"))

    @property
    def bad(self) -> bool:
        """fastconv failed, its result is off the reference, or it could not be checked."""
        if self.failed:
            return True
        limit = ERR_LIMIT.get(self.dtype, 1e-4)
        return bool((self.max_err is not None and not self.max_err <= limit)
                    or (self.mismatches or 0) > self.explained)


def parts(out: Any) -> List[Any]:
    """The arrays of one op's result (a tuple like (values, indices), or one array)."""
    return list(out) if isinstance(out, (tuple, list)) else [out]


def compare(got: Sequence[np.ndarray], ref: Sequence[np.ndarray]
            ) -> Tuple[Optional[float], Optional[int]]:
    """(relative max error over float parts, mismatch count over integer parts).

    Float parts: max|got - ref| / max(1, max|ref|); a shape mismatch or a NaN is an
    infinite error: the numbers cannot be trusted. Integer parts (indices): differing
    entries plus any difference in length.
    """
    err: Optional[float] = None
    mismatches: Optional[int] = None
    if len(got) != len(ref):
        return float("inf"), None
    for g, r in zip(got, ref):
        g, r = np.asarray(g), np.asarray(r)
        if r.dtype.kind == "f":
            if g.shape != r.shape:
                part = float("inf")
            elif r.size == 0:
                part = 0.0
            else:
                diff = np.abs(g.astype(np.float64) - r.astype(np.float64))
                part = float(np.max(diff)) / max(1.0, float(np.max(np.abs(r))))
                if np.isnan(part):
                    part = float("inf")
            err = part if err is None else max(err, part)
        else:
            g, r = g.ravel(), r.ravel()
            common = min(g.size, r.size)
            part = int(np.count_nonzero(g[:common] != r[:common])) + abs(g.size - r.size)
            mismatches = part if mismatches is None else mismatches + part
    return err, mismatches


def _iou64(boxes: np.ndarray, i: int, others: np.ndarray) -> np.ndarray:
    b = boxes.astype(np.float64)
    x1 = np.maximum(b[i, 0], b[others, 0])
    y1 = np.maximum(b[i, 1], b[others, 1])
    x2 = np.minimum(b[i, 2], b[others, 2])
    y2 = np.minimum(b[i, 3], b[others, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area[i] + area[others] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms_differences(got: np.ndarray, ref: np.ndarray, boxes: np.ndarray,
                    labels: Optional[np.ndarray], thr: float) -> Tuple[int, int]:
    """(differences, how many of them rounding explains) between two NMS results.

    Different kept sets: the differences are the symmetric difference; one is explained
    when the box has an IoU within NMS_ROUNDING of `thr` with a box kept on either side
    (a coin flip of rounding), or an IoU >= thr - NMS_ROUNDING with an explained box (the
    knock-on effect of that flip). Same sets: positions where the order differs, never
    explained (both sides sort by score, ties by index).
    """
    got, ref = np.asarray(got).ravel(), np.asarray(ref).ravel()
    diff = np.setxor1d(got, ref)
    if diff.size == 0:
        return int(np.count_nonzero(got != ref)) if got.size == ref.size else 1, 0
    kept = np.union1d(got, ref)
    explained: set = set()
    changed = True
    while changed:
        changed = False
        for j in diff:
            if j in explained:
                continue
            others = kept[kept != j]
            if labels is not None:
                others = others[labels[others] == labels[j]]
            iou = _iou64(boxes, int(j), others)
            near = np.abs(iou - thr) <= NMS_ROUNDING
            knock_on = np.isin(others, list(explained)) & (iou >= thr - NMS_ROUNDING)
            if near.any() or knock_on.any():
                explained.add(j)
                changed = True
    return int(diff.size), len(explained)


def torch_geomean(results: Sequence[Result], op: str = "conv") -> Optional[float]:
    """Geometric mean of fastconv ms / torch ms over the cases of `op` timed by both."""
    ratios = [r.fastconv_ms / r.torch_ms for r in results
              if r.op == op and r.fastconv_ms and r.torch_ms]
    if not ratios:
        return None
    return math.exp(sum(math.log(v) for v in ratios) / len(ratios))


def fmt_value(value: Optional[float], spec: str) -> str:
    """A table cell: the value in `spec`, or n/a."""
    return "n/a" if value is None else format(value, spec)


def error_cell(err: Optional[float], mismatches: Optional[int], failed: bool = False,
               explained: int = 0) -> str:
    """A max-error cell: relative error and index mismatches (and how many rounding
    explains)."""
    if failed:
        return "FAILED"
    cells = []
    if err is not None:
        cells.append(format(err, ".1e"))
    if mismatches is not None:
        cells.append(f"{mismatches} idx" + (f" ({explained} rounding)" if explained else ""))
    return ", ".join(cells) or "n/a"


def aligned_rows(titles: Sequence[str], rows: Sequence[Sequence[str]],
                 left: int) -> List[str]:
    """The title line, a rule and the rows, in columns as wide as their widest cell: the
    first `left` columns left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in list(rows) + [titles]) for i in range(len(titles))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(titles), line(["-" * w for w in widths])] + [line(row) for row in rows]


def format_table(head: Dict[str, Any], results: Sequence[Result]) -> str:
    """The header lines, the aligned results table (columns no row fills are left out),
    the conv geomean, the notes and the verdict line."""
    flop_unit = "TFLOP/s" if head.get("device_kind") == "cuda" else "GFLOP/s"
    lines = [
        f"fastconv {head['fastconv']} benchmark ({head['mode']}, {head['device_kind']}), "
        f"{head['date']}",
        f"device: {head['device']}",
    ]
    if head.get("device_kind") == "cuda":
        lines.append(f"fastconv {head.get('cuda_build')}; cupy {head.get('cupy')}; torch "
                     f"{head['torch']} (cuDNN {head.get('cudnn', 'n/a')}, TF32 off, "
                     f"cudnn.benchmark); torchvision {head.get('torchvision')}")
        lines.append(f"roof: device-to-device copy {fmt_value(head.get('copy_gbps'), '.0f')} "
                     "GB/s (read + write)")
    else:
        lines.append(f"fastconv cpu_path {head['cpu_path']}, {head['threads']} OpenMP threads; "
                     f"numpy {head['numpy']}; torch {head['torch']}"
                     + (f" with torch.set_num_threads({head['torch_threads']}) to match"
                        if head.get("torch_threads") is not None else ""))
        lines.append(f"roofs: float32 FMA peak {fmt_value(head.get('fma_peak_gflops'), '.0f')} "
                     f"GFLOP/s ({head['threads']} threads, {head['cpu_path']}); copy bandwidth "
                     f"{fmt_value(head.get('copy_gbps'), '.1f')} GB/s (read + write)")
    lines += [
        "times are medians; speed-up = baseline ms / fastconv ms; max err relative to the "
        "float64 reference (idx: index mismatches)",
        "",
    ]

    def rate(r: Result, unit: str) -> Tuple[Optional[str], Optional[str]]:
        if r.unit != unit or r.throughput is None:
            return None, None
        return format(r.throughput, ".2f"), fmt_value(r.roof_pct, ".0f")

    def speed(value: Optional[float], spec: str) -> Optional[str]:
        return None if value is None else format(value, spec)

    columns: List[Tuple[str, List[Optional[str]]]] = [
        ("fastconv ms", [speed(r.fastconv_ms, ".3f") for r in results]),
        (flop_unit, [rate(r, flop_unit)[0] for r in results]),
        ("% peak", [rate(r, flop_unit)[1] for r in results]),
        ("GB/s", [rate(r, "GB/s")[0] for r in results]),
        ("% copy bw", [rate(r, "GB/s")[1] for r in results]),
        ("numpy ms", [speed(r.numpy_ms, ".3f") for r in results]),
        ("x numpy", [speed(r.speedup_numpy, ".1f") for r in results]),
        ("torch ms", [speed(r.torch_ms, ".3f") for r in results]),
        ("x torch", [speed(r.speedup_torch, ".2f") for r in results]),
        ("max err", [error_cell(r.max_err, r.mismatches, r.failed, r.explained)
                     + (" BAD" if r.bad and not r.failed else "") for r in results]),
        ("torch err", [None if r.torch_err is None and r.torch_mismatches is None
                       else error_cell(r.torch_err, r.torch_mismatches) for r in results]),
    ]
    if head.get("fma_peak_gflops") is None:
        columns = [c for c in columns if c[0] != "% peak"]
    # A column no row fills says nothing (numpy on the GPU, GB/s in a conv-only run).
    shown = [(title, cells) for title, cells in columns
             if title in ("fastconv ms", "max err") or any(c is not None for c in cells)]
    titles = ["op", "case", "shape"] + [title for title, _ in shown]
    rows = [[r.op, r.case, r.shape] + [cells[i] if cells[i] is not None else
                                       ("" if title in (flop_unit, "% peak", "GB/s",
                                                        "% copy bw") else "n/a")
                                       for title, cells in shown]
            for i, r in enumerate(results)]
    lines.extend(aligned_rows(titles, rows, left=3))
    geomean = torch_geomean(results)
    if geomean is not None:
        count = sum(1 for r in results if r.op == "conv" and r.fastconv_ms and r.torch_ms)
        lines.append(f"conv forward vs torch: geometric mean of fastconv ms / torch ms = "
                     f"{geomean:.3f} over {count} cases ({1 / geomean:.2f}x)")
    notes = [f"{r.op}[{r.case}]: {r.note}" for r in results if r.note]
    if notes:
        lines += ["", "notes:"] + [f"  {n}" for n in notes]
    bad = [f"{r.op}[{r.case}]" for r in results if r.bad]
    lines.append("")
    lines.append(f"BAD (failed, or off the reference): {', '.join(bad)}" if bad
                 else f"all {len(results)} fastconv results match the reference")
    return "\n".join(lines)
