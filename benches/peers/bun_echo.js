// Peer server for `make bench-echo` and `make bench-density`: Bun's built-in WebSocket server
// (uWebSockets inside), echoing every message on /echo like ringcast's echo route.
//
// Usage: bun bun_echo.js PORT   (0 picks a free port; the chosen one is printed as listen=ADDR)

const port = Number(process.argv[2] ?? 0);

const server = Bun.serve({
  hostname: '127.0.0.1',
  port,
  fetch(req, server) {
    if (new URL(req.url).pathname === '/echo' && server.upgrade(req)) return undefined;
    return new Response('not found', { status: 404 });
  },
  websocket: {
    // The same limit as ringcast's default maximum message.
    maxPayloadLength: 64 * 1024,
    // Idle connections are kept; ringcast pings them instead of dropping them.
    idleTimeout: 0,
    perMessageDeflate: false,
    message(ws, message) {
      ws.send(message);
    },
  },
});

console.error(`bun ${Bun.version} listen=127.0.0.1:${server.port}`);
