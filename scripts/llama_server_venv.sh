#!/usr/bin/env bash
# Builds llama.cpp's own OpenAI-compatible server (llama-cpp-python[server], compiled
# from source by pip) into .venv-llama/, for the tests of the OpenAI-compatible
# provider and for scripts/bench_llama_cpp.py. Test-time only: ragbox never runs Python.
# Re-running is cheap once it is there.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-llama
VERSION=0.3.36

if [ -x "$VENV/bin/python" ] &&
  "$VENV/bin/python" -c "import llama_cpp, llama_cpp.server, uvicorn; assert llama_cpp.__version__ == '$VERSION'" 2>/dev/null; then
  echo "llama-cpp-python $VERSION present in $VENV"
  exit 0
fi

python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
# A portable x86-64 build (AVX2, FMA, F16C): llama.cpp's native build picks up AMX
# where the CPU has it, and that build crashed at the first decode on such a machine
# here. Built without pip's wheel cache, which would hand back a wheel built with other
# flags. Two build jobs: the CI machine has two cores.
CMAKE_ARGS="${LLAMA_CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON}" \
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  "$VENV/bin/pip" install --quiet --no-cache-dir "llama-cpp-python[server]==$VERSION"
"$VENV/bin/python" -c "import llama_cpp, llama_cpp.server; print('llama-cpp-python', llama_cpp.__version__, 'ready in $VENV')"
