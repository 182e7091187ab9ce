#!/usr/bin/env bash
# Real-client tests: installs pusher-js, ws and the pusher server SDKs (npm, PyPI) into
# tests/clients and .venv (install.sh), starts a debug ringcast on a free loopback port with
# known development-app credentials, runs the node, python and headless-Chromium suites against it, and stops the
# server. Needs node, npm, python3 and chromium (Debian package `chromium`).
# Usage: tests/clients/run.sh [path/to/ringcast]   (default: target/debug/ringcast)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/ringcast}"

sh "$here/install.sh"

export RINGCAST_APP_ID="${RINGCAST_APP_ID:-424242}"
export RINGCAST_APP_KEY="${RINGCAST_APP_KEY:-client-test-key}"
export RINGCAST_APP_SECRET="${RINGCAST_APP_SECRET:-client-test-secret}"
export RINGCAST_HOST=127.0.0.1
RINGCAST_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export RINGCAST_PORT

timeout 300 "$bin" serve --listen="127.0.0.1:$RINGCAST_PORT" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', $RINGCAST_PORT), 0.2)" 2>/dev/null; then
        break
    fi
    sleep 0.1
done

status=0
timeout 90 node "$here/pusher_js.mjs" || status=1
timeout 90 "$root/.venv/bin/python" "$here/pusher_sdk.py" || status=1
timeout 60 node "$here/browser.mjs" || status=1
exit "$status"
