#!/usr/bin/env bash
# Runs the CUDA kernel headers on the CPU: every cuda/emu/*_emu_test.cpp is built with
# AddressSanitizer and UBSan against the host emulation of CUDA (cuda/emu/cuda_emu.hpp) and
# run with its default cases; each compares the kernels with naive loops and exits non-zero
# on any mismatch or sanitizer report. Needs only g++ (C++20); .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for test in cuda/emu/*_emu_test.cpp; do
  name=$(basename "$test" .cpp)
  echo "== $name"
  g++ -std=c++20 -O1 -g -pthread -fsanitize=address,undefined -fno-sanitize-recover=undefined \
    -I cuda/include -I cpp/include "$test" cpp/geometry.cpp -o "$out/$name"
  "$out/$name" | tail -n 1
done
