"""Cluster figures (docs/benchmarks.md, "Cluster"): four ringcast instances joined by a broker.

Each round starts a broker (redis-server or nats-server, loopback, nothing persisted) and four
release-built instances serving one app, measures three figures, and stops everything:

- latency: one public channel with a subscriber on each of instances 1 to 3; events published
  through the HTTP API of instance 0 on a fixed schedule (RATE per second for SECONDS), each
  carrying its intended send time; publish-to-delivery latency from that time, so a publisher
  that falls behind is charged for it;
- broker messages: 1,000 channels, channel c subscribed on instance c % 4 only (two
  connections per instance, 125 channels each); EVENTS events, event k to channel k % 1000
  through the API of an instance that does not hold it; ringcast_broker_messages_total summed
  over the instances per published event, minus the same idle window's background (lease
  renewals) measured just before;
- presence: a watcher on instance 1 joins a presence channel, then a member on instance 0
  (the watcher sees its member_added); instance 0 gets SIGKILL; time until the watcher sees member_removed (default presence lease).

Instances listen on four distinct ports (not one SO_REUSEPORT port) so that every connection is
on a known instance; what crosses the broker is the same. One JSON line per broker per round is
appended to OUT, rounds alternate brokers.

    .venv/bin/python benches/cluster.py --rounds 3 --out benches/results/cluster.jsonl
    .venv/bin/python benches/cluster.py --summarize benches/results/cluster.jsonl
"""

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

import websockets

INSTANCES = 4
CHANNELS = 1000
SUBS_PER_CONN = 125
APP_ID, KEY, SECRET = "bench", secrets.token_hex(10), secrets.token_hex(20)


def free_port():
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sign(secret, text):
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def events_request(body):
    """Path and query of a signed `POST /apps/{id}/events` (Pusher HTTP API signature)."""
    path = f"/apps/{APP_ID}/events"
    params = {
        "auth_key": KEY,
        "auth_timestamp": str(int(time.time())),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body).hexdigest(),
    }
    query = "&".join(f"{k}={params[k]}" for k in sorted(params))
    signature = sign(SECRET, "\n".join(["POST", path, query]))
    return f"{path}?{query}&auth_signature={signature}"


class Api:
    """One instance's events API; the server answers each request with `Connection: close`, so
    every publish opens its own connection (its handshake counts in the latency)."""

    def __init__(self, port):
        self.port = port

    async def publish(self, channel, data):
        body = json.dumps({"name": "bench", "channels": [channel], "data": data}).encode()
        head = (
            f"POST {events_request(body)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(head.encode() + body)
        answer = await reader.read()
        writer.close()
        if not answer.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(f"publish answered {answer[:200]!r}")


class Cluster:
    """A broker and INSTANCES ringcast processes on distinct ports, each with an admin port."""

    def __init__(self, broker, binary):
        self.broker, self.procs = broker, []
        bport = free_port()
        if broker == "redis":
            cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(bport), "--save", "",
                   "--appendonly", "no", "--loglevel", "warning"]
        else:
            cmd = ["nats-server", "--addr", "127.0.0.1", "--port", str(bport)]
        self.broker_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(bport)
        env = dict(os.environ, RINGCAST_APP_ID=APP_ID, RINGCAST_APP_KEY=KEY,
                   RINGCAST_APP_SECRET=SECRET, NO_COLOR="1")
        self.ports, self.admin = [], []
        for _ in range(INSTANCES):
            port, admin = free_port(), free_port()
            self.procs.append(subprocess.Popen(
                [binary, "serve", "--listen", f"127.0.0.1:{port}",
                 "--admin-listen", f"127.0.0.1:{admin}", "--broker", f"{broker}://127.0.0.1:{bport}",
                 "--max-messages-per-sec", "0", "--max-bytes-per-sec", "0"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self.ports.append(port)
            self.admin.append(admin)
        for admin in self.admin:
            deadline = time.monotonic() + 20
            while self.metric(admin, "ringcast_broker_up") != 1:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"instance on admin {admin} never joined the broker")
                time.sleep(0.1)

    def metric(self, admin, family, labels=""):
        """The sum of one metric family's samples whose labels contain `labels`."""
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read()
        except OSError:
            return None
        total = 0.0
        for line in text.decode().splitlines():
            if line.startswith(family) and labels in line and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def broker_messages(self, direction):
        return sum(self.metric(a, "ringcast_broker_messages_total", f'direction="{direction}"')
                   for a in self.admin)

    def url(self, i):
        return f"ws://127.0.0.1:{self.ports[i]}/app/{KEY}?protocol=7"

    def stop(self):
        for p in self.procs + [self.broker_proc]:
            if p.poll() is None:
                p.terminate()
        for p in self.procs + [self.broker_proc]:
            p.wait()


def wait_port(port):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


async def connect(url):
    """A Pusher connection and its socket id."""
    ws = await websockets.connect(url, max_queue=None)
    established = json.loads(await ws.recv())
    return ws, json.loads(established["data"])["socket_id"]


async def subscribe(ws, channels, auth=None):
    for channel, extra in ((c, auth(c) if auth else {}) for c in channels):
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel, **extra}}))
    pending = set(channels)
    while pending:
        msg = json.loads(await ws.recv())
        if msg["event"] == "pusher_internal:subscription_succeeded":
            pending.discard(msg["channel"])
        elif "error" in msg["event"]:
            raise RuntimeError(f"subscribe: {msg}")


def percentile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def latency(cluster, rate, seconds):
    """Publish-to-delivery latency across instances, in milliseconds."""
    subs = [(await connect(cluster.url(i)))[0] for i in range(1, INSTANCES)]
    for ws in subs:
        await subscribe(ws, ["bench-latency"])
    samples = []

    async def receive(ws):
        async for raw in ws:
            msg = json.loads(raw)
            if msg["event"] == "bench":
                samples.append((time.monotonic_ns() - json.loads(msg["data"])["t"]) / 1e6)

    receivers = [asyncio.create_task(receive(ws)) for ws in subs]
    api = Api(cluster.ports[0])
    count, start = int(rate * seconds), time.monotonic_ns() + 200_000_000
    for k in range(count):
        due = start + k * 1_000_000_000 // int(rate)
        delay = (due - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        await api.publish("bench-latency", json.dumps({"t": due, "k": k}))
    await asyncio.sleep(2)
    for task in receivers:
        task.cancel()
    for ws in subs:
        await ws.close()
    samples.sort()
    expected = count * (INSTANCES - 1)
    return {"published": count, "expected": expected, "delivered": len(samples),
            "p50_ms": round(percentile(samples, 0.50), 3), "p99_ms": round(percentile(samples, 0.99), 3),
            "max_ms": round(samples[-1], 3)}


async def broker_messages(cluster, events, rate):
    """Broker messages per published event with each channel held by exactly one instance."""
    conns = []
    for i in range(INSTANCES):
        mine = [f"bench-{c}" for c in range(CHANNELS) if c % INSTANCES == i]
        for part in range(0, len(mine), SUBS_PER_CONN):
            ws, _ = await connect(cluster.url(i))
            await subscribe(ws, mine[part:part + SUBS_PER_CONN])
            conns.append(ws)
    delivered = 0

    async def receive(ws):
        nonlocal delivered
        async for raw in ws:
            if json.loads(raw)["event"] == "bench":
                delivered += 1

    receivers = [asyncio.create_task(receive(ws)) for ws in conns]
    await asyncio.sleep(1)
    window = events / rate
    idle0 = (cluster.broker_messages("in"), cluster.broker_messages("out"))
    await asyncio.sleep(window)
    idle1 = (cluster.broker_messages("in"), cluster.broker_messages("out"))
    apis = [Api(p) for p in cluster.ports]
    start = time.monotonic()
    for k in range(events):
        channel = k % CHANNELS
        via = (channel % INSTANCES + 1 + k % (INSTANCES - 1)) % INSTANCES
        due = start + k / rate
        if due > time.monotonic():
            await asyncio.sleep(due - time.monotonic())
        await apis[via].publish(f"bench-{channel}", "{}")
    await asyncio.sleep(max(0.0, start + window - time.monotonic()))
    busy = (cluster.broker_messages("in"), cluster.broker_messages("out"))
    await asyncio.sleep(1)
    for task in receivers:
        task.cancel()
    for ws in conns:
        await ws.close()
    raw_in, raw_out = busy[0] - idle1[0], busy[1] - idle1[1]
    bg_in, bg_out = idle1[0] - idle0[0], idle1[1] - idle0[1]
    per_in = (raw_in - bg_in) / events
    return {"events": events, "delivered": delivered, "window_s": window,
            "in": raw_in, "out": raw_out, "idle_in": bg_in, "idle_out": bg_out,
            "in_per_event": round(per_in, 4), "out_per_event": round((raw_out - bg_out) / events, 4),
            "broadcast_in_per_event": INSTANCES - 1,
            "ratio_to_broadcast": round(per_in / (INSTANCES - 1), 4)}


async def presence_removal(cluster):
    """Seconds from SIGKILL of instance 0 to member_removed seen on instance 1."""
    def auth_for(socket_id, user):
        def auth(channel):
            data = json.dumps({"user_id": user})
            return {"auth": f"{KEY}:{sign(SECRET, f'{socket_id}:{channel}:{data}')}", "channel_data": data}
        return auth

    channel = "presence-bench"
    watcher, wid = await connect(cluster.url(1))
    await subscribe(watcher, [channel], auth_for(wid, "watcher"))
    victim, vid = await connect(cluster.url(0))
    await subscribe(victim, [channel], auth_for(vid, "victim"))
    while True:
        msg = json.loads(await asyncio.wait_for(watcher.recv(), timeout=30))
        if msg["event"] == "pusher_internal:member_added" and \
                json.loads(msg["data"])["user_id"] == "victim":
            break
    await asyncio.sleep(1)
    cluster.procs[0].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    while True:
        msg = json.loads(await asyncio.wait_for(watcher.recv(), timeout=120))
        if msg["event"] == "pusher_internal:member_removed" and \
                json.loads(msg["data"])["user_id"] == "victim":
            seconds = time.monotonic() - killed
            break
    await watcher.close()
    return {"seconds": round(seconds, 3)}


async def round_for(broker, binary, args):
    cluster = Cluster(broker, binary)
    try:
        lat = await latency(cluster, args.rate, args.seconds)
        msgs = await broker_messages(cluster, args.events, args.rate)
        pres = await presence_removal(cluster)
    finally:
        cluster.stop()
    return {"broker": broker, "instances": INSTANCES, "loadavg": os.getloadavg(),
            "latency": lat, "broker_messages": msgs, "presence_removed": pres}


def summarize(path):
    """Medians per broker over the rounds in `path`, as the table in docs/benchmarks.md."""
    rounds = [json.loads(line) for line in open(path) if line.strip()]
    print("| broker | rounds | latency p50 ms | latency p99 ms | delivered / expected "
          "| broker msgs in per event | out per event | vs broadcast (3 in) | member_removed s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for broker in dict.fromkeys(r["broker"] for r in rounds):
        mine = [r for r in rounds if r["broker"] == broker]

        def med(get):
            return statistics.median(get(r) for r in mine)

        lat = [r["latency"] for r in mine]
        print(f"| {broker} | {len(mine)} | {med(lambda r: r['latency']['p50_ms']):.2f} "
              f"| {med(lambda r: r['latency']['p99_ms']):.2f} "
              f"| {sum(x['delivered'] for x in lat)} / {sum(x['expected'] for x in lat)} "
              f"| {med(lambda r: r['broker_messages']['in_per_event']):.3f} "
              f"| {med(lambda r: r['broker_messages']['out_per_event']):.3f} "
              f"| {med(lambda r: r['broker_messages']['ratio_to_broadcast']):.3f} "
              f"| {med(lambda r: r['presence_removed']['seconds']):.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summarize", metavar="FILE", help="print the medians of FILE and exit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--brokers", default="redis,nats")
    parser.add_argument("--rate", type=float, default=200.0, help="publishes per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="latency run length")
    parser.add_argument("--events", type=int, default=2000, help="events for the message count")
    parser.add_argument("--binary", default="target/release/ringcast")
    parser.add_argument("--out", default="target/bench/cluster.jsonl")
    args = parser.parse_args()
    if args.summarize:
        return summarize(args.summarize)
    brokers = args.brokers.split(",")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    for r in range(args.rounds):
        for broker in brokers:
            result = asyncio.run(round_for(broker, args.binary, args))
            result["round"] = r + 1
            line = json.dumps(result)
            print(line, flush=True)
            with open(args.out, "a") as out:
                out.write(line + "\n")
        brokers.reverse()


if __name__ == "__main__":
    sys.exit(main())
