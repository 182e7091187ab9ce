"""Density client for docs/benchmarks.md, the same for every server measured: opens N WebSocket
connections, answers pings, and reports the server's RSS growth and the kernel's slab growth per
connection (read from /proc before and after). The echo benchmark uses `ringcast-loadgen echo`.

Prints one JSON object on stdout. Standard library only, so it runs on any Python 3.8+.
Frames are written by hand with a zero mask key (legal in RFC 6455 section 5.3; it makes client
work negligible without changing what the server must do).
"""

import argparse
import asyncio
import json
import resource
import struct
import sys
import time

# Handshakes in flight at once while opening connections: enough to open thousands per second,
# few enough to stay under the listen backlog.
CONNECT_CONCURRENCY = 64

HANDSHAKE = (
    "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def proc_status_kib(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def meminfo_kib(key):
    for line in open("/proc/meminfo"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def slab_bytes_by_cache():
    """Bytes held by each slab cache (num_objs * objsize), or {} where /proc/slabinfo is
    unreadable (it needs root)."""
    try:
        lines = open("/proc/slabinfo").read().splitlines()[2:]
    except OSError:
        return {}
    caches = {}
    for line in lines:
        fields = line.split()
        caches[fields[0]] = int(fields[2]) * int(fields[3])
    return caches


def top_growth(before, after, n, conns):
    """The n caches that grew most, in bytes per connection."""
    growth = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    top = sorted(growth.items(), key=lambda item: -item[1])[:n]
    return {name: round(delta / conns, 1) for name, delta in top if delta > 0}


def client_frame(opcode, payload):
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


async def read_frame(reader):
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    payload = await reader.readexactly(n) if n else b""
    return b0 & 0x0F, payload


async def open_ws(host, port, path):
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    writer.write(HANDSHAKE.format(path=path, host=f"{host}:{port}").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"handshake refused: {head[:80]!r}")
    return reader, writer


async def open_many(args):
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one():
        async with gate:
            return await open_ws(args.host, args.port, args.path)

    return await asyncio.gather(*(one() for _ in range(args.conns)))


async def answer_pings(reader, writer):
    """Keeps an idle connection alive: answers pings, returns when the server closes."""
    try:
        while True:
            opcode, payload = await read_frame(reader)
            if opcode == 0x9:
                writer.write(client_frame(0xA, payload))
            elif opcode == 0x8:
                return
    except (asyncio.IncompleteReadError, ConnectionError):
        return


async def idle(args):
    rss_before = proc_status_kib(args.server_pid, "VmRSS")
    slab_before = meminfo_kib("Slab")
    sunreclaim_before = meminfo_kib("SUnreclaim")
    caches_before = slab_bytes_by_cache()
    started = time.monotonic()
    conns = await open_many(args)
    opened_in = time.monotonic() - started
    keepers = [asyncio.ensure_future(answer_pings(r, w)) for r, w in conns]
    # Let the server finish whatever each accept started (buffers returned, timers armed).
    await asyncio.sleep(args.settle)
    rss_after = proc_status_kib(args.server_pid, "VmRSS")
    slab_after = meminfo_kib("Slab")
    sunreclaim_after = meminfo_kib("SUnreclaim")
    caches_after = slab_bytes_by_cache()
    n = args.conns
    result = {
        "mode": "idle",
        "conns": n,
        "open_seconds": round(opened_in, 2),
        "server_rss_kib_before": rss_before,
        "server_rss_kib_after": rss_after,
        "server_rss_bytes_per_conn": round((rss_after - rss_before) * 1024 / n, 1),
        "slab_bytes_per_conn_both_ends": round((slab_after - slab_before) * 1024 / n, 1),
        "sunreclaim_bytes_per_conn_both_ends": round(
            (sunreclaim_after - sunreclaim_before) * 1024 / n, 1
        ),
        # Where the kernel's bytes went, both ends of each loopback connection together.
        "slab_top_caches_bytes_per_conn": top_growth(caches_before, caches_after, 8, n),
    }
    for task in keepers:
        task.cancel()
    for _, writer in conns:
        writer.close()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["idle"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/echo")
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--conns", type=int, default=100)
    parser.add_argument("--settle", type=float, default=3.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.conns + 64 > hard:
        sys.exit(f"RLIMIT_NOFILE {hard} cannot hold {args.conns} connections")
    print(json.dumps(asyncio.run(idle(args))), flush=True)


if __name__ == "__main__":
    main()
