#!/usr/bin/env bash
# Runs the same fanout phases against octet and against nats-server's WebSocket listener on
# this machine, one after the other, and prints one table: octet, NATS, ratio.
# Installs nats-server (Debian) if missing. Loopback only. Takes about two minutes.
#
#   loadtest/compare.sh [extra fanout flags, e.g. --rates 1000,3000,6000]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nats-server >/dev/null; then
    sudo_if_needed=""
    [ "$(id -u)" -eq 0 ] || sudo_if_needed="sudo"
    $sudo_if_needed apt-get update
    $sudo_if_needed apt-get install -y --no-install-recommends nats-server
fi
cargo build --release -p octet -p octet-loadtest

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
flags=(--persons 250 --senders 250 --rates 1000,3000,4500,6000 --warmup 1 --measure 4 --quiet "$@")

echo "== octet"
token=compare-app-token-0123456789
./target/release/octet serve --listen 127.0.0.1:18190 --data-dir "$work/octet" --app-token "$token" \
    --login-attempts 100000 >"$work/octet.log" 2>&1 &
octet_pid=$!
sleep 1
./target/release/octet-loadtest fanout --target octet --addr 127.0.0.1:18190 --app-token "$token" \
    --server-pid "$octet_pid" --json "$work/octet.json" "${flags[@]}"
kill "$octet_pid"

echo "== nats-server $(nats-server --version | awk '{print $2}')"
cat >"$work/nats.conf" <<CONF
listen: 127.0.0.1:14222
websocket { listen: "127.0.0.1:18191", no_tls: true }
CONF
nats-server -c "$work/nats.conf" >"$work/nats.log" 2>&1 &
nats_pid=$!
sleep 1
./target/release/octet-loadtest fanout --target nats --addr 127.0.0.1:18191 \
    --server-pid "$nats_pid" --json "$work/nats.json" "${flags[@]}"
kill "$nats_pid"

python3 - "$work/octet.json" "$work/nats.json" <<'PY'
import json, sys
o, n = (json.load(open(p)) for p in sys.argv[1:3])
def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"
print()
print(f"{'rate':>6} | {'metric':<18} | {'octet':>10} | {'NATS':>10} | {'octet/NATS':>10}")
for po, pn in zip(o["phases"], n["phases"]):
    rows = [
        ("deliveries/s", po["deliveries_per_sec"], pn["deliveries_per_sec"]),
        ("p99 µs", po["p99_us"], pn["p99_us"]),
        ("deliv / CPU-s", po["deliveries_per_cpu_second"], pn["deliveries_per_cpu_second"]),
        ("lost", po["lost"], pn["lost"]),
    ]
    for name, a, b in rows:
        print(f"{po['rate']:>6} | {name:<18} | {a or 0:>10.0f} | {b or 0:>10.0f} | {ratio(a, b):>10}")
print(f"headline (p99 ≤ 10 ms, nothing lost): octet {o['headline_deliveries_per_sec'] or 0:.0f}, "
      f"NATS {n['headline_deliveries_per_sec'] or 0:.0f} deliveries/s")
print("octet stores every send durably in SQLite before `sent`; NATS core keeps nothing.")
PY
