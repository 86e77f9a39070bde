#!/usr/bin/env bash
# Fuzz the compiled entry points for N minutes (default 5) with atheris (pip install atheris):
#   tools/fuzz.sh [MINUTES] [extra libFuzzer flags]
# New inputs that add coverage go into tools/fuzz_corpus (a few hundred files of at most
# 4 KiB; commit the ones worth keeping). A finding leaves crash-*/timeout-* files in the
# current folder and a non-zero exit status. Runs against the developer build
# (tools/dev_build.sh) or, with PYTHONPATH unset and the package installed, against that.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-5}
shift || true
mkdir -p tools/fuzz_corpus
export PYTHONPATH=${PYTHONPATH-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec python tools/fuzz_cpp.py tools/fuzz_corpus -max_total_time=$((minutes * 60)) \
  -timeout=20 -rss_limit_mb=8192 -len_control=0 -max_len=4096 -print_final_stats=1 "$@"
