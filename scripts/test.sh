#!/usr/bin/env bash
# The one test command: on a fresh clone with nothing prepared, fetches what the tests
# need and runs the whole suite. Each preparation step is skipped when already done.
# Arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "==> $*"; }

# Redis for the scale-out tests, on its standard port; nothing is kept on disk.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  command -v redis-server >/dev/null 2>&1 || {
    echo "test.sh: redis-server is not installed (apt-get install redis-server)" >&2
    exit 1
  }
  step "starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi

# systemd-analyze, for the test that rates the shipped unit's lockdown.
if ! command -v systemd-analyze >/dev/null 2>&1; then
  step "installing systemd (for systemd-analyze)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi

# The models the tests run on, fetched and checked by the installer.
./install.sh --models-only
# llama.cpp's own OpenAI-compatible server, for the upstream provider's tests.
scripts/llama_server_venv.sh
# The official openai package and schemathesis, for the contract tests.
scripts/py_venv.sh

step "cargo test --locked $*"
exec cargo test --locked "$@"
