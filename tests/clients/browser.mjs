// Real-browser test: headless Chromium loads a page that uses pusher-js (the web build) to
// subscribe to a channel on a running ringcast; the official `pusher` server SDK then triggers
// an event, and the page reports what it received back to this script.
//
// Usage: RINGCAST_PORT=8080 RINGCAST_APP_ID=.. RINGCAST_APP_KEY=.. RINGCAST_APP_SECRET=..
//        node tests/clients/browser.mjs        (CHROMIUM=path overrides /usr/bin/chromium)
// Exits 0 when the page received the event, 1 otherwise; never runs longer than 45 s.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import PusherServer from "pusher";

const here = dirname(fileURLToPath(import.meta.url));
const host = process.env.RINGCAST_HOST ?? "127.0.0.1";
const port = Number(process.env.RINGCAST_PORT ?? 8080);
const app = { id: process.env.RINGCAST_APP_ID, key: process.env.RINGCAST_APP_KEY, secret: process.env.RINGCAST_APP_SECRET };
if (!app.id || !app.key || !app.secret) {
  console.error("set RINGCAST_APP_ID, RINGCAST_APP_KEY and RINGCAST_APP_SECRET");
  process.exit(2);
}
const server = new PusherServer({ appId: app.id, key: app.key, secret: app.secret, host, port, useTLS: false });
const pusherJs = readFileSync(join(here, "node_modules/pusher-js/dist/web/pusher.min.js"));
const text = "hello from the server SDK \u2713";

const page = `<!doctype html><meta charset="utf-8"><title>waiting</title>
<script src="/pusher.min.js"></script>
<script>
  const pusher = new Pusher(${JSON.stringify(app.key)}, {
    cluster: "ringcast", wsHost: ${JSON.stringify(host)}, wsPort: ${port}, forceTLS: false,
    enabledTransports: ["ws"], disableStats: true,
  });
  const channel = pusher.subscribe("browser-chat");
  channel.bind("pusher:subscription_succeeded", () => fetch("/ready", { method: "POST" }));
  channel.bind("hello", (data) => {
    document.title = "received";
    fetch("/result", { method: "POST", body: JSON.stringify(data) });
  });
</script>`;

let chromium;
let profile;
function finish(code, message) {
  console.log(message);
  if (chromium) chromium.kill("SIGKILL");
  // Chromium may still be writing its profile for a moment after SIGKILL is sent.
  if (profile) {
    try {
      rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    } catch (e) {
      console.error(`could not remove ${profile}: ${e.code}`);
    }
  }
  process.exit(code);
}
setTimeout(() => finish(1, "FAIL browser: no event within 45 s"), 45000);

const web = createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", async () => {
    if (req.url === "/") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      return res.end(page);
    }
    if (req.url === "/pusher.min.js") {
      res.writeHead(200, { "content-type": "text/javascript" });
      return res.end(pusherJs);
    }
    res.writeHead(204);
    res.end();
    if (req.url === "/ready") {
      await server.trigger("browser-chat", "hello", { text });
    } else if (req.url === "/result") {
      const data = JSON.parse(body);
      if (data.text === text) finish(0, "ok   headless Chromium received the event through pusher-js");
      else finish(1, `FAIL browser: received ${body}`);
    }
  });
});
web.listen(0, "127.0.0.1", () => {
  profile = mkdtempSync(join(tmpdir(), "ringcast-chromium-"));
  const url = `http://127.0.0.1:${web.address().port}/`;
  chromium = spawn(process.env.CHROMIUM ?? "/usr/bin/chromium", [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
    `--user-data-dir=${profile}`, url,
  ], { stdio: "ignore" });
  chromium.on("exit", (code) => finish(1, `FAIL browser: chromium exited early (${code})`));
});
