#!/bin/sh
# Tests for sysctl/tune.sh against a scratch copy of /proc/sys and /etc: apply/check/revert
# round trip, dry run changing nothing, refusal without root, idempotence, never lowering a
# value raised beyond the profile, and optional keys. Runs under every POSIX shell it finds.
set -eu

repo=$(cd "$(dirname "$0")/../.." && pwd)
tune="$repo/sysctl/tune.sh"
failures=0
scratch=$(mktemp -d "${TMPDIR:-/tmp}/ringcast-tune-test.XXXXXX")
trap 'rm -rf "$scratch"' EXIT INT TERM

fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# A fake kernel with the usual defaults of a 6.x kernel (no conntrack module loaded) and a
# fake /etc with systemd and pam present.
setup() {
    rm -rf "${scratch:?}/root" "${scratch:?}/state" "${scratch:?}/etc"
    mk() { mkdir -p "$(dirname "$scratch/root/$1")"; printf '%s\n' "$2" > "$scratch/root/$1"; }
    mk fs/file-max 9223372036854775807
    mk fs/nr_open 1048576
    mk fs/epoll/max_user_watches 100000
    mk net/core/somaxconn 4096
    mk net/ipv4/tcp_max_syn_backlog 1024
    mk net/core/netdev_max_backlog 1000
    mk net/ipv4/ip_local_port_range "32768	60999"
    mk net/ipv4/tcp_mem "88413	117886	176826"
    mk net/ipv4/tcp_rmem "4096	131072	6291456"
    mk net/ipv4/tcp_wmem "4096	16384	4194304"
    mk net/ipv4/tcp_fin_timeout 60
    mk net/ipv4/tcp_tw_reuse 2
    mk net/ipv4/tcp_max_tw_buckets 65536
    mk net/ipv4/tcp_max_orphans 65536
    mkdir -p "$scratch/etc/sysctl.d" "$scratch/etc/security/limits.d" "$scratch/etc/systemd/system"
}

# Every file and its value; the kernel prints tabs between fields and takes spaces.
snapshot() {
    (cd "$scratch" && find root etc -type f | sort | while read -r f; do
        echo "$f: $(tr -s "\t" " " < "$f")"
    done)
}

# tune ARGS...: run the script against the scratch tree as root unless the caller says otherwise.
tune() {
    RINGCAST_SYSCTL_ROOT="$scratch/root" RINGCAST_STATE_DIR="$scratch/state" \
        RINGCAST_ETC_ROOT="$scratch/etc" RINGCAST_UID="${uid:-0}" DRY_RUN="${dry:-0}" \
        $shell "$tune" "$@"
}

value() { tr -s '\t' ' ' < "$scratch/root/$1"; }

run_suite() {
    setup
    before=$(snapshot)

    if tune check > "$scratch/out"; then fail "check passed on an untuned host"; fi
    grep -q 'net.core.somaxconn .* 4096 .* 65535 .* LOW' "$scratch/out" || fail "row for somaxconn"
    grep -q 'net.ipv4.tcp_fin_timeout .* HIGH' "$scratch/out" || fail "check row for fin_timeout"
    grep -q 'net.ipv4.tcp_tw_reuse .* DIFF' "$scratch/out" || fail "check row for tw_reuse"
    grep -q 'nf_conntrack_max .* SKIP' "$scratch/out" || fail "absent optional key is skipped"
    grep -q 'fs.file-max .* OK' "$scratch/out" || fail "a value above the profile is OK"

    if uid=1000 tune apply > "$scratch/out" 2>&1; then fail "apply ran without root"; fi
    grep -q 'needs root' "$scratch/out" || fail "refusal says why: $(cat "$scratch/out")"
    if uid=1000 tune revert > /dev/null 2>&1; then fail "revert ran without root"; fi
    [ "$(snapshot)" = "$before" ] || fail "refused apply changed something"

    dry=1 uid=1000 tune apply > "$scratch/out" 2>&1 || fail "dry run failed: $(cat "$scratch/out")"
    grep -q "echo '65535' > '$scratch/root/net/core/somaxconn'" "$scratch/out" \
        || fail "dry run prints the write"
    [ "$(snapshot)" = "$before" ] || fail "dry run changed something"
    [ ! -e "$scratch/state" ] || fail "dry run created state"

    tune apply > "$scratch/out" 2>&1 || fail "apply failed: $(cat "$scratch/out")"
    tune check > "$scratch/out" || fail "check after apply: $(cat "$scratch/out")"
    [ "$(value net/core/somaxconn)" = 65535 ] || fail "somaxconn raised"
    [ "$(value net/ipv4/ip_local_port_range)" = "1024 65535" ] || fail "port range widened"
    [ "$(value net/ipv4/tcp_rmem)" = "4096 16384 6291456" ] || fail "rmem initial lowered"
    [ "$(value fs/file-max)" = 9223372036854775807 ] || fail "a higher value was lowered"
    persisted="$scratch/etc/sysctl.d/99-ringcast.conf"
    grep -q '^net.core.somaxconn = 65535$' "$persisted" || fail "persisted"
    ! grep -q 'fs.file-max' "$persisted" || fail "persisted an unchanged key"
    [ -f "$scratch/etc/security/limits.d/99-ringcast.conf" ] || fail "limits.d installed"
    [ -f "$scratch/etc/systemd/system/ringcast.service.d/limits.conf" ] || fail "drop-in installed"

    after=$(snapshot)
    saved=$(cat "$scratch/state/saved")
    tune apply > "$scratch/out" 2>&1 || fail "second apply failed"
    grep -q '0 setting(s) changed' "$scratch/out" || fail "second apply changed settings"
    [ "$(snapshot)" = "$after" ] || fail "second apply is not idempotent"
    [ "$(cat "$scratch/state/saved")" = "$saved" ] || fail "second apply rewrote the saved values"

    # A value lowered again behind ringcast's back is raised again, and revert still restores
    # the value from before the first apply.
    echo 128 > "$scratch/root/net/core/somaxconn"
    tune apply > /dev/null 2>&1 || fail "apply after drift failed"
    [ "$(value net/core/somaxconn)" = 65535 ] || fail "drifted value raised again"

    tune revert > "$scratch/out" 2>&1 || fail "revert failed: $(cat "$scratch/out")"
    [ "$(snapshot)" = "$before" ] || fail "revert did not restore everything: $(snapshot)"
    [ ! -e "$scratch/state" ] || fail "revert left state behind"
    tune revert > "$scratch/out" 2>&1 || fail "second revert failed"
    grep -q 'nothing to revert' "$scratch/out" || fail "second revert says nothing to do"

    # An optional key that is present is tuned; a pre-existing file is put back on revert.
    setup
    mkdir -p "$scratch/root/net/netfilter"
    echo 262144 > "$scratch/root/net/netfilter/nf_conntrack_max"
    echo "# the admin's own" > "$scratch/etc/sysctl.d/99-ringcast.conf"
    before=$(snapshot)
    tune apply > /dev/null 2>&1 || fail "apply with conntrack failed"
    [ "$(value net/netfilter/nf_conntrack_max)" = 2097152 ] || fail "conntrack raised"
    tune revert > /dev/null 2>&1 || fail "revert with conntrack failed"
    [ "$(snapshot)" = "$before" ] || fail "revert did not put back the admin's file"

    # No systemd and no pam on the host: apply still works and installs neither.
    setup
    rm -rf "$scratch/etc/systemd" "$scratch/etc/security"
    tune apply > /dev/null 2>&1 || fail "apply without systemd failed"
    [ ! -e "$scratch/etc/systemd" ] || fail "installed systemd files without systemd"
    tune revert > /dev/null 2>&1 || fail "revert without systemd failed"

    # A read-only /proc/sys (a container) is refused with a reason, before anything is saved.
    # Root ignores file modes, so only a non-root run can simulate it.
    if [ "$(id -u)" != 0 ]; then
        setup
        chmod a-w "$scratch/root/net/core/somaxconn"
        if tune apply > "$scratch/out" 2>&1; then fail "apply wrote a read-only setting"; fi
        grep -q 'read-only' "$scratch/out" || fail "read-only refusal says why"
        chmod u+w "$scratch/root/net/core/somaxconn"
    fi

    if tune bogus > /dev/null 2>&1; then fail "an unknown command succeeded"; fi
}

ran=0
for shell in sh dash bash busybox_sh; do
    case $shell in busybox_sh) command -v busybox > /dev/null || continue; shell="busybox sh" ;;
        *) command -v "$shell" > /dev/null || continue ;; esac
    run_suite
    ran=$((ran + 1))
    echo "tune.sh tests under $shell: done"
done
[ "$ran" -gt 0 ] || { echo "FAIL: no shell found" >&2; exit 1; }
if [ "$failures" -gt 0 ]; then echo "$failures failure(s)" >&2; exit 1; fi
echo "tune.sh tests: all passed"
