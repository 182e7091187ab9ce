# Shared by the benchmark scripts: builds what they run and starts and stops the servers they
# measure. Every server started here is stopped by `stop_server` or by the EXIT trap.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT_DIR=target/bench
mkdir -p "$OUT_DIR"
SERVER_PID=""
SERVER_PORT=""

# Logs are parsed, so no colour escapes in them.
export NO_COLOR=1

# The connection counts need more than the usual 1024 descriptors; never above the hard limit.
ulimit -n "$(ulimit -Hn)"

STARTED_PIDS=()

# stop_server PID: stops one server started here (SIGTERM, then waits for it).
stop_server() {
    local pid=$1
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    fi
}

stop_all() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do stop_server "$pid"; done
}
trap stop_all EXIT

build_ringcast() {
    echo "bench: cargo build --release --bin ringcast" >&2
    cargo build --release --locked --bin ringcast >&2
}

build_loadgen() {
    echo "bench: cargo build --release --bin ringcast-loadgen" >&2
    cargo build --release --locked -p ringcast-loadgen >&2
}

# server_cpu_ticks PID: the process's utime + stime in clock ticks (fields 14 and 15 of
# /proc/PID/stat, proc(5)), counted after the ")" that ends the command name.
server_cpu_ticks() {
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) }
    awk '{ print $12 + $13 }' <<<"$stat"
}

install_bun() {
    local stamp
    stamp=$(sha256sum benches/peers/package-lock.json | cut -d' ' -f1)
    if [ "$(cat benches/peers/node_modules/.ringcast-stamp 2>/dev/null)" != "$stamp" ]; then
        echo "bench: npm ci in benches/peers (bun)" >&2
        (cd benches/peers && npm ci --no-audit --no-fund >&2)
        echo "$stamp" > benches/peers/node_modules/.ringcast-stamp
    fi
}

# wait_listen LOG: waits for the `listen=127.0.0.1:PORT` line and sets SERVER_PORT.
wait_listen() {
    local log=$1 i
    for i in $(seq 1 200); do
        SERVER_PORT=$(sed -e 's/\x1b\[[0-9;]*[a-zA-Z]//g' "$log" |
            sed -n 's/.*listen=127\.0\.0\.1:\([0-9]*\).*/\1/p' | head -n1)
        [ -n "$SERVER_PORT" ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log" >&2; echo "bench: server died" >&2; exit 1; }
        sleep 0.05
    done
    cat "$log" >&2
    echo "bench: no listen line in $log" >&2
    exit 1
}

# start_server NAME: starts ringcast-uring, ringcast-epoll or bun on a free loopback port, with
# one event-loop thread each so the comparison is core for core.
start_server() {
    local name=$1 log="$OUT_DIR/$1.log"
    case "$name" in
        ringcast-uring | ringcast-epoll)
            # No per-connection message or byte rate limit: Bun has none, and a closed-loop
            # client may exceed the defaults on a fast box.
            target/release/ringcast serve --listen 127.0.0.1:0 --shards 1 \
                --backend "${name#ringcast-}" --max-messages-per-sec 0 \
                --max-bytes-per-sec 0 2>"$log" &
            ;;
        bun)
            benches/peers/node_modules/.bin/bun benches/peers/bun_echo.js 0 2>"$log" &
            ;;
        *) echo "bench: unknown server $name" >&2; exit 1 ;;
    esac
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
    wait_listen "$log"
    echo "bench: $name pid $SERVER_PID port $SERVER_PORT" >&2
}
