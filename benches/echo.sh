#!/usr/bin/env bash
# `make bench-echo`: echo messages per server CPU-second and latency for 100 and 1000
# connections at 32 B and 1 KiB, ringcast on io_uring and on epoll against Bun, one client
# (benches/ws_client.py) for all, in one run. SECONDS_PER_RUN sets each measured window.
source "$(dirname "$0")/lib.sh"

SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
SERVERS=${SERVERS:-ringcast-uring ringcast-epoll bun}
RESULTS="$OUT_DIR/echo.jsonl"
: >"$RESULTS"

case " $SERVERS " in *" ringcast-"*) build_ringcast ;; esac
case " $SERVERS " in *" bun "*) install_bun ;; esac
for server in $SERVERS; do
    start_server "$server"
    for conns in 100 1000; do
        for size in 32 1024; do
            echo "bench: $server: $conns connections, $size B, ${SECONDS_PER_RUN}s" >&2
            python3 benches/ws_client.py echo --port "$SERVER_PORT" --server-pid "$SERVER_PID" \
                --conns "$conns" --size "$size" --seconds "$SECONDS_PER_RUN" |
                sed "s/^{/{\"server\": \"$server\", /" >>"$RESULTS"
        done
    done
    stop_server
done
python3 benches/report.py echo "$RESULTS"
