#!/usr/bin/env bash
# A local fleet: one etcd, two gateways (units A and B) sharing their config
# through it, two echo instances per unit, and a slot migration walked
# through with curl. Everything listens on 127.0.0.1; Ctrl-C (or the end of
# the walk-through with --auto) stops it all.
#
#   scripts/fleet-demo.sh          # start, walk through, keep running
#   scripts/fleet-demo.sh --auto   # start, walk through, stop (used as a smoke test)
set -Eeuo pipefail
cd "$(dirname "$0")/.."
# Loopback only: a proxy in the environment must not see these requests.
export no_proxy="127.0.0.1,localhost" NO_PROXY="127.0.0.1,localhost"
scripts/deps.sh --test
cargo build -q -p unitgate
bin=target/debug/unitgate
auto="${1:-}"

dir="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
# Any failing step says which, with every process's log, on stderr (CI sends
# stdout to /dev/null).
logs() {
  for f in "$dir"/*.log; do [ -f "$f" ] && { echo "--- $(basename "$f") (last 40 lines)"; tail -n 40 "$f"; }; done
}
fail() { echo "fleet demo: $*" >&2; logs >&2; exit 1; }
trap 'rc=$?; echo "fleet demo: line $LINENO failed (exit $rc): $BASH_COMMAND" >&2; logs >&2; exit $rc' ERR
trap cleanup EXIT INT TERM

# Ports below the kernel's ephemeral range (32768+), so that an outgoing
# connection (a gateway to etcd, a health check) cannot take a port picked
# here before its server binds it.
port() {
  python3 - <<'PY'
import random, socket
for _ in range(200):
    p = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
else:
    raise SystemExit("no free port in 20000-32000")
PY
}
# Waits up to $1 seconds for a command to succeed.
wait_for() {
  local secs=$1; shift
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.1
  done
}
curl() { command curl --max-time 10 "$@"; }
ETCD=$(port); PEER=$(port)
etcd --name demo --data-dir "$dir/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD" --advertise-client-urls "http://127.0.0.1:$ETCD" \
  --listen-peer-urls "http://127.0.0.1:$PEER" --initial-advertise-peer-urls "http://127.0.0.1:$PEER" \
  --initial-cluster "demo=http://127.0.0.1:$PEER" --log-level warn >"$dir/etcd.log" 2>&1 &
pids+=($!)

declare -A inst
for i in a1 a2 b1 b2; do
  p=$(port); inst[$i]="127.0.0.1:$p"
  unit=$(echo "${i:0:1}" | tr a-z A-Z)
  "$bin" echo --listen "${inst[$i]}" --unit "$unit" --instance "$i" 2>/dev/null &
  pids+=($!)
done

cat >"$dir/fleet.toml" <<EOF
[routing]
key = ["header:x-user-id"]
signing_keys = { k1 = "fleet-demo-secret-0123456789" }
active_key = "k1"
[[units]]
name = "A"
slots = ["0-4999"]
failover = ["B"]
[[units]]
name = "B"
slots = ["5000-9999"]
failover = ["A"]
[[services]]
name = "echo"
[services.instances]
A = ["${inst[a1]}", "${inst[a2]}"]
B = ["${inst[b1]}", "${inst[b2]}"]
[[routes]]
name = "orders"
path_prefix = "/orders"
service = "echo"
EOF

declare -A gw admin
for u in A B; do
  gw[$u]="127.0.0.1:$(port)"; admin[$u]="127.0.0.1:$(port)"
  lc=$(echo "$u" | tr A-Z a-z)
  cat >"$dir/gateway-$lc.toml" <<EOF
[gateway]
unit = "$u"
listen = ["${gw[$u]}"]
threads = 1
trusted_peers = ["127.0.0.1/32"]
expose_unit_headers = true
[admin]
listen = "${admin[$u]}"
token = "demo-token"
[store]
kind = "etcd"
endpoints = ["http://127.0.0.1:$ETCD"]
prefix = "/unitgate/demo"
gateway_id = "gw-$lc"
cache_file = "last-good-$lc.toml"
lease_secs = 3
EOF
done

wait_for 30 curl -sf "http://127.0.0.1:$ETCD/health" || fail "etcd did not become healthy in 30 s"
for i in a1 a2 b1 b2; do
  wait_for 30 curl -s "http://${inst[$i]}/" || fail "echo instance $i (${inst[$i]}) did not answer in 30 s"
done
show() { echo; echo "\$ $*"; eval "$@"; echo; }
H='-H "authorization: Bearer demo-token"'

show "$bin fleet init --config $dir/gateway-a.toml --from $dir/fleet.toml"
for u in A B; do
  lc=$(echo "$u" | tr A-Z a-z)
  RUST_LOG=warn "$bin" run -c "$dir/gateway-$lc.toml" 2>"$dir/gw-$lc.log" &
  pids+=($!)
done
registered() { curl -sf "http://${admin[A]}/admin/v1/fleet" -H "authorization: Bearer demo-token" | grep -q "\"id\":\"gw-$1\""; }
for u in A B; do
  lc=$(echo "$u" | tr A-Z a-z)
  wait_for 30 curl -sf "http://${admin[$u]}/readyz" || fail "gateway $u did not become ready in 30 s"
  wait_for 30 curl -s "http://${gw[$u]}/" || fail "gateway $u's listener ${gw[$u]} did not answer in 30 s"
  wait_for 30 registered "$lc" || fail "gateway $u did not register in etcd in 30 s"
done

show "curl -s http://${admin[A]}/admin/v1/fleet $H"
show "$bin fleet status --config $dir/gateway-a.toml"
echo "# user 42 (slot 42) lives in unit A, on either gateway:"
show "curl -s -D - -o /dev/null http://${gw[B]}/orders -H 'x-user-id: 42' | grep -i x-unit"
echo "# migrate slots 0-99 from A to B, confirmed by hand:"
show "curl -s -X POST http://${admin[B]}/admin/v1/migrations $H -d '{\"slots\":[\"0-99\"],\"to\":\"B\",\"confirm\":\"manual\"}'"
id=$(curl -s "http://${admin[A]}/admin/v1/migrations" -H "authorization: Bearer demo-token" | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
state() { curl -s "http://${admin[A]}/admin/v1/migrations/$id" -H "authorization: Bearer demo-token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])'; }
st=""
in_state() { st=$(state); [ "$st" = "$1" ]; }
wait_for 30 in_state waiting_confirm || fail "migration $id did not reach waiting_confirm in 30 s (state: ${st:-unknown})"
echo "# frozen: writes of user 42 get 503 write_forbidden, reads pass:"
show "curl -s -X POST http://${gw[A]}/orders -H 'x-user-id: 42'"
show "curl -s -o /dev/null -w '%{http_code}\n' http://${gw[A]}/orders -H 'x-user-id: 42'"
show "curl -s -X POST http://${admin[A]}/admin/v1/migrations/$id/confirm $H"
wait_for 30 in_state done || fail "migration $id did not reach done in 30 s (state: ${st:-unknown})"
show "curl -s http://${admin[A]}/admin/v1/migrations/$id $H"
echo "# user 42 now lives in unit B, on both gateways:"
show "curl -s -D - -o /dev/null http://${gw[A]}/orders -H 'x-user-id: 42' | grep -i x-unit"
show "curl -s -X POST -o /dev/null -w '%{http_code}\n' http://${gw[B]}/orders -H 'x-user-id: 42'"
if [ "$auto" != "--auto" ]; then
  echo "fleet running; admin A http://${admin[A]}  B http://${admin[B]} (token demo-token). Ctrl-C stops."
  wait
fi
