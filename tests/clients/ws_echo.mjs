// Echo check with the npm `ws` client.
//
// Usage: node ws_echo.mjs ws://HOST:PORT/echo
//
// Connects (offering permessage-deflate, as `ws` does by default), echoes text, binary, a large
// and a fragmented message, pings, then closes with 1000 and checks the server's answer. Prints
// "ok: echo and close" and exits 0 on success; exits non-zero on any failure.

import WebSocket from 'ws';

// Bounds the whole run so a silent server fails the check instead of hanging it.
const TIMEOUT_MS = 20_000;

const url = process.argv[2];
if (!url) {
  console.error('usage: node ws_echo.mjs ws://HOST:PORT/echo');
  process.exit(2);
}

const timer = setTimeout(() => {
  console.error('timed out');
  process.exit(3);
}, TIMEOUT_MS);

const ws = new WebSocket(url);
const inbox = [];
const waiters = [];
ws.on('message', (data, isBinary) => {
  const message = { data, isBinary };
  const waiter = waiters.shift();
  if (waiter) waiter(message);
  else inbox.push(message);
});
ws.on('error', (err) => {
  console.error(`error: ${err.message}`);
  process.exit(1);
});

function next() {
  return new Promise((resolve) => {
    const message = inbox.shift();
    if (message) resolve(message);
    else waiters.push(resolve);
  });
}

function check(condition, what) {
  if (!condition) {
    console.error(`failed: ${what}`);
    process.exit(1);
  }
}

async function echo(payload, binary, what) {
  ws.send(payload, { binary });
  const { data, isBinary } = await next();
  check(isBinary === binary, `${what}: binary flag`);
  check(Buffer.compare(Buffer.from(data), Buffer.from(payload)) === 0, `${what}: payload`);
}

ws.on('open', async () => {
  await echo('hello from ws', false, 'text echo');
  await echo(Buffer.from(Array.from({ length: 16384 }, (_, i) => i % 256)), true, 'binary echo');
  await echo('é'.repeat(30_000), false, 'large text echo');

  // fin: false sends fragments; the echo comes back as one message.
  ws.send('frag', { fin: false });
  ws.send('men', { fin: false });
  ws.send('ted', { fin: true });
  const { data } = await next();
  check(data.toString() === 'fragmented', 'fragmented echo');

  await new Promise((resolve) => {
    ws.once('pong', (payload) => {
      check(payload.toString() === 'are you there', 'pong payload');
      resolve();
    });
    ws.ping('are you there');
  });

  ws.on('close', (code) => {
    check(code === 1000, `close code ${code}`);
    clearTimeout(timer);
    console.log(`ok: echo and close (${url})`);
  });
  ws.close(1000, 'done');
});
