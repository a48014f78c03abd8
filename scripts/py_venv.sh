#!/usr/bin/env bash
# Installs the Python clients the contract tests drive ragbox with into .venv-py/: the
# official `openai` package (the OpenAI-compatible /v1 conformance test) and schemathesis
# (the whole OpenAPI document checked against the running server). Test-time only: ragbox
# never runs Python. Re-running is a no-op once both are there at these versions.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-py
OPENAI=2.8.0
SCHEMATHESIS=4.32.5

ready() {
  [ -x "$VENV/bin/python" ] &&
    "$VENV/bin/python" - <<PY 2>/dev/null
import importlib.metadata as m
assert m.version("openai") == "$OPENAI"
assert m.version("schemathesis") == "$SCHEMATHESIS"
PY
}

if ready; then
  echo "openai $OPENAI and schemathesis $SCHEMATHESIS present in $VENV"
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "openai==$OPENAI" "schemathesis==$SCHEMATHESIS"
ready || { echo "py_venv.sh: $VENV is not usable after install" >&2; exit 1; }
echo "openai $OPENAI and schemathesis $SCHEMATHESIS installed in $VENV"
