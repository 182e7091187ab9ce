// Fan-out benchmark client: N WebSocket subscribers of one channel, then P publishes one after
// another (each waits for all N deliveries), each carrying its send time. Reports deliveries
// per server CPU-second (utime+stime of the server process over the publish phase, from
// /proc/PID/stat) and publish-to-delivery p50/p99 measured here. A delivery that does not
// arrive within 10 s is lost, and any loss fails the run (exit 1).
// Usage: node client.mjs ringcast|bun PORT SERVER_PID N P LABEL
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import WebSocket from "ws";
import Pusher from "pusher";

const [target, port, pid, n, p, label] = process.argv.slice(2);
const N = Number(n);
const P = Number(p);
const key = process.env.RINGCAST_APP_KEY;
const pusher = new Pusher({
  appId: process.env.RINGCAST_APP_ID, key, secret: process.env.RINGCAST_APP_SECRET,
  host: "127.0.0.1", port, useTLS: false,
});

/** Server CPU seconds so far (user + system, all threads). */
function cpu() {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // clock ticks, USER_HZ = 100
}

let current = -1;
let got = 0;
let latencies = [];
let waiter = null;
function onDelivery(seq, sentAt) {
  if (seq !== current) return;
  latencies.push(performance.now() - sentAt);
  got += 1;
  if (got === N && waiter) waiter();
}

function open(i) {
  return new Promise((resolve, reject) => {
    const url = target === "bun"
      ? `ws://127.0.0.1:${port}/`
      : `ws://127.0.0.1:${port}/app/${key}?protocol=7`;
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.on("error", reject);
    ws.on("message", (raw) => {
      const text = raw.toString();
      if (target === "bun") {
        if (text === "ready") return resolve(ws);
        const { seq, t } = JSON.parse(text);
        return onDelivery(seq, t);
      }
      const msg = JSON.parse(text);
      if (msg.event === "pusher:connection_established") {
        ws.send(JSON.stringify({ event: "pusher:subscribe", data: { channel: "bench" } }));
      } else if (msg.event === "pusher_internal:subscription_succeeded") {
        resolve(ws);
      } else if (msg.event === "tick") {
        const { seq, t } = JSON.parse(msg.data);
        onDelivery(seq, t);
      }
    });
  });
}

const sockets = [];
for (let i = 0; i < N; i += 500) {
  const batch = [];
  for (let j = i; j < Math.min(N, i + 500); j++) batch.push(open(j));
  sockets.push(...(await Promise.all(batch)));
}

async function publish(seq) {
  const payload = { seq, t: performance.now(), pad: "x".repeat(64) };
  if (target === "bun") {
    await fetch(`http://127.0.0.1:${port}/publish`, { method: "POST", body: JSON.stringify(payload) });
  } else {
    await pusher.trigger("bench", "tick", payload);
  }
}

let lost = 0;
const cpu0 = cpu();
const wall0 = performance.now();
for (let seq = 0; seq < P; seq++) {
  current = seq;
  got = 0;
  const done = new Promise((resolve) => {
    waiter = resolve;
    setTimeout(resolve, 10000);
  });
  await publish(seq);
  await done;
  waiter = null;
  lost += N - got;
}
const cpuUsed = cpu() - cpu0;
const wall = (performance.now() - wall0) / 1000;
latencies.sort((a, b) => a - b);
const pct = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN;
const deliveries = P * N - lost;
const result = {
  label, target, subscribers: N, publishes: P, deliveries, lost,
  server_cpu_s: Number(cpuUsed.toFixed(3)), wall_s: Number(wall.toFixed(3)),
  deliveries_per_cpu_s: Math.round(deliveries / Math.max(cpuUsed, 0.01)),
  p50_ms: Number(pct(0.5).toFixed(2)), p99_ms: Number(pct(0.99).toFixed(2)),
};
console.log(JSON.stringify(result));
for (const ws of sockets) ws.terminate();
process.exit(lost > 0 ? 1 : 0);
