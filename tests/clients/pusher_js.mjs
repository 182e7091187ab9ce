// Real-client test: pusher-js (the browser/node client users already have) against a running
// ringcast, with an auth endpoint built on the official `pusher` server SDK, plus raw `ws`
// checks of the handshake-time close codes pusher-js hides.
//
// Usage: RINGCAST_PORT=8080 RINGCAST_APP_ID=.. RINGCAST_APP_KEY=.. RINGCAST_APP_SECRET=..
//        node tests/clients/pusher_js.mjs
// The server's app must allow client events and user authentication (the development app
// does). Exits 0 when every check passed, 1 otherwise; never runs longer than 60 s.
import { createServer } from "node:http";
import PusherServer from "pusher";
import Pusher from "pusher-js";
import WebSocket from "ws";

const host = process.env.RINGCAST_HOST ?? "127.0.0.1";
const port = Number(process.env.RINGCAST_PORT ?? 8080);
const app = {
  id: process.env.RINGCAST_APP_ID,
  key: process.env.RINGCAST_APP_KEY,
  secret: process.env.RINGCAST_APP_SECRET,
};
if (!app.id || !app.key || !app.secret) {
  console.error("set RINGCAST_APP_ID, RINGCAST_APP_KEY and RINGCAST_APP_SECRET");
  process.exit(2);
}
const deadline = setTimeout(() => {
  console.error("FAIL: timed out after 60 s");
  process.exit(1);
}, 60000);

const server = new PusherServer({ appId: app.id, key: app.key, secret: app.secret, host, port, useTLS: false });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let failures = 0;

/** Resolves with the first value `register` passes to its callback, or rejects after `ms`. */
function waitFor(what, register, ms = 5000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    register((...args) => {
      clearTimeout(t);
      resolve(args);
    });
  });
}

async function check(name, body) {
  try {
    await body();
    console.log(`ok   ${name}`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}: ${e.message}`);
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

// The auth endpoint an app would run: signs subscriptions and sign-ins with the server SDK.
function readForm(req) {
  return new Promise((resolve) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => resolve(new URLSearchParams(body)));
  });
}
const authServer = createServer(async (req, res) => {
  const form = await readForm(req);
  const socketId = form.get("socket_id");
  const user = form.get("user_id");
  let payload;
  if (req.url.startsWith("/pusher/auth")) {
    const channel = form.get("channel_name");
    const presence = channel.startsWith("presence-") ? { user_id: user, user_info: { name: `${user}!` } } : undefined;
    payload = server.authorizeChannel(socketId, channel, presence);
  } else {
    payload = server.authenticateUser(socketId, { id: user, name: user });
  }
  res.writeHead(200, { "content-type": "application/json" });
  res.end(JSON.stringify(payload));
});
await new Promise((r) => authServer.listen(0, "127.0.0.1", r));
const authBase = `http://127.0.0.1:${authServer.address().port}`;

function client(user) {
  return new Pusher(app.key, {
    cluster: "ringcast",
    wsHost: host,
    wsPort: port,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    channelAuthorization: { endpoint: `${authBase}/pusher/auth`, transport: "ajax", params: { user_id: user } },
    userAuthentication: { endpoint: `${authBase}/pusher/user-auth`, transport: "ajax", params: { user_id: user } },
  });
}

function connected(pusher) {
  if (pusher.connection.state === "connected") return Promise.resolve();
  return waitFor("connected", (cb) => pusher.connection.bind("connected", cb));
}

function subscribed(pusher, name) {
  const channel = pusher.subscribe(name);
  return waitFor(`subscription to ${name}`, (cb) => {
    channel.bind("pusher:subscription_succeeded", cb);
    channel.bind("pusher:subscription_error", (e) => cb(new Error(JSON.stringify(e))));
  }).then(([result]) => {
    if (result instanceof Error) throw result;
    return channel;
  });
}

const alice = client("alice");
const bob = client("bob");
const channels = {};

await check("both clients connect and get socket ids", async () => {
  await Promise.all([connected(alice), connected(bob)]);
  for (const p of [alice, bob]) assert(/^\d+\.\d+$/.test(p.connection.socket_id), `socket_id ${p.connection.socket_id}`);
  assert(alice.connection.socket_id !== bob.connection.socket_id, "socket ids differ");
});

await check("subscribe to public, private and presence channels", async () => {
  for (const name of ["chat", "private-room", "presence-lobby"]) {
    channels[`alice:${name}`] = await subscribed(alice, name);
  }
  const added = waitFor("member_added for bob", (cb) => channels["alice:presence-lobby"].bind("pusher:member_added", cb));
  for (const name of ["chat", "private-room", "presence-lobby"]) {
    channels[`bob:${name}`] = await subscribed(bob, name);
  }
  const [member] = await added;
  assert(member.id === "bob" && member.info.name === "bob!", `member_added ${JSON.stringify(member)}`);
  const members = channels["bob:presence-lobby"].members;
  assert(members.count === 2, `bob sees ${members.count} members`);
  assert(members.get("alice")?.info?.name === "alice!", "alice's user_info");
  assert(members.me?.id === "bob", "members.me");
});

await check("server SDK trigger reaches every subscriber", async () => {
  const a = waitFor("event at alice", (cb) => channels["alice:chat"].bind("news", cb));
  const b = waitFor("event at bob", (cb) => channels["bob:chat"].bind("news", cb));
  await server.trigger("chat", "news", { headline: "hello \"world\" \u00e9" });
  for (const [data] of await Promise.all([a, b])) assert(data.headline === "hello \"world\" \u00e9", JSON.stringify(data));
});

await check("socket_id exclusion skips the sender", async () => {
  let aliceGot = false;
  channels["alice:chat"].bind("excluded", () => (aliceGot = true));
  const b = waitFor("event at bob", (cb) => channels["bob:chat"].bind("excluded", cb));
  await server.trigger("chat", "excluded", { n: 1 }, { socket_id: alice.connection.socket_id });
  await b;
  await sleep(300);
  assert(!aliceGot, "the excluded socket received the event");
});

await check("client events reach others, never the sender", async () => {
  let echoed = false;
  channels["alice:private-room"].bind("client-typing", () => (echoed = true));
  const b = waitFor("client event at bob", (cb) => channels["bob:private-room"].bind("client-typing", cb));
  channels["alice:private-room"].trigger("client-typing", { typing: true });
  const [data] = await b;
  assert(data.typing === true, JSON.stringify(data));
  await sleep(300);
  assert(!echoed, "client event echoed to its sender");
});

await check("presence client events carry the sender's user_id", async () => {
  const b = waitFor("presence client event", (cb) => channels["bob:presence-lobby"].bind("client-wave", cb));
  channels["alice:presence-lobby"].trigger("client-wave", { hi: 1 });
  const [data, metadata] = await b;
  assert(data.hi === 1 && metadata?.user_id === "alice", JSON.stringify([data, metadata]));
});

await check("batch trigger delivers each event", async () => {
  const one = waitFor("batch event 1", (cb) => channels["bob:chat"].bind("b1", cb));
  const two = waitFor("batch event 2", (cb) => channels["bob:private-room"].bind("b2", cb));
  await server.triggerBatch([
    { channel: "chat", name: "b1", data: { n: 1 } },
    { channel: "private-room", name: "b2", data: { n: 2 } },
  ]);
  const [[d1], [d2]] = await Promise.all([one, two]);
  assert(d1.n === 1 && d2.n === 2, JSON.stringify([d1, d2]));
});

await check("channel queries see the subscriptions", async () => {
  const res = await server.get({ path: "/channels/presence-lobby", params: { info: "user_count,subscription_count" } });
  const body = await res.json();
  assert(body.occupied === true && body.user_count === 2 && body.subscription_count === 2, JSON.stringify(body));
  const users = await (await server.get({ path: "/channels/presence-lobby/users" })).json();
  const ids = users.users.map((u) => u.id).sort();
  assert(JSON.stringify(ids) === '["alice","bob"]', JSON.stringify(users));
});

await check("signed-in users receive server-to-user events", async () => {
  alice.signin();
  const timeout = sleep(5000).then(() => {
    throw new Error("signin timed out");
  });
  await Promise.race([alice.user.signinDonePromise, timeout]);
  assert(alice.user.user_data?.id === "alice", `user_data ${JSON.stringify(alice.user.user_data)}`);
  // pusher-js subscribes to #server-to-user-alice after signin_success; wait for it.
  for (let i = 0; i < 50 && !alice.user.serverToUserChannel?.subscribed; i++) await sleep(100);
  assert(alice.user.serverToUserChannel?.subscribed, "the server-to-user channel was not joined");
  const got = waitFor("user event", (cb) => alice.user.bind("greet", cb));
  await server.sendToUser("alice", "greet", { to: "alice" });
  const [data] = await got;
  assert(data.to === "alice", JSON.stringify(data));
});

await check("cache channels replay the last event, or say cache_miss", async () => {
  await server.trigger("cache-news", "latest", { v: 42 });
  const channel = bob.subscribe("cache-news");
  const [data] = await waitFor("cached event", (cb) => channel.bind("latest", cb));
  assert(data.v === 42, JSON.stringify(data));
  const empty = bob.subscribe("cache-empty");
  await waitFor("cache miss", (cb) => empty.bind("pusher:cache_miss", cb));
});

await check("a user leaving is announced once", async () => {
  const removed = waitFor("member_removed", (cb) => channels["alice:presence-lobby"].bind("pusher:member_removed", cb));
  bob.disconnect();
  const [member] = await removed;
  assert(member.id === "bob", JSON.stringify(member));
});

await check("terminate_connections closes the user's connections", async () => {
  const gone = waitFor("disconnect", (cb) => alice.connection.bind("state_change", (s) => s.current !== "connected" && cb(s)));
  await server.terminateUserConnections("alice");
  await gone;
  alice.disconnect();
});

/** Opens a raw WebSocket and resolves with the first message and the close code. */
function rawConnect(path) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${host}:${port}${path}`);
    let first;
    ws.on("message", (m) => (first ??= JSON.parse(m.toString())));
    ws.on("close", (code) => resolve({ first, code }));
    ws.on("error", reject);
  });
}

await check("handshake refusals use the Pusher close codes", async () => {
  const cases = [
    [`/app/${app.key}?protocol=6`, 4007],
    [`/app/${app.key}?protocol=x`, 4006],
    [`/app/${app.key}`, 4008],
    ["/app/no-such-key?protocol=7", 4001],
  ];
  for (const [path, code] of cases) {
    const { first, code: closed } = await rawConnect(path);
    assert(closed === code, `${path}: close ${closed}, expected ${code}`);
    assert(first?.event === "pusher:error" && first.data.code === code, `${path}: ${JSON.stringify(first)}`);
  }
});

clearTimeout(deadline);
authServer.close();
console.log(failures === 0 ? "all pusher-js checks passed" : `${failures} pusher-js check(s) failed`);
process.exit(failures === 0 ? 0 : 1);
