"""Coverage-guided fuzzing (atheris, libFuzzer) of the compiled entry points of fastconv._cpu,
called directly with arguments built from the fuzzer's bytes: arrays of any rank, dtype,
size and layout (non-contiguous, read-only, zero-size), geometry lists with edge values
(0, -1, 2**31, 2**62), NaN and infinite numbers, odd strings.

Every call must return, or raise ValueError/TypeError/MemoryError/OverflowError; any other
exception is reported as a finding (atheris stops with the input that caused it), a crash
or a call slower than libFuzzer's -timeout is one too. The parameter lists are read from the
bindings' signatures, so a new binding is fuzzed without an edit here. Coverage guidance
comes from the instrumented Python side (argument handling, NumPy); the C++ module is not
built with -fsanitize=fuzzer, so its branches guide nothing (a sanitizer build, see
tools/sanitize_check.sh, can be fuzzed by putting it on PYTHONPATH).

    tools/fuzz.sh 10            # ten minutes (corpus: tools/fuzz_corpus)
"""

from __future__ import annotations

import re
import sys
from typing import Any, Callable, List, Tuple

import atheris

with atheris.instrument_imports():
    import numpy as np

    from fastconv import _cpu

ACCEPTED = (ValueError, TypeError, MemoryError, OverflowError)
SKIP = {"build_info", "measure_fma_peak", "host_cache_release", "host_cache_stats",
        "host_empty"}
INTS = (0, 1, 2, 3, 5, -1, -2, 2**31 - 1, 2**31, 2**62, -(2**62))
FLOATS = (0.0, 0.5, 1.0, -1.0, 1e30, float("nan"), float("inf"), -float("inf"), 0.0625)
DTYPES = (np.float32, np.float64, np.float64, np.float32, np.int64, np.int32, np.bool_,
          np.float16)
STRINGS = ("xyxy", "xywh", "cxcywh", "gaussian", "linear", "", "nonsense")


# (text in a pybind annotation, argument kind), the first match wins.
KIND_MARKERS = (("ndarray", "array"), ("Sequence", "ints"), ("SupportsFloat", "float"),
                ("SupportsInt", "int"), ("bool", "bool"), ("str", "str"), ("dtype", "dtype"))


def _kinds(fn: Callable[..., Any]) -> List[Tuple[str, bool]]:
    """(kind, may be None) per parameter, from the first line of the pybind docstring."""
    first = (fn.__doc__ or "").splitlines()[0]
    params = first[first.index("(") + 1:first.rindex(") ->")]
    kinds = []
    for part in re.split(r", (?=\w+:)", params):
        annotation = part.split(":", 1)[1]
        optional = "None" in annotation
        kind = next((k for marker, k in KIND_MARKERS if marker in annotation), "object")
        kinds.append((kind, optional))
    return kinds


FUNCTIONS = [(name, getattr(_cpu, name), _kinds(getattr(_cpu, name)))
             for name in sorted(dir(_cpu))
             if not name.startswith("_") and name not in SKIP
             and callable(getattr(_cpu, name))]


def _pick(fdp: atheris.FuzzedDataProvider, values: Tuple[Any, ...]) -> Any:
    return values[fdp.ConsumeIntInRange(0, len(values) - 1)]


def _int(fdp: atheris.FuzzedDataProvider) -> int:
    return _pick(fdp, INTS) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(-3, 12)


def _array(fdp: atheris.FuzzedDataProvider) -> np.ndarray:
    rank = fdp.ConsumeIntInRange(0, 5)
    shape = tuple(fdp.ConsumeIntInRange(0, 7) for _ in range(rank))
    dtype = _pick(fdp, DTYPES)
    size = int(np.prod(shape, dtype=np.int64))
    values = np.array(fdp.ConsumeFloatListInRange(size, -8.0, 8.0) if size <= 4096 else
                      np.zeros(size), dtype=np.float64).reshape(shape)
    if fdp.ConsumeIntInRange(0, 9) == 0 and size:
        values.flat[fdp.ConsumeIntInRange(0, size - 1)] = _pick(fdp, FLOATS)
    with np.errstate(invalid="ignore", over="ignore"):
        a = values.astype(dtype)
    layout = fdp.ConsumeIntInRange(0, 7)
    if layout == 0 and rank:
        a = np.repeat(a, 2, axis=-1)[..., ::2]  # same values, non-contiguous
    elif layout == 1:
        a = a.copy()
        a.flags.writeable = False
    elif layout == 2 and rank >= 2:
        a = np.swapaxes(a, -1, -2)
    return a


def _value(fdp: atheris.FuzzedDataProvider, kind: str, optional: bool) -> Any:
    if optional and fdp.ConsumeIntInRange(0, 3) == 0:
        return None
    if fdp.ConsumeIntInRange(0, 40) == 0:  # the wrong kind altogether
        return _pick(fdp, (None, "x", 3, 1.5, [1, 2], object()))
    if kind == "array":
        return _array(fdp)
    if kind == "ints":
        return [_int(fdp) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    if kind == "float":
        return _pick(fdp, FLOATS) if fdp.ConsumeBool() else fdp.ConsumeRegularFloat()
    if kind == "int":
        return _int(fdp)
    if kind == "bool":
        return fdp.ConsumeBool()
    if kind == "str":
        return _pick(fdp, STRINGS)
    if kind == "dtype":
        return np.dtype(_pick(fdp, DTYPES))
    return None


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    name, fn, kinds = FUNCTIONS[fdp.ConsumeIntInRange(0, len(FUNCTIONS) - 1)]
    args = [_value(fdp, kind, optional) for kind, optional in kinds]
    try:
        fn(*args)
    except ACCEPTED:
        pass
    except Exception as error:
        shapes = [getattr(a, "shape", a) for a in args]
        raise RuntimeError(f"_cpu.{name}{tuple(shapes)} raised {type(error).__name__}: "
                           f"{error}") from error


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
