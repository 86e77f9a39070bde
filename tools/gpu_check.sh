#!/usr/bin/env bash
# gpu_check.sh: build fastconv with its CUDA backend on a GPU machine, run the CUDA tests,
# compute-sanitizer and the GPU benchmarks, and leave every log and result under $OUT.
#
# Usage (from anywhere; it works in the repository root):
#   tools/gpu_check.sh [-n|--dry-run] [--no-build] [STEP...]
# Steps, run in this order whatever order they are given in (default: all but initcheck):
#   env        nvidia-smi (and a driver of R580 or newer, which the static CUDA 13 runtime
#              needs), nvcc, compute-sanitizer, python/numpy/cupy/torch versions
#   build      FASTCONV_CUDA=ON pip install --no-build-isolation --no-deps --no-index -v .
#              (falls back to tools/dev_build.sh + PYTHONPATH=python when scikit-build-core
#              or pybind11 is missing; GPU_CHECK_BUILD=pip|dev forces one)
#   info       python -m fastconv info; fails unless fastconv.cuda.is_available()
#   test       FASTCONV_CUDA_SYNC=1 pytest -m cuda -x (junit to $OUT/junit_cuda.xml; fails if
#              any cuda test was skipped for want of a GPU), then the rest of the suite (-x -q, xdist when
#              present; without the CPU-only training examples and whole-model tests)
#   sanitize   compute-sanitizer memcheck over tools/gpu_sanitize.py (every GPU op on every
#              forced conv path, checked against the CPU), racecheck and synccheck over its
#              NMS, pool-backward and conv cases on the gemm_large and direct paths
#   initcheck  compute-sanitizer initcheck over every case (uninitialized device reads);
#              not in the default set
#   bench      python -m fastconv bench --gpu --json $OUT/bench_gpu.json (more flags, e.g.
#              --quick or --op nms, through GPU_CHECK_BENCH_ARGS)
# Steps after env need the package: unless --no-build, the build runs first whenever one of
# them is asked for (incremental when the build folder survives from an earlier call).
#
# Output ($OUT, default gpu_check_out in the repository root), at most 8 files so a remote runner that returns
# only a few files gets them all:
#   summary.txt       one line per check: PASS/FAIL/TIMEOUT/SKIP, seconds, log name
#   logs.tar.gz       every check's full log (repacked after each check)
#   junit_cuda.xml    junit_all.xml    bench_gpu.json    bench_gpu.txt
# The logs themselves go to $GPU_CHECK_LOGS (default: a fresh temporary folder, printed).
# stdout ends with the benchmark table, the tails of failed logs and the summary.
#
# Time: the device runner allows 10 minutes per command, so the whole run has a budget
# (GPU_CHECK_BUDGET seconds, default 540) and each check a timeout (GPU_CHECK_TIMEOUT_<NAME>,
# e.g. GPU_CHECK_TIMEOUT_BUILD=400); a check that would start with under 20 s left is
# skipped (and counts as a failure). A fresh machine's full build takes a few minutes: if
# the budget runs out, split the run, e.g. `tools/gpu_check.sh env build info test` then
# `tools/gpu_check.sh sanitize bench` on the same (still warm) machine.
# Nothing is fetched from the network (pip --no-index); exit status 0 only if every check
# passed.
set -uo pipefail

CALLER_DIR=$(pwd)
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$SELF")/.." || exit 2
ROOT=$(pwd)

ALL_STEPS=(env build info test sanitize initcheck bench)
DEFAULT_STEPS=(env build info test sanitize bench)

usage() {
  sed -n '2,/^set -uo/p' "$SELF" | sed '$d' | sed 's/^# \{0,1\}//'
}

DRY_RUN=0
NO_BUILD=0
REQUESTED=()
for arg in "$@"; do
  case "$arg" in
    -n|--dry-run) DRY_RUN=1 ;;
    --no-build) NO_BUILD=1 ;;
    -h|--help) usage; exit 0 ;;
    env|build|info|test|sanitize|initcheck|bench) REQUESTED+=("$arg") ;;
    *) echo "gpu_check.sh: unknown step or flag '$arg'" >&2; usage >&2; exit 2 ;;
  esac
done
[ ${#REQUESTED[@]} -eq 0 ] && REQUESTED=("${DEFAULT_STEPS[@]}")

wants() {  # wants STEP: was STEP asked for?
  local s
  for s in "${REQUESTED[@]}"; do [ "$s" = "$1" ] && return 0; done
  return 1
}
if [ "$NO_BUILD" = 0 ] && ! wants build; then
  for s in info test sanitize initcheck bench; do
    if wants "$s"; then REQUESTED+=(build); break; fi
  done
fi

# A relative OUT or GPU_CHECK_LOGS is taken from where the script was called.
OUT=${OUT:-$ROOT/gpu_check_out}
case $OUT in /*) ;; *) OUT="$CALLER_DIR/$OUT" ;; esac
case ${GPU_CHECK_LOGS:-/} in /*) ;; *) GPU_CHECK_LOGS="$CALLER_DIR/$GPU_CHECK_LOGS" ;; esac
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || { echo "cannot create OUT=$OUT" >&2; exit 2; }
export OUT
if [ "$DRY_RUN" = 1 ]; then
  LOGDIR=${GPU_CHECK_LOGS:-${TMPDIR:-/tmp}}
else
  LOGDIR=${GPU_CHECK_LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_logs.XXXXXX")}
fi
mkdir -p "$LOGDIR" && LOGDIR=$(cd "$LOGDIR" && pwd)
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

# The CUDA tools are often installed without being on the PATH.
for dir in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer; do
  [ -d "$dir" ] && case ":$PATH:" in *":$dir:"*) ;; *) PATH="$PATH:$dir" ;; esac
done
export PATH
# CuPy finds headers and NVRTC through CUDA_PATH (and warns when it cannot).
if [ -z "${CUDA_PATH:-}" ] && [ -d /usr/local/cuda ]; then export CUDA_PATH=/usr/local/cuda; fi
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
NPROC=$(nproc 2>/dev/null || echo 4)

BUDGET=${GPU_CHECK_BUDGET:-540}
START=$(date +%s)
DEADLINE=$((START + BUDGET))
FAILED=()

timeout_for() {  # timeout_for NAME DEFAULT: GPU_CHECK_TIMEOUT_<NAME> or DEFAULT
  local var
  var="GPU_CHECK_TIMEOUT_$(echo "$1" | tr '[:lower:]' '[:upper:]')"
  echo "${!var:-$2}"
}

pack_logs() {
  tar -czf "$OUT/logs.tar.gz.tmp" -C "$LOGDIR" . 2>/dev/null \
    && mv -f "$OUT/logs.tar.gz.tmp" "$OUT/logs.tar.gz"
}

record() {  # record NAME STATUS SECONDS DETAIL
  printf '%-8s %-10s %5ss  %s\n' "$2" "$1" "$3" "$4" >> "$SUMMARY"
  [ "$2" = PASS ] || FAILED+=("$1")
}

# check NAME DEFAULT_TIMEOUT COMMAND: run COMMAND (a bash string) with a timeout inside the
# remaining budget, its output in $LOGDIR/NAME.log; record the outcome.
check() {
  local name=$1 limit remaining cmd=$3 log="$LOGDIR/$1.log" started rc status
  limit=$(timeout_for "$name" "$2")
  if [ "$DRY_RUN" = 1 ]; then
    printf '[%s] timeout %ss:\n%s\n\n' "$name" "$limit" "$cmd"
    return 0
  fi
  remaining=$((DEADLINE - $(date +%s)))
  if [ "$remaining" -lt 20 ]; then
    echo "== [$name] skipped: ${remaining}s left of GPU_CHECK_BUDGET=${BUDGET}s" | tee "$log"
    record "$name" SKIP 0 "out of time budget (GPU_CHECK_BUDGET=${BUDGET}s)"
    pack_logs
    return 1
  fi
  [ "$limit" -gt $((remaining - 10)) ] && limit=$((remaining - 10))
  echo "== [$name] $(date -u +%H:%M:%S) timeout ${limit}s, log $name.log"
  { echo "== [$name] $(date -u) timeout ${limit}s"; echo "\$ $cmd"; echo; } > "$log"
  started=$(date +%s)
  # timeout puts the command in its own process group and signals all of it.
  timeout --kill-after=10 "$limit" bash -c "$cmd" >> "$log" 2>&1 < /dev/null
  rc=$?
  local took=$(($(date +%s) - started))
  case $rc in
    0) status=PASS ;;
    124|137) status=TIMEOUT ;;
    *) status=FAIL ;;
  esac
  echo "== [$name] exit $rc after ${took}s" >> "$log"
  echo "== [$name] $status (exit $rc, ${took}s)"
  record "$name" "$status" "$took" "$name.log (exit $rc)"
  pack_logs
  [ "$status" = PASS ]
}

# ---------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------

step_env() {
  # Every probe runs; a missing driver, compiler, sanitizer or Python package fails the step.
  check env 60 "
rc=0
uname -a; nproc; free -g
nvidia-smi || rc=1
# fastconv._cuda links the CUDA 13 runtime statically: it needs driver R580 or newer.
driver=\$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2> /dev/null | head -n 1)
if [ \"\${driver%%.*}\" -lt 580 ] 2> /dev/null; then
  echo \"driver \$driver is older than R580, which the CUDA 13 runtime of fastconv._cuda needs\"
  rc=1
fi
nvcc --version || rc=1
compute-sanitizer --version || rc=1
cmake --version || rc=1
ninja --version || rc=1
$PY - <<'PY' || rc=1
import importlib, platform, sys
print('python', platform.python_version(), sys.executable)
for name in ('numpy', 'cupy', 'torch', 'torchvision', 'scikit_build_core', 'pybind11',
             'pytest', 'xdist', 'hypothesis', 'scipy', 'tqdm', 'safetensors'):
    try:
        mod = importlib.import_module(name)
        print(f'{name:18} {getattr(mod, \"__version__\", \"?\")}')
    except Exception as exc:
        print(f'{name:18} MISSING ({type(exc).__name__}: {exc})')
import cupy, torch
print('cupy device:', cupy.cuda.runtime.getDeviceProperties(0)['name'],
      'runtime', cupy.cuda.runtime.runtimeGetVersion(), 'driver', cupy.cuda.runtime.driverGetVersion())
print('torch cuda', torch.version.cuda, 'available', torch.cuda.is_available(),
      'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name(0))
PY
$PY -c 'import cupy; cupy.show_config()' || true
exit \$rc"
}

BUILD_MODE=${GPU_CHECK_BUILD:-}
choose_build() {
  if [ -z "$BUILD_MODE" ]; then
    if "$PY" -c "import scikit_build_core, pybind11" > /dev/null 2>&1; then
      BUILD_MODE=pip
    else
      BUILD_MODE=dev
    fi
  fi
  # The dev build leaves the modules next to the sources: every later step imports them.
  if [ "$BUILD_MODE" = dev ] && [ -z "${GPU_CHECK_PYTHONPATH_SET:-}" ]; then
    export PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
    GPU_CHECK_PYTHONPATH_SET=1
  fi
  return 0
}

# Import fastconv from outside the tree (pip mode) and insist on the CUDA module.
VERIFY_IMPORT="cd /tmp && $PY -c 'import fastconv, fastconv._cuda as c; print(fastconv.__file__); print(c.__file__); print(fastconv.info())'"

step_build() {
  choose_build
  if [ "$BUILD_MODE" = pip ]; then
    # --no-build-isolation: use the installed scikit-build-core, pybind11 and cmake;
    # --no-deps --no-index: never reach for the network (numpy, tqdm, ... are there).
    check build 420 "
export FASTCONV_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL=$NPROC
# A failed build must not leave an older install behind for the later steps to test.
$PY -m pip uninstall -y -q fastconv
$PY -m pip install --no-build-isolation --no-deps --no-index -v . || exit
$VERIFY_IMPORT"
  else
    check build 420 "
echo 'scikit-build-core or pybind11 missing for $PY: tools/dev_build.sh (PYTHONPATH=python)'
export FASTCONV_CUDA=ON PYTHON=$PY CMAKE_BUILD_PARALLEL_LEVEL=$NPROC
tools/dev_build.sh || exit
$VERIFY_IMPORT"
  fi
}

step_info() {
  check info 60 "
cd /tmp && $PY -m fastconv info || exit
$PY -c 'import fastconv, sys; ok = fastconv.cuda.is_available(); print(\"cuda available:\", ok, fastconv.cuda.reason()); sys.exit(0 if ok else 1)'"
}

step_test() {
  # A hung test must not eat the other steps' time: pytest-timeout, where installed.
  local per_test=""
  if "$PY" -c "import pytest_timeout" > /dev/null 2>&1; then
    per_test="--timeout=${GPU_CHECK_TEST_TIMEOUT:-120}"
  fi
  # A cuda-marked test skipped here means the GPU went unused: that is a failure.
  # FASTCONV_CUDA_SYNC=1 and -x: a fault inside a kernel fails the test that caused it and
  # stops there, instead of poisoning the tests after it.
  check test_cuda 240 "
export FASTCONV_CUDA_SYNC=1
$PY -m pytest -m cuda -x -q -p no:cacheprovider $per_test --junitxml='$OUT/junit_cuda.xml' tests/
rc=\$?
$PY - '$OUT/junit_cuda.xml' <<'PY' || exit 1
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
cases = root.iter('testcase')
skipped = [c.get('name') for c in cases
           if any('no CUDA backend here' in (s.get('message') or '') for s in c.iter('skipped'))]
if skipped:
    print(f'{len(skipped)} cuda tests skipped for want of a GPU, e.g. {skipped[:3]}')
    sys.exit(1)
PY
$PY -c 'import cupy; cupy.show_config()' || true
exit \$rc"
  local xdist=""
  if "$PY" -c "import xdist" > /dev/null 2>&1; then
    xdist="-n ${GPU_CHECK_XDIST:-8}"
  fi
  # The rest of the suite: the cuda tests ran above; the training examples and whole
  # models take minutes of CPU and touch no GPU code. Workers share the cores: two
  # OpenMP/torch threads each keep the run from oversubscribing them.
  check test_all 300 "
export OMP_NUM_THREADS=\${OMP_NUM_THREADS:-2}
$PY -m pytest -x -q -p no:cacheprovider $xdist $per_test -m 'not cuda' \\
  --ignore=tests/test_examples.py --ignore=tests/test_models.py \\
  --junitxml='$OUT/junit_all.xml' tests/"
}

# compute-sanitizer over the Python driver. The driver disables CuPy's memory pool so each
# array is its own allocation and memcheck sees accesses past its end.
SANITIZER="compute-sanitizer --error-exitcode 1 --print-limit 50 --target-processes all"
# The kernels with shared memory and barriers, for racecheck and synccheck: NMS, the
# pooling adjoints, and the convolutions' largest double-buffered tiles and direct kernels.
SHARED_MEMORY_CASES="--only nms,pool_backward,conv,conv_backward --conv-paths gemm_large,direct"

step_sanitize() {
  export FASTCONV_CUDA_SYNC=1
  check memcheck 240 "$SANITIZER --tool memcheck $PY tools/gpu_sanitize.py"
  check racecheck 150 \
    "$SANITIZER --tool racecheck --racecheck-report all $PY tools/gpu_sanitize.py $SHARED_MEMORY_CASES"
  check synccheck 120 "$SANITIZER --tool synccheck $PY tools/gpu_sanitize.py $SHARED_MEMORY_CASES"
}

step_initcheck() {
  check initcheck 240 "$SANITIZER --tool initcheck $PY tools/gpu_sanitize.py"
}

step_bench() {
  check bench 300 "
set -o pipefail
cd /tmp && $PY -m fastconv bench --gpu --no-progress ${GPU_CHECK_BENCH_ARGS:-} --json '$OUT/bench_gpu.json' | tee '$OUT/bench_gpu.txt'"
}

# ---------------------------------------------------------------------------------------

echo "gpu_check.sh: steps:$(for s in "${ALL_STEPS[@]}"; do wants "$s" && printf ' %s' "$s"; done)" \
  "| OUT=$OUT | logs $LOGDIR | budget ${BUDGET}s"
for s in "${ALL_STEPS[@]}"; do
  wants "$s" || continue
  case $s in
    build) step_build ;;
    *) [ "$s" != env ] && choose_build; "step_$s" ;;
  esac
done
[ "$DRY_RUN" = 1 ] && exit 0

# Last in stdout (a remote runner returns only the tail): the benchmark table, the tails
# of failed logs, the summary.
if wants bench && [ -s "$OUT/bench_gpu.txt" ]; then
  echo
  cat "$OUT/bench_gpu.txt"
fi
for name in "${FAILED[@]}"; do
  echo
  echo "---- tail of $name.log ----"
  tail -n 20 "$LOGDIR/$name.log" 2>/dev/null | cut -c1-200
done
echo
echo "==== gpu_check summary ($(($(date +%s) - START))s; logs: $LOGDIR, packed in $OUT/logs.tar.gz)"
cat "$SUMMARY"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "FAILED: ${FAILED[*]}"
  exit 1
fi
echo "all checks passed"
