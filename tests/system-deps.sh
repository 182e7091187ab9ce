#!/bin/sh
# The Debian packages the test suite needs, installed only when missing: Node.js and npm for the
# `ws` and pusher-js clients, Python with venv for the `websockets` client and the `pusher` SDK,
# Chromium for the browser and dashboard tests, Redis and NATS servers for the broker bridge's
# tests, prlimit (util-linux) for the descriptor-exhaustion test, nginx, HAProxy and openssl for
# the TLS proxy tests, a C compiler, make and CA certificates for the build. As root the missing
# ones are installed with apt-get; otherwise the script stops and prints the command to run, so a
# test never finds a tool missing.
set -eu

missing=""
need() { missing="$missing $1"; }

command -v node >/dev/null || need nodejs
command -v npm >/dev/null || need npm
command -v python3 >/dev/null || need python3
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need python3-venv
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || need chromium
command -v redis-server >/dev/null || need redis-server
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || need nats-server
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need nginx
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need haproxy
command -v openssl >/dev/null || need openssl
command -v cc >/dev/null || need build-essential
command -v make >/dev/null || need make
command -v prlimit >/dev/null || need util-linux
[ -e /etc/ssl/certs/ca-certificates.crt ] || need ca-certificates

[ -z "$missing" ] && exit 0

install="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" != 0 ]; then
    echo "system-deps: missing packages; run as root, then make test again:" >&2
    echo "    sudo apt-get update && sudo $install" >&2
    exit 1
fi
echo "system-deps: $install"
export DEBIAN_FRONTEND=noninteractive
apt-get update
# shellcheck disable=SC2086 # $missing is a list of package names, split on purpose.
apt-get install -y --no-install-recommends $missing
