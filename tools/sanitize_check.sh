#!/usr/bin/env bash
# The C++ module under AddressSanitizer + UndefinedBehaviorSanitizer: builds _cpu with
# FASTCONV_SANITIZE (at -O1, -g1), stages it beside a copy of the Python sources and runs
# tests against it with the sanitizer runtimes preloaded (the Python interpreter itself is
# not instrumented). Any report aborts the run with a non-zero status.
#   tools/sanitize_check.sh                     # CI: baseline SIMD build, representative subset
#   tools/sanitize_check.sh --all-isas tests/   # by hand: every SIMD build, the whole suite
# By default only the baseline x86-64 SIMD kernels are built (FASTCONV_BASELINE_ONLY), which
# keeps the build near 2.5 minutes on two cores; --all-isas builds and runs the AVX-512 (or
# AVX2) kernels this processor selects as well. Extra arguments go to pytest.
# Needs g++ with libasan and libubsan, cmake and ninja.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
SANITIZE=${FASTCONV_SANITIZE:-address,undefined}
baseline_only=ON
build=build/sanitize-baseline
if [ "${1:-}" = "--all-isas" ]; then
  baseline_only=OFF
  build=build/sanitize
  shift
fi
stage=$build/stage
mkdir -p "$build"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-g1 -DFASTCONV_CUDA=OFF \
  -DFASTCONV_SANITIZE="$SANITIZE" -DFASTCONV_BASELINE_ONLY=$baseline_only \
  -DPython_EXECUTABLE="$(command -v "$PY")" \
  -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" > "$build.configure.log" 2>&1 \
  || { cat "$build.configure.log"; exit 1; }
cmake --build "$build"
rm -rf "$stage"
mkdir -p "$stage"
cp -r python/fastconv "$stage/"
rm -f "$stage"/fastconv/_cpu*.so "$stage"/fastconv/_cuda*.so
cp "$build"/cpp/_cpu*.so "$stage/fastconv/"

runtimes=$(g++ -print-file-name=libasan.so):$(g++ -print-file-name=libubsan.so)
if [ $# -eq 0 ]; then
  set -- tests/test_errors.py tests/test_fuzz.py tests/test_geometry.py tests/test_host_cache.py \
    tests/test_concurrency.py tests/test_im2col.py tests/test_boxes.py tests/test_roi.py \
    tests/test_pool.py tests/test_conv_direct.py tests/test_conv.py -k "not layer_sized"
fi
# Leak checking is off: CPython and NumPy keep allocations alive until exit by design.
env LD_PRELOAD="$runtimes" PYTHONPATH="$stage" \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  FASTCONV_EXPECT_SANITIZED=1 \
  "$PY" -m pytest -q -p no:cacheprovider "$@"
