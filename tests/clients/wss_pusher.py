"""Pusher over TLS through a terminating proxy, with the Python `websockets` client.

Usage: wss_pusher.py   (RINGCAST_HOST, RINGCAST_PORT: the proxy's TLS port; RINGCAST_CA: the
PEM certificate to trust; RINGCAST_APP_ID, _KEY, _SECRET: the development app)

Checks, through the proxy: a wss:// subscribe and an event triggered over https:// arriving on
it; /health answered by ringcast and /metrics and /dashboard refused by the proxy; and that
ringcast charges its per-IP limit (started with --max-connections-per-ip 1) to the client's
address the proxy forwards, not to the proxy's: a second client address gets in, a second
connection from it gets 429. Prints "ok: ..." per check and "all TLS proxy checks passed".
"""

import asyncio
import hashlib
import hmac
import json
import os
import ssl
import time
import urllib.error
import urllib.request

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

# Bounds each wait so a silent proxy fails the check instead of hanging it.
TIMEOUT_SECONDS = 20

HOST = os.environ["RINGCAST_HOST"]
PORT = int(os.environ["RINGCAST_PORT"])
APP_ID = os.environ["RINGCAST_APP_ID"]
APP_KEY = os.environ["RINGCAST_APP_KEY"]
APP_SECRET = os.environ["RINGCAST_APP_SECRET"].encode()
TLS = ssl.create_default_context(cafile=os.environ["RINGCAST_CA"])
WSS_URL = f"wss://{HOST}:{PORT}/app/{APP_KEY}?protocol=7&client=python&version=1"


def https(method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request to the proxy; the status and body, whatever the status."""
    request = urllib.request.Request(
        f"https://{HOST}:{PORT}{path}", data=body or None, method=method
    )
    if body:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, context=TLS, timeout=TIMEOUT_SECONDS) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()


def trigger(channel: str, name: str, data: str) -> None:
    """POST /apps/{id}/events signed as the Pusher SDKs sign it."""
    body = json.dumps({"name": name, "channel": channel, "data": data}).encode()
    path = f"/apps/{APP_ID}/events"
    query = (
        f"auth_key={APP_KEY}&auth_timestamp={int(time.time())}&auth_version=1.0"
        f"&body_md5={hashlib.md5(body).hexdigest()}"
    )
    signed = f"POST\n{path}\n{query}".encode()
    signature = hmac.new(APP_SECRET, signed, hashlib.sha256).hexdigest()
    status, answer = https("POST", f"{path}?{query}&auth_signature={signature}", body)
    assert status == 200, f"trigger: {status} {answer!r}"


async def event(ws, name: str) -> dict:
    """The next message named `name`, skipping others."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_SECONDS))
        if message["event"] == name:
            return message


async def open_pusher(source: str):
    """A wss:// connection from `source` that got its connection_established."""
    ws = await connect(
        WSS_URL, ssl=TLS, local_addr=(source, 0), open_timeout=TIMEOUT_SECONDS
    )
    await event(ws, "pusher:connection_established")
    return ws


async def subscribe_and_receive() -> None:
    ws = await open_pusher("127.0.0.1")
    try:
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "tls-news"}}))
        await event(ws, "pusher_internal:subscription_succeeded")
        trigger("tls-news", "headline", '{"text":"over TLS"}')
        message = await event(ws, "headline")
        assert message["channel"] == "tls-news", message
        assert json.loads(message["data"]) == {"text": "over TLS"}, message
        print("ok: wss subscribe and https trigger through the proxy")
    finally:
        await ws.close()


def routes() -> None:
    status, body = https("GET", "/health")
    assert status == 200, f"/health: {status} {body!r}"
    for admin in ["/metrics", "/dashboard", "/"]:
        status, body = https("GET", admin)
        assert status == 404, f"{admin} must not be proxied: {status} {body[:200]!r}"
    print("ok: /health proxied, admin routes refused")


async def forwarded_address() -> None:
    # 127.0.0.1 is the proxy's own address to ringcast: were the limit charged to it, the
    # second of these two connections would be refused.
    first = await open_pusher("127.0.0.2")
    second = await open_pusher("127.0.0.3")
    try:
        try:
            extra = await open_pusher("127.0.0.2")
        except InvalidStatus as refused:
            status = refused.response.status_code
            assert status == 429, f"second connection from 127.0.0.2: {status}"
        else:
            await extra.close()
            raise AssertionError("a second connection from 127.0.0.2 got past the per-IP limit")
    finally:
        await first.close()
        await second.close()
    print("ok: per-IP limit charged to the forwarded client address")


async def main() -> None:
    await subscribe_and_receive()
    routes()
    await forwarded_address()
    print("all TLS proxy checks passed")


if __name__ == "__main__":
    asyncio.run(main())
