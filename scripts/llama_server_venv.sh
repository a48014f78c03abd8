#!/usr/bin/env bash
# Builds llama.cpp's own OpenAI-compatible server (llama-cpp-python[server], compiled
# from source by pip) into .venv-llama/, for the tests of the OpenAI-compatible
# provider and for scripts/bench_llama_cpp.py, and unpacks the chat templates of real
# models that llama.cpp ships in its source (models/templates/*.jinja) into
# .venv-llama/templates/, for the chat-template tests. Test-time only: ragbox never
# runs Python. Re-running is cheap once both are there.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-llama
VERSION=0.3.36
TEMPLATES="$VENV/templates"
DOWNLOAD=""
trap '[ -z "$DOWNLOAD" ] || rm -rf "$DOWNLOAD"' EXIT

venv_ready() {
  [ -x "$VENV/bin/python" ] &&
    "$VENV/bin/python" -c "import llama_cpp, llama_cpp.server, uvicorn; assert llama_cpp.__version__ == '$VERSION'" 2>/dev/null
}

# The templates are those of this llama-cpp-python version's llama.cpp.
templates_ready() {
  [ "$(cat "$TEMPLATES/VERSION" 2>/dev/null)" = "$VERSION" ] &&
    compgen -G "$TEMPLATES/*.jinja" >/dev/null
}

build_venv() {
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  # A portable x86-64 build (AVX2, FMA, F16C): llama.cpp's native build picks up AMX
  # where the CPU has it, and that build crashed at the first decode on such a machine
  # here. Built without pip's wheel cache, which would hand back a wheel built with other
  # flags. Two build jobs: the CI machine has two cores.
  CMAKE_ARGS="${LLAMA_CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON}" \
    CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    "$VENV/bin/pip" install --quiet --no-cache-dir "llama-cpp-python[server]==$VERSION"
}

# The source distribution only, unbuilt (`--no-binary` for this package alone: for all
# of them it would build pip's own build tools from source too); only its templates are
# kept.
unpack_templates() {
  DOWNLOAD="$(mktemp -d)"
  "$VENV/bin/pip" download --quiet --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$VERSION" -d "$DOWNLOAD"
  mkdir -p "$DOWNLOAD/templates"
  tar -xzf "$DOWNLOAD/llama_cpp_python-$VERSION.tar.gz" -C "$DOWNLOAD/templates" \
    --strip-components=5 --wildcards '*/vendor/llama.cpp/models/templates/*.jinja'
  echo "$VERSION" >"$DOWNLOAD/templates/VERSION"
  rm -rf "$TEMPLATES"
  mv "$DOWNLOAD/templates" "$TEMPLATES"
}

if venv_ready && templates_ready; then
  echo "llama-cpp-python $VERSION and its chat templates present in $VENV"
  exit 0
fi

venv_ready || build_venv
templates_ready || unpack_templates
"$VENV/bin/python" -c "import llama_cpp, llama_cpp.server; print('llama-cpp-python', llama_cpp.__version__, 'ready in $VENV')"
echo "$(ls "$TEMPLATES"/*.jinja | wc -l) chat templates in $TEMPLATES"
