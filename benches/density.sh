#!/usr/bin/env bash
# `make bench-density`: server RSS growth and kernel slab growth per idle WebSocket connection,
# for ringcast on each backend and for Bun, measured by the same client (benches/ws_client.py).
# CONNS defaults to 19000, the most one process holds under this box's 20000 open files.
source "$(dirname "$0")/lib.sh"

CONNS=${CONNS:-19000}
SERVERS=${SERVERS:-ringcast-uring ringcast-epoll bun}
RESULTS="$OUT_DIR/density.jsonl"
: >"$RESULTS"

case " $SERVERS " in *" ringcast-"*) build_ringcast ;; esac
case " $SERVERS " in *" bun "*) install_bun ;; esac
for server in $SERVERS; do
    start_server "$server"
    echo "bench: $server: opening $CONNS idle connections" >&2
    python3 benches/ws_client.py idle --port "$SERVER_PORT" --server-pid "$SERVER_PID" \
        --conns "$CONNS" | sed "s/^{/{\"server\": \"$server\", /" >>"$RESULTS"
    stop_server "$SERVER_PID"
    sleep 2
done
python3 benches/report.py density "$RESULTS"
