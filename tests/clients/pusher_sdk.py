#!/usr/bin/env python3
"""Real-client test: the official `pusher` server SDK (PyPI) triggering events, batch events
and channel queries through ringcast's HTTP API, observed by a small standard-library
WebSocket client speaking the Pusher protocol.

Usage: RINGCAST_PORT=8080 RINGCAST_APP_ID=.. RINGCAST_APP_KEY=.. RINGCAST_APP_SECRET=..
       python3 tests/clients/pusher_sdk.py
Exits 0 when every check passed, 1 otherwise. Every socket operation has a timeout.
"""

import base64
import json
import os
import socket
import struct
import sys
import time

import pusher
from pusher.errors import PusherBadAuth, PusherBadRequest, PusherBadStatus

HOST = os.environ.get("RINGCAST_HOST", "127.0.0.1")
PORT = int(os.environ.get("RINGCAST_PORT", "8080"))
APP_ID = os.environ.get("RINGCAST_APP_ID")
KEY = os.environ.get("RINGCAST_APP_KEY")
SECRET = os.environ.get("RINGCAST_APP_SECRET")
TIMEOUT = 5.0


class Ws:
    """The client side of RFC 6455, just enough for Pusher text messages."""

    def __init__(self, path):
        self.sock = socket.create_connection((HOST, PORT), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{PORT}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.split(b"\r\n")[0].decode())
        self.close_code = None
        self.skipped = []

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, message):
        payload = json.dumps(message).encode()
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def recv(self):
        """The next Pusher message as a dict, or None once the server closed (see close_code)."""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            payload = self._read(n)
            opcode = b0 & 0x0F
            if opcode == 0x1:
                return json.loads(payload)
            if opcode == 0x8:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return None
            if opcode == 0x9:
                self.sock.sendall(struct.pack("!BB", 0x8A, 0x80 | len(payload)) + b"\0\0\0\0" + payload)

    def expect(self, event, channel=None):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            message = self.recv()
            if message is None:
                raise AssertionError(f"closed with {self.close_code} while waiting for {event}")
            if message.get("event") == event and (channel is None or message.get("channel") == channel):
                return message
            self.skipped.append(message)
        raise AssertionError(f"no {event} within {TIMEOUT} s")


failures = 0


def check(name, body):
    global failures
    try:
        body()
        print(f"ok   {name}")
    except Exception as e:  # a failed check is reported, the others still run
        failures += 1
        print(f"FAIL {name}: {type(e).__name__}: {e}")


def main():
    if not (APP_ID and KEY and SECRET):
        print("set RINGCAST_APP_ID, RINGCAST_APP_KEY and RINGCAST_APP_SECRET", file=sys.stderr)
        return 2
    client = pusher.Pusher(app_id=APP_ID, key=KEY, secret=SECRET, host=HOST, port=PORT, ssl=False, timeout=TIMEOUT)
    ws = Ws(f"/app/{KEY}?protocol=7&client=python-test")
    established = ws.expect("pusher:connection_established")
    socket_id = json.loads(established["data"])["socket_id"]

    def subscribe(channel, channel_data=None):
        data = {"channel": channel}
        if channel.startswith(("private-", "presence-")):
            data.update(client.authenticate(channel, socket_id, channel_data))
        ws.send({"event": "pusher:subscribe", "data": data})
        ws.expect("pusher_internal:subscription_succeeded", channel)

    check("subscribe to a public and a presence channel", lambda: (
        subscribe("chat"),
        subscribe("presence-py", {"user_id": "py-user", "user_info": {"lang": "python"}}),
    ))

    def trigger():
        assert client.trigger("chat", "news", {"n": 1, "s": "caf\u00e9"}) == {}
        message = ws.expect("news", "chat")
        assert json.loads(message["data"]) == {"n": 1, "s": "caf\u00e9"}, message

    check("trigger reaches the subscriber", trigger)

    def trigger_many_channels():
        client.trigger(["chat", "presence-py", "nobody-here"], "fan", "plain text")
        assert ws.expect("fan", "chat")["data"] == "plain text"
        assert ws.expect("fan", "presence-py")["data"] == "plain text"

    check("trigger to several channels", trigger_many_channels)

    def batch():
        client.trigger_batch([
            {"channel": "chat", "name": "b1", "data": {"i": 1}},
            {"channel": "presence-py", "name": "b2", "data": {"i": 2}},
        ])
        assert json.loads(ws.expect("b1", "chat")["data"]) == {"i": 1}
        assert json.loads(ws.expect("b2", "presence-py")["data"]) == {"i": 2}

    check("trigger_batch delivers each event", batch)

    def exclusion():
        ws.skipped.clear()
        client.trigger("chat", "not-for-me", {}, socket_id=socket_id)
        client.trigger("chat", "marker", {})
        assert ws.expect("marker", "chat")
        # Events on one channel arrive in order: had the first been delivered, it came first.
        assert not [m for m in ws.skipped if m.get("event") == "not-for-me"], ws.skipped

    check("socket_id exclusion", exclusion)

    def queries():
        all_channels = client.channels_info()
        assert "chat" in all_channels["channels"], all_channels
        presence = client.channels_info("presence-", ["user_count"])
        assert presence == {"channels": {"presence-py": {"user_count": 1}}}, presence
        chat = client.channel_info("chat", ["subscription_count"])
        assert chat == {"occupied": True, "subscription_count": 1}, chat
        empty = client.channel_info("nobody-here")
        assert empty == {"occupied": False}, empty
        users = client.users_info("presence-py")
        assert users == {"users": [{"id": "py-user"}]}, users

    check("channel queries", queries)

    def refusals():
        try:
            client.channel_info("chat", ["user_count"])
            raise AssertionError("user_count on a public channel was accepted")
        except PusherBadRequest:
            pass
        wrong = pusher.Pusher(app_id=APP_ID, key=KEY, secret=SECRET + "x", host=HOST, port=PORT, ssl=False)
        try:
            wrong.trigger("chat", "e", {})
            raise AssertionError("a bad signature was accepted")
        except PusherBadAuth:
            pass
        try:
            client.trigger("chat", "big", "x" * (12 * 1024))
            raise AssertionError("12 KiB of data was accepted")
        except PusherBadStatus as e:
            assert "413" in str(e), e

    check("bad requests get 400, 401 and 413", refusals)

    def user_events():
        signin = client.authenticate_user(socket_id, {"id": "py-user", "name": "Py"})
        ws.send({"event": "pusher:signin", "data": signin})
        ws.expect("pusher:signin_success")
        subscribe("#server-to-user-py-user")
        client.send_to_user("py-user", "direct", {"hello": "you"})
        assert json.loads(ws.expect("direct", "#server-to-user-py-user")["data"]) == {"hello": "you"}

    check("sign in and receive a user event", user_events)

    def terminate():
        client.terminate_user_connections("py-user")
        error = ws.expect("pusher:error")
        assert error["data"]["code"] == 4009, error
        assert ws.recv() is None and ws.close_code == 4009, ws.close_code

    check("terminate_user_connections closes with 4009", terminate)

    print("all pusher SDK checks passed" if failures == 0 else f"{failures} pusher SDK check(s) failed")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
