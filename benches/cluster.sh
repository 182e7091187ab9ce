#!/usr/bin/env bash
# `make cluster`: a local cluster in the foreground. Starts a broker (redis-server or
# nats-server, loopback, nothing persisted) and N release-built ringcast instances sharing one
# port through SO_REUSEPORT, each with its own admin port; Ctrl-C stops them all.
#
#   N=4 BROKER=redis|nats PORT=8080 BROKER_PORT=free bash benches/cluster.sh
#
# Every instance serves the same development app: RINGCAST_APP_ID, _KEY and _SECRET from the
# environment, or random ones generated here and printed.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-4}
BROKER=${BROKER:-redis}
PORT=${PORT:-8080}
BROKER_PORT=${BROKER_PORT:-}

# free_port: a loopback TCP port nothing listens on right now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case "$BROKER" in
    redis | nats) ;;
    *) echo "cluster: BROKER must be redis or nats, not $BROKER" >&2; exit 64 ;;
esac
[ "$N" -ge 1 ] 2>/dev/null || { echo "cluster: N must be a positive number, not $N" >&2; exit 64; }
[ -n "$BROKER_PORT" ] || BROKER_PORT=$(free_port)

export RINGCAST_APP_ID=${RINGCAST_APP_ID:-local}
export RINGCAST_APP_KEY=${RINGCAST_APP_KEY:-$(python3 -c 'import secrets; print(secrets.token_hex(10))')}
export RINGCAST_APP_SECRET=${RINGCAST_APP_SECRET:-$(python3 -c 'import secrets; print(secrets.token_hex(20))')}

cargo build --release --locked --bin ringcast >&2

# Children run in their own session (setsid), so a terminal's Ctrl-C reaches only this script,
# which then stops each of them once with SIGTERM (a second signal would cut ringcast's drain):
# the instances first, the broker once they are gone.
PIDS=()
BROKER_PID=""
stop_all() {
    trap - INT TERM EXIT
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi
}
trap stop_all EXIT
trap 'exit 130' INT TERM

if [ "$BROKER" = redis ]; then
    setsid redis-server --bind 127.0.0.1 --port "$BROKER_PORT" --save '' --appendonly no \
        --loglevel warning &
else
    setsid nats-server --addr 127.0.0.1 --port "$BROKER_PORT" &
fi
BROKER_PID=$!
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$BROKER_PORT") 2>/dev/null && break
    sleep 0.05
done

echo "cluster: $BROKER broker on 127.0.0.1:$BROKER_PORT"
echo "cluster: app id $RINGCAST_APP_ID, key $RINGCAST_APP_KEY, secret $RINGCAST_APP_SECRET"
echo "cluster: clients ws://127.0.0.1:$PORT/app/$RINGCAST_APP_KEY?protocol=7, API http://127.0.0.1:$PORT"
for i in $(seq 1 "$N"); do
    admin=$(free_port)
    setsid target/release/ringcast serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$admin" \
        --broker "$BROKER://127.0.0.1:$BROKER_PORT" &
    PIDS+=("$!")
    echo "cluster: instance $i pid $! admin http://127.0.0.1:$admin (/metrics, /health)"
done
echo "cluster: Ctrl-C stops the broker and every instance"
wait -n "$BROKER_PID" "${PIDS[@]}"
echo "cluster: a process exited; stopping the rest" >&2
exit 1
