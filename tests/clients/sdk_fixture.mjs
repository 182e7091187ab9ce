// Writes fixtures/node_sdk.json: HTTP API requests and auth values produced by the real
// `pusher` server SDK (npm), which the Rust unit tests in src/pusher/api verify against.
//
// The SDK sends its requests to a recorder on 127.0.0.1 that answers every one with `{}`.
// Regenerate with `node tests/clients/sdk_fixture.mjs` after `npm install` in tests/clients.
import { createServer } from "node:http";
import { writeFileSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import Pusher from "pusher";

const here = dirname(fileURLToPath(import.meta.url));
const app = { id: "4321", key: "fixture-key", secret: "fixture-secret" };
const recorded = [];
let current = "";

const server = createServer((req, res) => {
  let body = "";
  req.setEncoding("utf8");
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    const timestamp = Number(new URL(req.url, "http://x").searchParams.get("auth_timestamp"));
    recorded.push({ name: current, method: req.method, target: req.url, body, timestamp });
    res.writeHead(200, { "content-type": "application/json" });
    res.end("{}");
  });
});
server.listen(0, "127.0.0.1", async () => {
  const timer = setTimeout(() => process.exit(1), 20000);
  try {
    const { port } = server.address();
    const pusher = new Pusher({
      appId: app.id, key: app.key, secret: app.secret, host: "127.0.0.1", port, useTLS: false,
    });
    const calls = [
      ["trigger", () => pusher.trigger(["my-channel", "presence-room"], "my-event",
        { message: 'hello, "world" \u00e9 & ok' }, { socket_id: "1234.5678", info: "subscription_count" })],
      ["trigger_string", () => pusher.trigger("private-a", "e", "plain string")],
      ["send_to_user", () => pusher.sendToUser("user-1", "greet", { hi: 1 })],
      ["trigger_batch", () => pusher.triggerBatch([
        { channel: "a", name: "e1", data: { n: 1 } },
        { channel: "presence-room", name: "e2", data: "two", info: "user_count,subscription_count" },
      ])],
      ["channels_info", () => pusher.get({ path: "/channels",
        params: { filter_by_prefix: "presence-", info: "user_count,subscription_count" } })],
      ["channels_info_plain", () => pusher.get({ path: "/channels" })],
      ["channel_info", () => pusher.get({ path: "/channels/presence-room", params: { info: "user_count" } })],
      ["users_info", () => pusher.get({ path: "/channels/presence-room/users" })],
      ["terminate", () => pusher.terminateUserConnections("user-1")],
    ];
    for (const [name, call] of calls) {
      current = name;
      await call();
    }
    const channelData = { user_id: "u1", user_info: { name: "Ann \u00e9" } };
    const version = JSON.parse(readFileSync(join(here, "node_modules/pusher/package.json"), "utf8")).version;
    const out = {
      sdk: `pusher (npm) ${version}`,
      app,
      requests: recorded,
      channel_auths: [
        { socket_id: "1.2", channel: "private-a", response: pusher.authorizeChannel("1.2", "private-a") },
        { socket_id: "1.2", channel: "presence-room",
          response: pusher.authorizeChannel("1.2", "presence-room", channelData) },
      ],
      signin: { socket_id: "1.2", response: pusher.authenticateUser("1.2", { id: "u1", name: "Ann" }) },
    };
    writeFileSync(join(here, "fixtures", "node_sdk.json"), JSON.stringify(out, null, 1) + "\n");
    console.error("wrote fixtures/node_sdk.json");
  } catch (e) {
    console.error(e);
    process.exitCode = 1;
  } finally {
    clearTimeout(timer);
    server.close();
  }
});
