"""Turns the JSON lines of benches/density.sh and benches/echo.sh into the markdown tables of
docs/benchmarks.md, with ratios against Bun measured in the same run.

Usage: report.py density|echo RESULTS.jsonl
       report.py echo-row LOADGEN.json SERVER ROUND CONNS SIZE MODE SECONDS CPU_TICKS
         (one JSON line for echo.sh from a `ringcast-loadgen echo --json` report and the
         server's CPU ticks over that run)
"""

import json
import os
import sys

PEER = "bun"

# Clock ticks per second for /proc/PID/stat utime and stime (proc(5)).
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def ratio(value, peer):
    return f"{value / peer:.2f}" if value and peer else "-"


def density(rows):
    print("| server | connections | RSS growth B/conn | slab growth B/conn (both ends) "
          "| SUnreclaim B/conn (both ends) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['server']} | {r['conns']} | {r['server_rss_bytes_per_conn']} "
              f"| {r['slab_bytes_per_conn_both_ends']} | {r['sunreclaim_bytes_per_conn_both_ends']} |")
    print()
    print("Slab caches that grew most, bytes per connection (both ends):")
    print()
    for r in rows:
        top = ", ".join(f"{name} {b}" for name, b in r.get("slab_top_caches_bytes_per_conn", {}).items())
        print(f"- {r['server']}: {top or 'unreadable (needs root)'}")


def median_by_case(rows):
    """One row per (server, conns, size): the median round by messages per server CPU-second,
    so its latency figures come from the same round."""
    cases = {}
    for r in rows:
        cases.setdefault((r["server"], r["mode"], r["conns"], r["size"]), []).append(r)
    merged = []
    for runs in cases.values():
        runs.sort(key=lambda r: r["messages_per_server_cpu_second"] or 0)
        row = dict(runs[len(runs) // 2])
        row["rounds"] = len(runs)
        merged.append(row)
    order = {name: i for i, name in enumerate(dict.fromkeys(r["server"] for r in rows))}
    modes = {name: i for i, name in enumerate(dict.fromkeys(r["mode"] for r in rows))}
    return sorted(merged, key=lambda r: (modes[r["mode"]], r["conns"], r["size"], order[r["server"]]))


def echo(rows):
    rows = median_by_case(rows)
    peer = {(r["mode"], r["conns"], r["size"]): r for r in rows if r["server"] == PEER}
    print("| loop | conns | size B | server | msg/s | server CPU s | msg per server CPU-s "
          "| vs Bun | p50 us | p99 us |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        p = peer.get((r["mode"], r["conns"], r["size"]), {})
        eff = r["messages_per_server_cpu_second"]
        print(f"| {r['mode']} | {r['conns']} | {r['size']} | {r['server']} "
              f"| {r['messages_per_second']} "
              f"| {r['server_cpu_seconds']} | {eff} "
              f"| {ratio(eff, p.get('messages_per_server_cpu_second'))} "
              f"| {r['p50_us']} | {r['p99_us']} |")


def echo_row(path, server, round_, conns, size, mode, seconds, cpu_ticks):
    report = json.load(open(path))
    received = report["msgs_received"]
    cpu = int(cpu_ticks) / CLOCK_TICKS
    row = {
        "server": server,
        "round": int(round_),
        "mode": mode,
        "conns": int(conns),
        "size": int(size),
        "conns_opened": report["conns_opened"],
        "messages": received,
        "messages_per_second": round(received / float(seconds)),
        "server_cpu_seconds": round(cpu, 2),
        "messages_per_server_cpu_second": round(received / cpu) if cpu else None,
        "p50_us": report["latency_us"]["p50"],
        "p99_us": report["latency_us"]["p99"],
    }
    print(json.dumps(row))


def main():
    if sys.argv[1] == "echo-row":
        echo_row(*sys.argv[2:])
        return
    kind, path = sys.argv[1], sys.argv[2]
    rows = [json.loads(line) for line in open(path) if line.strip()]
    {"density": density, "echo": echo}[kind](rows)


if __name__ == "__main__":
    main()
