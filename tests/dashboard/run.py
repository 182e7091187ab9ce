#!/usr/bin/env python3
"""Headless-Chromium test of the ringcast dashboard page.

Two modes:

* Fake feed (default): serves src/dashboard.html at /dashboard and a scripted WebSocket feed at
  /dashboard/feed from one local server, loads the page in headless Chromium and asserts that
  the numbers appear, follow the feed when its counters change, that per-shard rows render, and
  that the page shows the lost feed and reconnects by itself.
* Real server (`--target http://127.0.0.1:8080`): loads the page a running ringcast serves,
  waits for the feed to go live and for numbers to appear, then watches `--observe` seconds and
  asserts that the counters moved (apply load meanwhile, e.g. with ringcast-loadgen).

The browser is driven over the Chrome DevTools Protocol with the `websockets` package; no
Selenium or Puppeteer. Everything listens on loopback only and every process it starts is
stopped before it exits. Exit status 0 means every check passed.

Needs: Debian `chromium`, Python 3.9+, `pip install -r tests/dashboard/requirements.txt`.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import http
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.http11 import Response

HERE = Path(__file__).resolve().parent
PAGE = HERE.parent.parent / "src" / "dashboard.html"
SAMPLE_FRAME = HERE / "sample_frame.json"

# Flags for a quiet, self-contained headless browser that never reaches the network.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-extensions",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]

# Every number the page shows, by element id; read from data-value (raw) and text (formatted).
WATCHED_IDS = [
    "feed-state",
    "connections",
    "capacity",
    "messages-per-second",
    "deliveries-per-second",
    "heartbeat-p50",
    "heartbeat-p99",
    "handshake-p99",
    "loop-lag-p99",
    "bytes-in-per-second",
]

READ_PAGE_JS = """
(() => {
  const out = {};
  for (const id of %s) {
    const el = document.getElementById(id);
    out[id] = el ? {value: el.dataset.value ?? null, state: el.dataset.state ?? null,
                    text: el.textContent} : null;
  }
  out.shards = Array.from(document.querySelectorAll('#shards tr')).map((row) => ({
    id: row.id,
    connections: row.querySelector('.connections')?.dataset.value ?? null,
  }));
  return JSON.stringify(out);
})()
""" % json.dumps(WATCHED_IDS)


class CheckFailed(Exception):
    """A dashboard check did not hold within its time bound."""


class FakeFeed:
    """The page and a scripted feed on one loopback port, as ringcast serves them."""

    def __init__(self, frame_period: float) -> None:
        self.frame = json.loads(SAMPLE_FRAME.read_text())
        # Counters grow by these amounts per frame; each frame claims one second passed, so the
        # page's rates equal the steps exactly.
        self.messages_step = 100
        self.deliveries_step = 1000
        self.frame_period = frame_period
        self.refusing = False
        self.feeds: set = set()
        self.server = None
        self.port = 0

    async def start(self) -> None:
        self.server = await ws_serve(
            self.handle_feed, "127.0.0.1", 0, process_request=self.route
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def route(self, connection, request):
        path = request.path.split("?", 1)[0]
        if path == "/dashboard":
            body = PAGE.read_bytes()
            headers = Headers(
                [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))]
            )
            return Response(200, "OK", headers, body)
        if path == "/dashboard/feed" and not self.refusing:
            return None
        if path == "/dashboard/feed":
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "draining\n")
        return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")

    def advance(self) -> dict:
        frame = self.frame
        frame["ts_ms"] += 1000
        frame["uptime_s"] += 1.0
        frame["totals"]["messages_in"] += self.messages_step
        frame["totals"]["deliveries"] += self.deliveries_step
        frame["totals"]["bytes_in"] += self.messages_step * 64
        for shard in frame["shards"]:
            shard["messages_in"] += self.messages_step // len(frame["shards"])
            shard["deliveries"] += self.deliveries_step // len(frame["shards"])
        return copy.deepcopy(frame)

    def set_connections(self, per_shard: list[int]) -> None:
        for shard, count in zip(self.frame["shards"], per_shard):
            shard["connections"] = count
        self.frame["connections"] = sum(per_shard)

    async def handle_feed(self, websocket) -> None:
        self.feeds.add(websocket)
        try:
            while True:
                await websocket.send(json.dumps(self.advance()))
                await asyncio.sleep(self.frame_period)
        except Exception:  # the page went away or the test dropped it
            pass
        finally:
            self.feeds.discard(websocket)

    async def drop_feeds(self) -> None:
        for websocket in list(self.feeds):
            await websocket.close(1001, "going away")


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.profile = tempfile.mkdtemp(prefix="ringcast-dashboard-")
        self.process: subprocess.Popen | None = None
        self.cdp = None
        self.next_id = 0
        self.exceptions: list[str] = []
        self.console_errors: list[str] = []

    async def open(self, url: str, timeout: float) -> None:
        self.process = subprocess.Popen(
            [self.binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not port_file.exists() or not port_file.read_text().strip():
            if self.process.poll() is not None:
                raise CheckFailed(f"chromium exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise CheckFailed("chromium did not open its DevTools port")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        target = None
        while target is None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as reply:
                pages = [t for t in json.load(reply) if t.get("type") == "page"]
            target = next((t for t in pages if t.get("webSocketDebuggerUrl")), None)
            if target is None:
                if time.monotonic() > deadline:
                    raise CheckFailed("chromium opened no page")
                await asyncio.sleep(0.1)
        self.cdp = await ws_connect(target["webSocketDebuggerUrl"], max_size=None)
        await self.call("Runtime.enable")

    async def call(self, method: str, **params) -> dict:
        self.next_id += 1
        call_id = self.next_id
        await self.cdp.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(await self.cdp.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise CheckFailed(f"{method}: {message['error']}")
                return message.get("result", {})
            self.note_event(message)

    def note_event(self, message: dict) -> None:
        method = message.get("method")
        params = message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.exceptions.append(details.get("exception", {}).get("description") or str(details))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.console_errors.append(json.dumps(params.get("args")))

    async def read_page(self) -> dict:
        result = await self.call("Runtime.evaluate", expression=READ_PAGE_JS, returnByValue=True)
        value = result.get("result", {}).get("value")
        return json.loads(value) if isinstance(value, str) else {}

    async def close(self) -> None:
        if self.cdp is not None:
            await self.cdp.close()
        if self.process is not None:
            # SIGTERM to the browser alone lets it stop and reap its own helpers; whatever of
            # its process group is left after that is killed.
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


async def wait_for(browser: Browser, what: str, predicate, timeout: float) -> dict:
    """Polls the page until `predicate(page)` holds; fails with the last page read otherwise."""
    deadline = time.monotonic() + timeout
    page: dict = {}
    while time.monotonic() < deadline:
        page = await browser.read_page()
        try:
            if predicate(page):
                print(f"ok: {what}")
                return page
        except (KeyError, TypeError, ValueError):
            pass
        await asyncio.sleep(0.1)
    raise CheckFailed(f"{what}: not seen within {timeout:.0f} s; page: {json.dumps(page)}")


def number(page: dict, element_id: str) -> float:
    return float(page[element_id]["value"])


async def run_fake(browser: Browser, timeout: float) -> None:
    feed = FakeFeed(frame_period=0.25)
    await feed.start()
    try:
        feed.set_connections([4, 6])
        await browser.open(f"http://127.0.0.1:{feed.port}/dashboard", timeout)
        await wait_for(
            browser,
            "feed live and connections shown",
            lambda p: p["feed-state"]["state"] == "live" and number(p, "connections") == 10,
            timeout,
        )
        page = await wait_for(
            browser,
            "rates computed from consecutive frames",
            lambda p: number(p, "messages-per-second") == 100
            and number(p, "deliveries-per-second") == 1000,
            timeout,
        )
        assert page["capacity"]["value"] == "1000", page["capacity"]
        assert page["heartbeat-p99"]["text"] == "1.90", page["heartbeat-p99"]
        assert [row["id"] for row in page["shards"]] == ["shard-0", "shard-1"], page["shards"]

        feed.set_connections([40, 60])
        feed.messages_step = 300
        feed.deliveries_step = 5000
        await wait_for(
            browser,
            "numbers follow the feed when its counters change",
            lambda p: number(p, "connections") == 100
            and number(p, "messages-per-second") == 300
            and number(p, "deliveries-per-second") == 5000
            and p["shards"][1]["connections"] == "60",
            timeout,
        )

        feed.refusing = True
        await feed.drop_feeds()
        await wait_for(
            browser,
            "lost feed shown as reconnecting",
            lambda p: p["feed-state"]["state"] in ("reconnecting", "connecting")
            and "reconnecting" in p["feed-state"]["text"],
            timeout,
        )
        feed.refusing = False
        feed.set_connections([7, 8])
        await wait_for(
            browser,
            "page reconnects by itself and resumes",
            lambda p: p["feed-state"]["state"] == "live" and number(p, "connections") == 15,
            timeout,
        )
        if browser.exceptions:
            raise CheckFailed(f"page threw: {browser.exceptions}")
    finally:
        await feed.stop()


async def run_target(browser: Browser, target: str, observe: float, timeout: float) -> None:
    await browser.open(target.rstrip("/") + "/dashboard", timeout)
    first = await wait_for(
        browser,
        "feed live and connections shown",
        lambda p: p["feed-state"]["state"] == "live" and number(p, "connections") >= 0,
        timeout,
    )
    print(f"first read: {json.dumps(first)}")
    seen: dict[str, set] = {key: set() for key in ("connections", "messages-per-second")}
    deadline = time.monotonic() + observe
    while time.monotonic() < deadline:
        page = await browser.read_page()
        for key in seen:
            if page.get(key) and page[key]["value"]:
                seen[key].add(page[key]["value"])
        await asyncio.sleep(0.5)
    print(f"values seen: { {k: sorted(v) for k, v in seen.items()} }")
    if not any(len(values) > 1 for values in seen.values()):
        raise CheckFailed(f"no number changed in {observe:.0f} s (was load applied?)")
    if browser.exceptions:
        raise CheckFailed(f"page threw: {browser.exceptions}")


def find_chromium(explicit: str | None) -> str:
    for name in [explicit, "chromium", "chromium-browser", "google-chrome"]:
        if name and shutil.which(name):
            return shutil.which(name) or name
    raise SystemExit("chromium not found: apt-get install -y chromium (or pass --chromium)")


async def main_async(args: argparse.Namespace) -> None:
    browser = Browser(find_chromium(args.chromium))
    try:
        if args.target:
            await run_target(browser, args.target, args.observe, args.timeout)
        else:
            await run_fake(browser, args.timeout)
    finally:
        await browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chromium", help="browser binary (default: chromium on PATH)")
    parser.add_argument("--target", help="base URL of a running ringcast (default: fake feed)")
    parser.add_argument("--observe", type=float, default=10.0, help="seconds to watch a target")
    parser.add_argument("--timeout", type=float, default=15.0, help="bound of each check, s")
    args = parser.parse_args()
    # A hard bound on the whole run, so a wedged browser can never keep the test alive.
    limit = args.timeout * 8 + args.observe
    try:
        asyncio.run(asyncio.wait_for(main_async(args), timeout=limit))
    except (CheckFailed, AssertionError) as failure:
        print(f"FAIL: {failure}", file=sys.stderr)
        return 1
    except asyncio.TimeoutError:
        print(f"FAIL: the run exceeded {limit:.0f} s", file=sys.stderr)
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
