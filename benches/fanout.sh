#!/usr/bin/env bash
# `make bench-fanout`: one publish fanned out to N subscribers of one channel on one process,
# ringcast with 1 and 2 shards (publishes through the Pusher HTTP API, subscribers speak Pusher
# v7) against Bun's built-in topic pub/sub, in the same run with the same client
# (benches/fanout/client.mjs). Prints one JSON line per run and a summary table; any lost
# delivery fails the run. SUBSCRIBERS="1000 10000 19000" sets the sizes (19000 needs an open-files
# limit of about 19100 for the client and the server each).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
sizes="${SUBSCRIBERS:-1000 10000 19000}"

cargo build --release --locked --bin ringcast
(cd benches/fanout && npm ci --no-audit --no-fund --loglevel=error)
bun="$root/benches/fanout/node_modules/.bin/bun"
ulimit -n "$(ulimit -Hn)"

export RINGCAST_APP_ID=900001 RINGCAST_APP_KEY=bench-key RINGCAST_APP_SECRET=bench-secret
results="$(mktemp)"
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -f "$results"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 100); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "server on port $1 did not start" >&2
    return 1
}
# The server runs under `timeout` (bounded even if this script dies); CPU is read from the
# server itself, `timeout`'s only child.
child_of() {
    for _ in $(seq 1 50); do
        c="$(cat "/proc/$1/task/$1/children" 2>/dev/null | tr -d ' ')"
        [ -n "$c" ] && { echo "$c"; return 0; }
        sleep 0.1
    done
    echo "no child of $1" >&2
    return 1
}
stop_server() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; server=""; }

# Enough publishes for about 200k deliveries per run, so the server's CPU time (10 ms ticks)
# is measured to about 1 %.
publishes_for() { echo $(( $1 >= 200000 ? 1 : 200000 / $1 )); }

for n in $sizes; do
    p="$(publishes_for "$n")"
    for shards in 1 2; do
        port="$(free_port)"
        timeout 600 target/release/ringcast serve --listen "127.0.0.1:$port" --shards "$shards" \
            --log-level warn 2>/dev/null &
        server=$!
        wait_port "$port"
        timeout 300 node benches/fanout/client.mjs ringcast "$port" "$(child_of "$server")" "$n" "$p" \
            "ringcast shards=$shards" | tee -a "$results"
        stop_server
    done
    port="$(free_port)"
    timeout 600 "$bun" benches/fanout/bun_server.js "$port" 2>/dev/null &
    server=$!
    wait_port "$port"
    timeout 300 node benches/fanout/client.mjs bun "$port" "$(child_of "$server")" "$n" "$p" "bun" \
        | tee -a "$results"
    stop_server
done

node -e '
const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(JSON.parse);
console.log("\n| subscribers | server | deliveries/CPU-s | vs Bun | p50 ms | p99 ms | lost |");
console.log("| --- | --- | --- | --- | --- | --- | --- |");
for (const r of rows) {
  const bun = rows.find((b) => b.target === "bun" && b.subscribers === r.subscribers);
  const ratio = bun ? (r.deliveries_per_cpu_s / bun.deliveries_per_cpu_s).toFixed(2) : "-";
  console.log(`| ${r.subscribers} | ${r.label} | ${r.deliveries_per_cpu_s} | ${ratio} | ${r.p50_ms} | ${r.p99_ms} | ${r.lost} |`);
}' "$results"
