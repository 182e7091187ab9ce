#!/bin/sh
# Runs every cargo-fuzz target (or the ones named) for SECONDS each and prints the executions of
# each run. Installs cargo-fuzz when it is missing. Exits non-zero when a target crashed; the
# crashing input is left in fuzz/artifacts/TARGET/.
#
# usage: sh fuzz/run.sh [SECONDS] [TARGET...]
# FUZZ_RUNS=N runs each target for N executions instead of SECONDS; FUZZ_SANITIZER=none skips
# AddressSanitizer (several times the executions per second).
set -eu

seconds="${1:-30}"
budget="-max_total_time=$seconds"
[ -n "${FUZZ_RUNS:-}" ] && budget="-runs=$FUZZ_RUNS"
[ "$#" -gt 0 ] && shift
cd "$(dirname "$0")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
# cargo-fuzz passes nightly-only flags (-Zsanitizer, -Cpasses=sancov-module); RUSTC_BOOTSTRAP
# lets a stable toolchain accept them.
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

targets="$*"
[ -n "$targets" ] || targets="$(cargo fuzz list)"

failed=0
for target in $targets; do
    # AddressSanitizer when its runtime links on this toolchain, plain libFuzzer otherwise (safe
    # Rust gains little from ASan; the panics and the split-invariance asserts are what matter).
    sanitizer="${FUZZ_SANITIZER:-address}"
    if ! cargo fuzz build -s "$sanitizer" "$target" >/dev/null 2>&1; then
        sanitizer=none
        cargo fuzz build -s none "$target"
    fi
    mkdir -p "fuzz/corpus/$target"
    seeds=""
    [ -d "fuzz/seeds/$target" ] && seeds="fuzz/seeds/$target"
    log="fuzz/corpus/$target.log"
    status=0
    # shellcheck disable=SC2086 # $seeds is one path or nothing
    cargo fuzz run -s "$sanitizer" "$target" "fuzz/corpus/$target" $seeds -- \
        "$budget" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    took="$(sed -n 's/.*Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)"
    if [ "$status" -eq 0 ]; then
        echo "fuzz $target: ${execs:-?} executions in ${took:-$seconds} s, sanitizer $sanitizer, no crash"
    else
        failed=1
        tail -n 40 "$log"
        echo "fuzz $target: CRASHED (exit $status) after ${execs:-?} executions; see $log"
    fi
done
exit "$failed"
