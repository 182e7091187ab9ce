#!/usr/bin/env bash
# The load generator's own density and connect rate: one worker process opens CONNS idle
# connections to a release ringcast on loopback as fast as it can (--rate far above what either
# side can do) and holds them; prints the loadgen's RSS growth per connection and connects/s.
# Knobs: CONNS (default 19000, what one process holds under a 20000 open-files limit), BACKEND
# (auto, uring, epoll), DURATION (whole run, default 20s), SRC (source addresses, spread so that
# per-IP limits of the server do not bite).
set -euo pipefail
cd "$(dirname "$0")/../.."
CONNS=${CONNS:-19000}
BACKEND=${BACKEND:-auto}
DURATION=${DURATION:-20s}
SRC=${SRC:-127.0.0.2-127.0.0.40}
mkdir -p target/bench
cargo build --release --locked --bin ringcast --bin ringcast-loadgen
log=$(mktemp)
target/release/ringcast serve --listen 127.0.0.1:0 >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -f "$log"' EXIT
addr=""
for _ in $(seq 200); do
    addr=$(grep -o 'listen=[0-9.]*:[0-9]*' "$log" | head -1 | cut -d= -f2 || true)
    [ -n "$addr" ] && break
    sleep 0.1
done
[ -n "$addr" ] || { echo "ringcast did not start:"; cat "$log"; exit 1; }
json="target/bench/loadgen-idle-$BACKEND.json"
target/release/ringcast-loadgen idle --url "ws://$addr/echo" --conns "$CONNS" --rate 1000000 \
    --procs 1 --src "$SRC" --backend "$BACKEND" --duration "$DURATION" --json "$json"
python3 - "$json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"loadgen {r['backend']}: {r['conns_open_at_end']} connections in {r['workers']} worker, "
      f"{r['connects_per_s']:.0f} connects/s, RSS {r['rss_bytes'] / 2**20:.1f} MiB, "
      f"{r['rss_per_conn_bytes']:.0f} bytes per connection")
PY
