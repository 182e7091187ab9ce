"""Turns the JSON lines of benches/density.sh and benches/echo.sh into the markdown tables of
docs/benchmarks.md, with ratios against Bun measured in the same run.

Usage: report.py density|echo RESULTS.jsonl
"""

import json
import sys

PEER = "bun"


def ratio(value, peer):
    return f"{value / peer:.2f}" if value and peer else "-"


def density(rows):
    print("| server | connections | RSS growth B/conn | slab growth B/conn (both ends) "
          "| SUnreclaim B/conn (both ends) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['server']} | {r['conns']} | {r['server_rss_bytes_per_conn']} "
              f"| {r['slab_bytes_per_conn_both_ends']} | {r['sunreclaim_bytes_per_conn_both_ends']} |")


def echo(rows):
    peer = {(r["conns"], r["size"]): r for r in rows if r["server"] == PEER}
    print("| server | conns | size B | msg/s | server CPU s | msg per server CPU-s | vs Bun "
          "| p50 us | p99 us |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        p = peer.get((r["conns"], r["size"]), {})
        eff = r["messages_per_server_cpu_second"]
        print(f"| {r['server']} | {r['conns']} | {r['size']} | {r['messages_per_second']} "
              f"| {r['server_cpu_seconds']} | {eff} "
              f"| {ratio(eff, p.get('messages_per_server_cpu_second'))} "
              f"| {r['p50_us']} | {r['p99_us']} |")


def main():
    kind, path = sys.argv[1], sys.argv[2]
    rows = [json.loads(line) for line in open(path) if line.strip()]
    {"density": density, "echo": echo}[kind](rows)


if __name__ == "__main__":
    main()
