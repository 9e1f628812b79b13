#!/usr/bin/env bash
# Runs the embedded demo: `unitgate demo` (data plane :8080, admin :9900).
# Extra arguments go to `unitgate demo`, e.g. --listen 127.0.0.1:18080.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
exec cargo run --release -p unitgate -- demo "$@"
