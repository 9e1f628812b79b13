#!/usr/bin/env bash
# Runs every test: unit tests of each crate and the integration tests, which
# start the real `unitgate` binary, real backends and a real redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --test
# The integration tests run the binary, so build it first.
cargo build -p unitgate
cargo test --workspace --no-fail-fast "$@"
