# ringcast: the front door. `make run` starts the server on its defaults, `make test` runs
# everything CI runs.

CARGO ?= cargo
FUZZ_SECONDS ?= 30

.PHONY: run build test lint fmt fuzz bench test-dashboard

## Build release and start the server on its defaults.
run:
	$(CARGO) run --release --locked --bin ringcast -- serve

build:
	$(CARGO) build --release --locked --workspace

## Unit, conformance, property and integration tests, then lint.
test: lint test-sysctl test-deps
	$(CARGO) test --workspace --locked

## The Debian packages the suite runs (node, npm, python3-venv, chromium, redis-server,
## nats-server): installed when missing as root, otherwise the apt-get command to run is printed.
.PHONY: system-deps
system-deps:
	sh tests/system-deps.sh

## Third-party clients the integration suite runs (npm pusher-js, pusher, ws; PyPI pusher);
## idempotent.
.PHONY: test-deps
test-deps: system-deps
	sh tests/clients/install.sh

## Real-client tests (pusher-js, ws, the pusher server SDKs) against a debug server.
.PHONY: test-clients
test-clients: test-deps
	$(CARGO) build --locked --bin ringcast
	bash tests/clients/run.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

## The dashboard page in headless Chromium against a scripted feed (needs Debian chromium and
## tests/dashboard/requirements.txt); DASHBOARD_ARGS=--target=URL points it at a running server.
test-dashboard: system-deps
	python3 tests/dashboard/run.py $(DASHBOARD_ARGS)

## Run every fuzz target for FUZZ_SECONDS each (cargo-fuzz, installed on demand).
fuzz:
	sh fuzz/run.sh $(FUZZ_SECONDS)

## Figure: fan-out deliveries per server CPU-second and latency, ringcast 1 and 2 shards vs Bun
## (docs/benchmarks.md).
.PHONY: bench-fanout
bench-fanout:
	bash benches/fanout.sh

## Criterion micro-benchmarks.
bench:
	$(CARGO) bench --locked --bench codec

.PHONY: bench-density bench-echo

## Figure: server RSS and kernel slab growth per idle WebSocket connection (docs/benchmarks.md).
bench-density:
	bash benches/density.sh

## Figure: echo messages per server CPU-second, io_uring vs epoll vs Bun (docs/benchmarks.md).
bench-echo:
	bash benches/echo.sh
## Host tuning for a million connections (sysctl/, docs/tuning.md). tune and untune need root;
## DRY_RUN=1 prints the commands instead. tune-check changes nothing and exits 1 if any is off.
.PHONY: tune tune-check untune test-sysctl
DRY_RUN ?= 0
tune:
	DRY_RUN=$(DRY_RUN) sh sysctl/tune.sh apply

tune-check:
	sh sysctl/tune.sh check

untune:
	DRY_RUN=$(DRY_RUN) sh sysctl/tune.sh revert

## The tuning scripts against a scratch copy of /proc/sys and /etc.
test-sysctl:
	sh tests/sysctl/test.sh
.PHONY: bench-loadgen
## The load generator's own density and connect rate: CONNS idle connections (default 19000) in
## one worker against a release ringcast; BACKEND=auto|uring|epoll.
bench-loadgen:
	bash loadgen/bench/idle-density.sh
.PHONY: cluster bench-cluster
## A local cluster in the foreground: a broker (BROKER=redis|nats, on BROKER_PORT or a free
## loopback port) and N (default 4) release instances sharing PORT (default 8080) through
## SO_REUSEPORT, each with its own admin port (printed). Ctrl-C stops them all.
N ?= 4
BROKER ?= redis
PORT ?= 8080
cluster:
	N=$(N) BROKER=$(BROKER) PORT=$(PORT) BROKER_PORT=$(BROKER_PORT) bash benches/cluster.sh

## Figures: cross-instance latency, broker messages per event and presence removal after a
## SIGKILL, 4 instances, ROUNDS (default 3) rounds alternating redis and nats (docs/benchmarks.md).
ROUNDS ?= 3
bench-cluster: test-deps
	$(CARGO) build --release --locked --bin ringcast
	.venv/bin/python benches/cluster.py --rounds $(ROUNDS)
