#!/bin/sh
# Installs the third-party WebSocket clients the integration suite runs: npm packages from the
# committed lock file into tests/clients/node_modules, Python packages into a venv at .venv.
# Idempotent: each step is skipped while the stamp it leaves matches its lock/requirements file.
set -eu
cd "$(dirname "$0")/../.."

stamp_of() { sha256sum "$1" | cut -d' ' -f1; }

command -v npm >/dev/null || { echo "test-deps: npm not found (apt-get install npm)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "test-deps: python3 not found" >&2; exit 1; }

npm_stamp=$(stamp_of tests/clients/package-lock.json)
if [ "$(cat tests/clients/node_modules/.ringcast-stamp 2>/dev/null)" != "$npm_stamp" ]; then
    echo "test-deps: npm ci in tests/clients"
    (cd tests/clients && npm ci --no-audit --no-fund)
    echo "$npm_stamp" > tests/clients/node_modules/.ringcast-stamp
fi

pip_stamp=$(stamp_of tests/clients/requirements.txt)
if [ "$(cat .venv/.ringcast-stamp 2>/dev/null)" != "$pip_stamp" ]; then
    echo "test-deps: python venv .venv with tests/clients/requirements.txt"
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        -r tests/clients/requirements.txt
    echo "$pip_stamp" > .venv/.ringcast-stamp
fi
