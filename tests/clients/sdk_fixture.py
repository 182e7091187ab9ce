#!/usr/bin/env python3
"""Writes fixtures/python_sdk.json: requests and auth values produced by the real `pusher`
server SDK (PyPI), which the Rust unit tests in src/pusher/api verify against.

Nothing is sent anywhere: the SDK's request objects are built and recorded, not executed.
Regenerate with `python3 tests/clients/sdk_fixture.py` after `pip install pusher`.
"""

import json
import os
import sys

import pusher
from pusher.version import VERSION

APP_ID, KEY, SECRET = "4321", "fixture-key", "fixture-secret"


def record(name, request):
    return {
        "name": name,
        "method": request.method,
        "target": request.signed_path,
        "body": request.body.decode("utf-8"),
        "timestamp": int(request.query_params["auth_timestamp"]),
    }


def main():
    client = pusher.Pusher(app_id=APP_ID, key=KEY, secret=SECRET)
    inner = client._pusher_client
    requests = [
        record(
            "trigger",
            inner.trigger.make_request(
                ["my-channel", "presence-room"],
                "my-event",
                {"message": 'hello, "world" \u00e9 & ok'},
                socket_id="1234.5678",
            ),
        ),
        record("trigger_string", inner.trigger.make_request("private-a", "e", "plain string")),
        record(
            "send_to_user",
            inner.trigger.make_request(["#server-to-user-user-1"], "greet", {"hi": 1}),
        ),
        record(
            "trigger_batch",
            inner.trigger_batch.make_request(
                [
                    {"channel": "a", "name": "e1", "data": {"n": 1}},
                    {"channel": "presence-room", "name": "e2", "data": "two"},
                ]
            ),
        ),
        record(
            "channels_info",
            inner.channels_info.make_request("presence-", ["user_count", "subscription_count"]),
        ),
        record("channels_info_plain", inner.channels_info.make_request()),
        record("channel_info", inner.channel_info.make_request("presence-room", ["user_count"])),
        record("users_info", inner.users_info.make_request("presence-room")),
        record("terminate", inner.terminate_user_connections.make_request("user-1")),
    ]
    channel_data = {"user_id": "u1", "user_info": {"name": "Ann \u00e9"}}
    auths = [
        {"socket_id": "1.2", "channel": "private-a", "response": client.authenticate("private-a", "1.2")},
        {
            "socket_id": "1.2",
            "channel": "presence-room",
            "response": client.authenticate("presence-room", "1.2", channel_data),
        },
    ]
    signin = {"socket_id": "1.2", "response": client.authenticate_user("1.2", {"id": "u1", "name": "Ann"})}
    out = {
        "sdk": "pusher (PyPI) " + VERSION,
        "app": {"id": APP_ID, "key": KEY, "secret": SECRET},
        "requests": requests,
        "channel_auths": auths,
        "signin": signin,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "python_sdk.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")
    print("wrote", path, file=sys.stderr)


if __name__ == "__main__":
    main()
