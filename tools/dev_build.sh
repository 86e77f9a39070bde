#!/usr/bin/env bash
# Incremental developer build: compiles fastconv._cpu (and fastconv._cuda with
# FASTCONV_CUDA=AUTO or ON) into build/dev and drops the modules next to the Python sources, so `PYTHONPATH=python python -c "import fastconv"` runs the
# tree as it is. Users install with pip instead (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
mkdir -p build
cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release -DFASTCONV_CUDA="${FASTCONV_CUDA:-OFF}" \
  -DPython_EXECUTABLE="$(command -v "$PY")" \
  -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" > build/dev-configure.log 2>&1 \
  || { cat build/dev-configure.log; exit 1; }
cmake --build build/dev
cp build/dev/cpp/_cpu*.so python/fastconv/
if ls build/dev/cuda/_cuda*.so > /dev/null 2>&1; then
  cp build/dev/cuda/_cuda*.so python/fastconv/
else
  rm -f python/fastconv/_cuda*.so
fi
