#!/usr/bin/env bash
# `make bench-echo`: echo messages per server CPU-second and latency, ringcast on io_uring and on
# epoll against Bun, driven by one client (`ringcast-loadgen echo`) for all, in one run.
# Closed loop (each connection sends its next message when the echo of the last one arrives) at
# 100 and 1000 connections, 32 B and 1 KiB, measures throughput and CPU cost; open loop at
# OPEN_RATE messages/s per connection on 1000 connections measures latency at the same offered
# load for every server. Every server runs for the whole run (idle ones cost nothing) and each
# round measures them back to back for every case, so a change of load on the box during the run
# hits every server alike; the report takes the median of ROUNDS. SECONDS_PER_RUN sets each run.
source "$(dirname "$0")/lib.sh"

SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
ROUNDS=${ROUNDS:-3}
# 20 messages/s on each of 1000 connections: 20,000 a second, well under what every server
# echoes closed-loop on this box, so the latency is the server's and not a queue's.
OPEN_RATE=${OPEN_RATE:-20}
SERVERS=${SERVERS:-ringcast-uring ringcast-epoll bun}
RESULTS="$OUT_DIR/echo.jsonl"
: >"$RESULTS"

build_loadgen
case " $SERVERS " in *" ringcast-"*) build_ringcast ;; esac
case " $SERVERS " in *" bun "*) install_bun ;; esac
declare -A PID PORT
for server in $SERVERS; do
    start_server "$server"
    PID[$server]=$SERVER_PID
    PORT[$server]=$SERVER_PORT
done

# run_case SERVER ROUND CONNS SIZE MODE [LOADGEN ARGS...]: one loadgen run, one JSON line. The
# server's CPU is read around the whole run, so it includes the handshakes (well under 1% of it
# at these lengths); connections open at 20,000/s so the ramp is at most 50 ms of the run.
run_case() {
    local server=$1 round=$2 conns=$3 size=$4 mode=$5 cpu_before cpu_after
    shift 5
    echo "bench: round $round: $server: $conns connections, $size B, $mode" >&2
    cpu_before=$(server_cpu_ticks "${PID[$server]}")
    target/release/ringcast-loadgen echo --url "ws://127.0.0.1:${PORT[$server]}/echo" \
        --conns "$conns" --rate 20000 --size "$size" --duration "${SECONDS_PER_RUN}s" \
        --drain 500ms --json "$OUT_DIR/echo-run.json" "$@" >/dev/null
    cpu_after=$(server_cpu_ticks "${PID[$server]}")
    python3 benches/report.py echo-row "$OUT_DIR/echo-run.json" "$server" "$round" "$conns" \
        "$size" "$mode" "$SECONDS_PER_RUN" "$((cpu_after - cpu_before))" >>"$RESULTS"
}

for round in $(seq 1 "$ROUNDS"); do
    for conns in 100 1000; do
        for size in 32 1024; do
            for server in $SERVERS; do
                run_case "$server" "$round" "$conns" "$size" closed
            done
        done
    done
    for size in 32 1024; do
        for server in $SERVERS; do
            run_case "$server" "$round" 1000 "$size" "open ${OPEN_RATE}/s/conn" \
                --msg-rate "$OPEN_RATE"
        done
    done
done
stop_all
python3 benches/report.py echo "$RESULTS"
