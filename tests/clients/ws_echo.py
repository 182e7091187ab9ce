"""Echo check with the Python `websockets` client.

Usage: ws_echo.py ws://HOST:PORT/echo

Connects (offering permessage-deflate, as the library does by default), echoes text, binary, a
large and a fragmented message, pings, then closes with 1000 and checks the server's answer.
Prints "ok: echo and close" and exits 0 on success; any failure raises and exits non-zero.
"""

import asyncio
import sys

from websockets.asyncio.client import connect

# Bounds the whole run so a silent server fails the check instead of hanging it.
TIMEOUT_SECONDS = 20


async def check(url: str) -> None:
    async with connect(url, max_size=None, open_timeout=TIMEOUT_SECONDS) as ws:
        await ws.send("hello from websockets")
        assert await ws.recv() == "hello from websockets", "text echo"

        binary = bytes(range(256)) * 64
        await ws.send(binary)
        assert await ws.recv() == binary, "binary echo"

        large = "é" * 30_000
        await ws.send(large)
        assert await ws.recv() == large, "large text echo"

        # An iterable is sent as one fragmented message; the echo comes back whole.
        await ws.send(["frag", "men", "ted"])
        assert await ws.recv() == "fragmented", "fragmented echo"

        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, TIMEOUT_SECONDS)

        await ws.close(1000, "done")
        assert ws.close_code == 1000, f"close code {ws.close_code}"
    print(f"ok: echo and close ({url})")


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: ws_echo.py ws://HOST:PORT/echo")
    asyncio.run(asyncio.wait_for(check(sys.argv[1]), TIMEOUT_SECONDS))


if __name__ == "__main__":
    main()
