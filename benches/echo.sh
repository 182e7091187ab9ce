#!/usr/bin/env bash
# `make bench-echo`: echo messages per server CPU-second and latency for 100 and 1000
# connections at 32 B and 1 KiB, ringcast on io_uring and on epoll against Bun, one client
# (benches/ws_client.py) for all, in one run. Every server runs for the whole run (idle ones
# cost nothing) and each round measures them back to back for every case, so a change of load
# on the box during the run hits every server alike; the report takes the median of ROUNDS.
# SECONDS_PER_RUN sets each measured window.
source "$(dirname "$0")/lib.sh"

SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
ROUNDS=${ROUNDS:-3}
SERVERS=${SERVERS:-ringcast-uring ringcast-epoll bun}
RESULTS="$OUT_DIR/echo.jsonl"
: >"$RESULTS"

case " $SERVERS " in *" ringcast-"*) build_ringcast ;; esac
case " $SERVERS " in *" bun "*) install_bun ;; esac
declare -A PID PORT
for server in $SERVERS; do
    start_server "$server"
    PID[$server]=$SERVER_PID
    PORT[$server]=$SERVER_PORT
done
for round in $(seq 1 "$ROUNDS"); do
    for conns in 100 1000; do
        for size in 32 1024; do
            for server in $SERVERS; do
                echo "bench: round $round: $server: $conns connections, $size B" >&2
                python3 benches/ws_client.py echo --port "${PORT[$server]}" \
                    --server-pid "${PID[$server]}" --conns "$conns" --size "$size" \
                    --seconds "$SECONDS_PER_RUN" |
                    sed "s/^{/{\"server\": \"$server\", \"round\": $round, /" >>"$RESULTS"
            done
        done
    done
done
stop_all
python3 benches/report.py echo "$RESULTS"
