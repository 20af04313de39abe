#!/usr/bin/env bash
# Runs the same fanout phases against octet, NATS core and NATS JetStream (nats-server's
# WebSocket listener; JetStream = one file-storage stream over the persons' subjects, every
# publish acknowledged), one broker at a time, each alone with a fresh data dir, and prints one
# table: per rate and broker the median over --runs of deliveries/s, p50/p99/p99.9, server CPU,
# deliveries per server-CPU-second, lost/dup/out-of-order, and octet's ratio to each peer; then
# each broker's ceiling. Every run's JSON goes to --out. Loopback only.
#
#   loadtest/compare.sh [options] [extra fanout flags, e.g. --sources 2]
#
#   --pin              broker alone on CPU 1 (taskset -c 1; octet with 1 tokio worker, nats-server
#                      with GOMAXPROCS=1), the generator on CPU 0: their CPU never mixes.
#                      Default: unpinned (both share every core, as in production load tests).
#   --runs N           repeat the whole set N times and report the median (default 3)
#   --rates R1,R2,..   sends/s, one phase each (default 1000,2000,3000,4000,6000,8000)
#   --brokers LIST     any of octet,nats,jetstream (default all three), and webhooks: octet
#                      with --webhook-url to a local receiver that answers 200 (the generator's
#                      `webhook-receiver`, on the generator's CPU), so every message whose
#                      devices do not ack within --push-grace (the generator never acks: all of
#                      them) is also pushed; `octet/octet+webhooks` is then what the outbox costs
#   --persons N, --devices N, --senders N, --warmup S, --measure S
#                      the fanout's shape (default 250 × 8, 250 senders, 1 s + 4 s per rate)
#   --out DIR          where the JSON goes (default target/compare/<UTC time>)
#   --octet-bin PATH, --loadtest-bin PATH
#                      use these binaries instead of building; OCTET_COMPARE_PROFILE=debug
#                      builds and uses debug binaries (default release)
#
# Installs nats-server (Debian) if missing. Defaults take about 6 minutes (3 brokers × 3 runs).
set -euo pipefail
called_from=$PWD
cd "$(dirname "$0")/.."

pin=0
runs=3
rates=1000,2000,3000,4000,6000,8000
brokers=octet,nats,jetstream
persons=250
devices=8
senders=250
warmup=1
measure=4
out=""
octet_bin=""
loadtest_bin=""
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --pin) pin=1 ;;
        --runs) runs=$2; shift ;;
        --rates) rates=$2; shift ;;
        --brokers) brokers=$2; shift ;;
        --persons) persons=$2; shift ;;
        --devices) devices=$2; shift ;;
        --senders) senders=$2; shift ;;
        --warmup) warmup=$2; shift ;;
        --measure) measure=$2; shift ;;
        --out) out=$2; shift ;;
        --octet-bin) octet_bin=$2; shift ;;
        --loadtest-bin) loadtest_bin=$2; shift ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) extra+=("$1") ;;
    esac
    shift
done
# Paths given relative to where the script was called from.
absolute() { case "$1" in ""|/*) echo "$1" ;; *) echo "$called_from/$1" ;; esac; }
out=$(absolute "$out")
octet_bin=$(absolute "$octet_bin")
loadtest_bin=$(absolute "$loadtest_bin")
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "--runs must be a positive number" >&2; exit 2; }
for b in ${brokers//,/ }; do
    case "$b" in octet|webhooks|nats|jetstream) ;; *) echo "unknown broker $b" >&2; exit 2 ;; esac
done

if [[ ",$brokers," =~ ,(nats|jetstream), ]] && ! command -v nats-server >/dev/null; then
    sudo_if_needed=""
    [ "$(id -u)" -eq 0 ] || sudo_if_needed="sudo"
    $sudo_if_needed apt-get update
    $sudo_if_needed apt-get install -y --no-install-recommends nats-server
fi

if [ -z "$octet_bin" ] || [ -z "$loadtest_bin" ]; then
    profile=${OCTET_COMPARE_PROFILE:-release}
    case "$profile" in
        release) cargo build --release -p octet -p octet-loadtest ;;
        debug) cargo build -p octet -p octet-loadtest ;;
        *) echo "OCTET_COMPARE_PROFILE must be release or debug" >&2; exit 2 ;;
    esac
    dir=${CARGO_TARGET_DIR:-target}/$profile
    octet_bin=${octet_bin:-$dir/octet}
    loadtest_bin=${loadtest_bin:-$dir/octet-loadtest}
fi
[ -x "$octet_bin" ] || { echo "no octet binary at $octet_bin" >&2; exit 2; }
[ -x "$loadtest_bin" ] || { echo "no octet-loadtest binary at $loadtest_bin" >&2; exit 2; }

if [ "$pin" = 1 ]; then
    command -v taskset >/dev/null || { echo "--pin needs taskset (util-linux)" >&2; exit 2; }
    [ "$(nproc --all)" -ge 2 ] || { echo "--pin needs CPUs 0 and 1" >&2; exit 2; }
    broker_cpu=(taskset -c 1)
    generator_cpu=(taskset -c 0)
    octet_env=(TOKIO_WORKER_THREADS=1)
    nats_env=(GOMAXPROCS=1)
else
    broker_cpu=()
    generator_cpu=()
    octet_env=()
    nats_env=()
fi

out=${out:-${CARGO_TARGET_DIR:-target}/compare/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
work=$(mktemp -d)
server_pid=""
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
    if [ -n "${receiver_pid:-}" ]; then
        kill -TERM "$receiver_pid" 2>/dev/null || true
        wait "$receiver_pid" 2>/dev/null || true
        receiver_pid=""
    fi
}
trap 'stop_server; rm -rf "$work"' EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits up to 15 s for 127.0.0.1:$1 to accept, failing if the server died.
wait_listening() {
    local port=$1 log=$2 deadline=$((SECONDS + 15))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ! kill -0 "$server_pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
            echo "the broker did not start; its log:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
}

# Percent of the machine's CPU that other processes used over one second (nothing of this
# script runs then): above a few percent the numbers that follow are noisy.
busy_percent() {
    local a b
    a=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
    sleep 1
    b=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
        busy = y[1] - x[1]; idle = y[2] - x[2];
        printf "%.0f", (busy + idle > 0) ? 100 * busy / (busy + idle) : 0 }'
}

token=compare-app-token-0123456789
nats_version=$(command -v nats-server >/dev/null && nats-server --version | awk '{print $2}' || echo -)

# Starts broker $1 for run $2, sets server_pid and addr.
start_server() {
    local broker=$1 run=$2 port
    port=$(free_port)
    addr=127.0.0.1:$port
    case "$broker" in
        octet|webhooks)
            local hooks=()
            if [ "$broker" = webhooks ]; then
                local receiver
                receiver=127.0.0.1:$(free_port)
                "${generator_cpu[@]}" "$loadtest_bin" webhook-receiver --listen "$receiver" \
                    --count-file "$out/run$run-webhooks.events" >"$out/run$run-receiver.log" 2>&1 &
                receiver_pid=$!
                hooks=(--webhook-url "http://$receiver/hooks"
                    --webhook-secret compare-webhook-secret-0123456789)
            fi
            env "${octet_env[@]}" "${broker_cpu[@]}" "$octet_bin" serve --listen "$addr" \
                --data-dir "$work/octet-$run" --app-token "$token" --login-attempts 100000 \
                --send-rate 100000 --send-burst 100000 "${hooks[@]}" \
                >"$out/run$run-$broker.log" 2>&1 &
            ;;
        nats|jetstream)
            local client
            client=$(free_port)
            {
                echo "listen: 127.0.0.1:$client"
                echo "websocket { listen: \"$addr\", no_tls: true }"
                if [ "$broker" = jetstream ]; then
                    echo "jetstream { store_dir: \"$work/js-$run\" }"
                fi
            } >"$work/$broker.conf"
            env "${nats_env[@]}" "${broker_cpu[@]}" nats-server -c "$work/$broker.conf" \
                >"$out/run$run-$broker.log" 2>&1 &
            ;;
    esac
    server_pid=$!
    wait_listening "$port" "$out/run$run-$broker.log"
    if [ "$pin" = 1 ]; then
        local cpus
        cpus=$(awk '/^Cpus_allowed_list/ {print $2}' "/proc/$server_pid/status")
        [ "$cpus" = 1 ] || { echo "$broker runs on CPUs $cpus, not 1" >&2; exit 1; }
    fi
}

where="unpinned (broker and generator share every core)"
[ "$pin" = 1 ] && where="pinned (broker alone on CPU 1, generator on CPU 0)"
echo "compare: ${brokers//,/, } — $where; $runs run(s); rates $rates sends/s"
echo "         $persons persons × $devices devices, $senders senders, ${warmup} s warm-up + ${measure} s per rate"
echo "         JSON and logs in $out"

for run in $(seq 1 "$runs"); do
    for broker in ${brokers//,/ }; do
        busy=$(busy_percent)
        echo "$busy" >"$out/run$run-$broker.busy"
        [ "$busy" -le 5 ] || echo "warning: other processes used ${busy}% of the CPUs just before run $run ($broker): not a quiet machine"
        start_server "$broker" "$run"
        json="$out/run$run-$broker.json"
        target=$broker
        [ "$broker" = webhooks ] && target=octet
        fanout=(fanout --target "$target" --addr "$addr" --server-pid "$server_pid"
            --persons "$persons" --devices "$devices" --senders "$senders" --rates "$rates"
            --warmup "$warmup" --measure "$measure" --json "$json" --quiet)
        [ "$target" = octet ] && fanout+=(--app-token "$token")
        if ! "${generator_cpu[@]}" "$loadtest_bin" "${fanout[@]}" "${extra[@]}" \
            >"$out/run$run-$broker.txt" 2>&1; then
            echo "run $run, $broker: the generator failed:" >&2
            cat "$out/run$run-$broker.txt" >&2
            exit 1
        fi
        stop_server
        rm -rf "$work/octet-$run" "$work/js-$run"
        echo "run $run/$runs $broker: $(grep -E '^ceiling' "$out/run$run-$broker.txt")"
        if [ "$broker" = webhooks ]; then
            echo "run $run/$runs webhooks: $(cat "$out/run$run-webhooks.events" 2>/dev/null || echo 0) events reached the receiver"
        fi
    done
done

cat >"$out/setup.json" <<JSON
{"pin": $pin, "runs": $runs, "rates": [$rates], "brokers": "$brokers", "persons": $persons,
 "devices": $devices, "senders": $senders, "warmup_s": $warmup, "measure_s": $measure,
 "nats_server": "$nats_version", "octet_commit": "$(git rev-parse --short HEAD 2>/dev/null || echo -)",
 "date": "$(date -u +%FT%TZ)"}
JSON

python3 - "$out" <<'PY'
import glob, json, os, re, statistics, sys

out = sys.argv[1]
setup = json.load(open(os.path.join(out, "setup.json")))
busy = {}
for path in glob.glob(os.path.join(out, "run*-*.busy")):
    busy[os.path.basename(path)[:-5]] = int(open(path).read().strip() or 0)
setup["busy_percent_before_each_run"] = busy
names = {"octet": "octet", "webhooks": "octet+webhooks", "nats": "NATS", "jetstream": "JetStream"}
brokers = setup["brokers"].split(",")
runs = {b: [] for b in brokers}
for path in sorted(glob.glob(os.path.join(out, "run*-*.json"))):
    m = re.match(r"run(\d+)-(\w+)\.json$", os.path.basename(path))
    if m and m.group(2) in runs:
        runs[m.group(2)].append(json.load(open(path)))
rates = setup["rates"]


def phase(report, rate):
    return next((p for p in report["phases"] if p["rate"] == rate), None)


def get(obj, key):
    for part in key.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def values(b, rate, key):
    vals = [get(phase(r, rate), key) for r in runs[b] if phase(r, rate)]
    return [v for v in vals if v is not None]


def median(b, rate, key):
    vals = values(b, rate, key)
    return statistics.median(vals) if vals else None


def worst(b, rate, key):
    vals = values(b, rate, key)
    return max(vals) if vals else None


peers = [b for b in brokers if b != "octet"] if "octet" in brokers else []
cols = [names[b] for b in brokers] + [f"octet/{names[p]}" for p in peers]
# label, key, format, whether octet/peer means anything
metrics = [
    ("deliveries/s", "window_deliveries_per_sec", "{:.0f}", True),
    ("p50 µs", "p50_us", "{:.0f}", True),
    ("p99 µs", "p99_us", "{:.0f}", True),
    ("p99.9 µs", "p999_us", "{:.0f}", True),
    ("sent p50 µs", "ack_latency.p50_us", "{:.0f}", True),
    ("sent p99 µs", "ack_latency.p99_us", "{:.0f}", True),
    ("server CPU s", "server_cpu_seconds", "{:.2f}", True),
    ("deliv / CPU-s", "deliveries_per_cpu_second", "{:.0f}", True),
    ("in phase", "delivered_share", "{:.1%}", False),
    ("gen CPU s", "generator_cpu_seconds", "{:.2f}", False),
    ("send lag µs", "send_lag_max_us", "{:.0f}", False),
]
summary = {"setup": setup, "median": {}, "ceiling": {}, "accounting": {}}
w = 12
print()
print(f"median of {setup['runs']} run(s) per broker; lost/dup/ooo: the worst run; in phase: "
      "the share of the scheduled deliveries that arrived within the phase;")
print("deliveries/s: what arrived during the measured window (deliv / CPU-s divides the same "
      "count by the broker's CPU in that window);")
print("sent p50/p99: a send's scheduled time to its acknowledgement (octet's `sent`, JetStream's "
      "later PubAck; NATS core has none);")
print("gen CPU s / send lag: the generator's own CPU and its latest send against the schedule "
      "(late sends with the generator's CPU near the measured seconds: the generator is the "
      "bottleneck; with its CPU low: it waited for a CPU, or for the broker to read)")
print(f"{'rate':>6} | {'metric':<14} | " + " | ".join(f"{c:>{w}}" for c in cols))
for rate in rates:
    at = summary["median"].setdefault(str(rate), {})
    for label, key, fmt, ratio in metrics:
        row = {b: median(b, rate, key) for b in brokers}
        at[key] = row
        cells = [fmt.format(row[b]) if row[b] is not None else "-" for b in brokers]
        for p in peers:
            a, z = row["octet"], row[p]
            ok = ratio and a and z
            cells.append(f"{a / z:.2f}x" if ok else "-")
        print(f"{rate:>6} | {label:<14} | " + " | ".join(f"{c:>{w}}" for c in cells))
    cells = []
    for b in brokers:
        lost, dup, ooo = (worst(b, rate, k) for k in ("lost", "duplicated", "out_of_order"))
        at.setdefault("lost_dup_ooo_worst", {})[b] = [lost, dup, ooo]
        cells.append(f"{lost}/{dup}/{ooo}")
    cells += ["-"] * len(peers)
    print(f"{rate:>6} | {'lost/dup/ooo':<14} | " + " | ".join(f"{c:>{w}}" for c in cells))

# The ceiling: the highest rate a broker kept up with (>= 97% of what the phase scheduled
# delivered within it, nothing lost) in a majority of the runs, with its median p99.
print()
parts = []
for b in brokers:
    def kept_up(rate):
        n = sum(1 for run in runs[b] if (phase(run, rate) or {}).get("kept_up"))
        return n * 2 > len(runs[b])

    kept = [r for r in rates if kept_up(r)]
    if kept:
        top = max(kept)
        c = {"rate": top, "p99_us": median(b, top, "p99_us"),
             "deliveries_per_sec": median(b, top, "window_deliveries_per_sec")}
        parts.append(f"{names[b]} {top} sends/s ({c['deliveries_per_sec']:.0f} deliveries/s, "
                     f"p99 {c['p99_us']:.0f} µs)")
    else:
        c = None
        parts.append(f"{names[b]} none")
    summary["ceiling"][b] = c
print("ceiling (≥ 97% delivered within the phase, nothing lost, in most runs): "
      + "; ".join(parts))

clean = True
for b in brokers:
    keys = ("expected", "received", "lost", "duplicated", "out_of_order")
    t = {k: sum(r["totals"][k] for r in runs[b]) for k in keys}
    acks = [r["acks"] for r in runs[b] if r.get("acks")]
    a = None
    if acks:
        a = {k: sum(x[k] for x in acks) for k in ("owed", "stored", "refused", "missing")}
    summary["accounting"][b] = {"deliveries": t, "acks": a}
    line = (f"{names[b]}: expected {t['expected']} received {t['received']} lost {t['lost']} "
            f"duplicated {t['duplicated']} out-of-order {t['out_of_order']}")
    if a:
        line += (f"; acknowledgements {a['stored']}/{a['owed']} "
                 f"(refused {a['refused']}, missing {a['missing']})")
    print(line)
    if t["lost"] or t["duplicated"] or t["out_of_order"] or (a and (a["refused"] or a["missing"])):
        clean = False
print("every message accounted for: nothing lost, duplicated, out of order or unacknowledged"
      if clean else "NOT CLEAN: see the lines above (a saturated broker drops slow consumers)")
if "octet" in brokers:
    print("octet stores every send durably (SQLite) before `sent`; JetStream stores every "
          "publish (file storage) before its PubAck; NATS core keeps nothing.")
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
if busy and max(busy.values()) > 5:
    print(f"NOT A QUIET MACHINE: other processes used up to {max(busy.values())}% of the CPUs "
          "just before a run; treat these numbers as noise")
print(f"JSON: {out}/run<N>-<broker>.json (every run), {out}/summary.json (the medians)")
PY
