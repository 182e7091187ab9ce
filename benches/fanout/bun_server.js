// Bun's built-in topic pub/sub (uWebSockets) as the fan-out baseline: every WebSocket
// subscribes to one topic on open; POST /publish publishes the request body to it once.
// Usage: bun bun_server.js PORT
const port = Number(process.argv[2] ?? 9001);
const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  async fetch(req, server) {
    const url = new URL(req.url);
    if (url.pathname === "/publish") {
      server.publish("bench", await req.text());
      return new Response("{}");
    }
    if (server.upgrade(req)) return;
    return new Response("not found", { status: 404 });
  },
  websocket: {
    open(ws) {
      ws.subscribe("bench");
      ws.send("ready");
    },
    message() {},
  },
});
console.error(`bun listening ${server.port} pid=${process.pid}`);
