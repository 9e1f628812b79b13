#!/usr/bin/env bash
# Installs the system packages unitgate needs, only when they are missing:
#   cmake          pingora's zlib-ng build (always)
#   protoc         etcd-client's build script compiles etcd's .proto files (always)
#   redis-server   the test suite's global rate-limit tests (with --test)
#   etcd           the fleet store's tests (Debian's etcd-server 3.4; with --test)
#   chromium       the web console's browser tests, headless (with --test)
#   prometheus     for promtool: /metrics and deploy/'s alert rules are checked (with --test)
# Debian/Ubuntu; uses sudo when not root.
set -euo pipefail
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
if [ "${1:-}" = "--test" ]; then
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
    || need+=(chromium)
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)
fi
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing: ${need[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq "${need[@]}" >/dev/null
