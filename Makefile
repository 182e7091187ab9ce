# ringcast: the front door. `make run` starts the server on its defaults, `make test` runs
# everything CI runs.

CARGO ?= cargo
FUZZ_SECONDS ?= 30

.PHONY: run build test lint fmt fuzz bench

## Build release and start the server on its defaults.
run:
	$(CARGO) run --release --locked --bin ringcast -- serve

build:
	$(CARGO) build --release --locked --workspace

## Unit, conformance, property and integration tests, then lint.
test: lint
	$(CARGO) test --workspace --locked

## Real-client tests (pusher-js, ws, the pusher server SDKs) against a debug server.
.PHONY: test-clients
test-clients:
	$(CARGO) build --locked --bin ringcast
	bash tests/clients/run.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

## Run every fuzz target for FUZZ_SECONDS each (cargo-fuzz, installed on demand).
fuzz:
	sh fuzz/run.sh $(FUZZ_SECONDS)

## Criterion micro-benchmarks.
bench:
	$(CARGO) bench --locked --bench codec
