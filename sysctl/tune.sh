#!/bin/sh
# ringcast host tuning: apply, check or revert the kernel profile in 99-ringcast.conf and the
# open-file limits in limits.d/ and systemd/.
#
#   tune.sh check    print each setting: current, wanted, OK or LOW/HIGH/DIFF; exit 1 if any is off
#   tune.sh apply    raise what is short (root), saving the previous values first; idempotent
#   tune.sh revert   restore the saved values and remove the installed files (root)
#
# Environment (the defaults are the real host; tests point them at a scratch tree):
#   DRY_RUN=1              print the commands instead of running them (needs no root)
#   RINGCAST_SYSCTL_ROOT   where sysctls live            [/proc/sys]
#   RINGCAST_STATE_DIR     where previous values are kept [/var/lib/ringcast/tune]
#   RINGCAST_ETC_ROOT      where persistent files go      [/etc]
#   RINGCAST_PROFILE       the sysctl profile             [99-ringcast.conf next to this script]
#   RINGCAST_UID           the user id to judge root by   [id -u]
set -eu

here=$(cd "$(dirname "$0")" && pwd)
profile=${RINGCAST_PROFILE:-$here/99-ringcast.conf}
sysctl_root=${RINGCAST_SYSCTL_ROOT:-/proc/sys}
state_dir=${RINGCAST_STATE_DIR:-/var/lib/ringcast/tune}
etc_root=${RINGCAST_ETC_ROOT:-/etc}
dry_run=${DRY_RUN:-0}
[ "$dry_run" = 0 ] || [ "$dry_run" = 1 ] || { echo "tune.sh: DRY_RUN must be 0 or 1" >&2; exit 2; }
uid=${RINGCAST_UID:-$(id -u)}

saved="$state_dir/saved"          # key<TAB>value before ringcast changed it, one per line
installed="$state_dir/installed"  # files ringcast installed, one per line
backups="$state_dir/backup"       # files that were there before, kept to put back
tab=$(printf '\t')

die() { echo "tune.sh: $*" >&2; exit 1; }

need_root() {
    [ "$dry_run" = 1 ] && return 0
    [ "$uid" = 0 ] || die "$1 changes kernel settings and needs root: run \`sudo make $2\` \
(or \`DRY_RUN=1 make $2\` to see the commands)"
}

# Profile entries as optional<TAB>key<TAB>rules<TAB>wanted (fields space-separated).
entries() {
    [ -r "$profile" ] || die "cannot read the profile $profile"
    awk '
        /^[ \t]*#@[ \t]*check:/ { sub(/^[ \t]*#@[ \t]*check:[ \t]*/, ""); rules = $0; next }
        /^[ \t]*[#;]/ || /^[ \t]*$/ { next }
        {
            line = $0; opt = 0
            sub(/^[ \t]+/, "", line)
            if (substr(line, 1, 1) == "-") { opt = 1; line = substr(line, 2) }
            eq = index(line, "=")
            if (eq == 0) { print "bad profile line: " $0 > "/dev/stderr"; exit 1 }
            key = substr(line, 1, eq - 1); val = substr(line, eq + 1)
            gsub(/[ \t]+/, "", key)
            gsub(/^[ \t]+|[ \t]+$/, "", val); gsub(/[ \t]+/, " ", val)
            if (rules == "") rules = "min"
            print opt "\t" key "\t" rules "\t" val
            rules = ""
        }' "$profile"
}

path_of() { echo "$sysctl_root/$(echo "$1" | tr . /)"; }

# Current value of a sysctl with whitespace collapsed, or nothing when the key is absent.
current() {
    p=$(path_of "$1")
    [ -r "$p" ] || return 0
    tr -s ' \t\n' '   ' < "$p" | sed 's/^ //; s/ $//'
}

# judge CURRENT WANTED RULES -> STATUS<TAB>VALUE TO WRITE. Fields that pass keep the current
# value, so a setting the admin raised further is never lowered.
judge() {
    awk -v cur="$1" -v want="$2" -v rules="$3" 'BEGIN {
        nc = split(cur, c, " "); nw = split(want, w, " "); nr = split(rules, r, " ")
        status = "OK"; rank = 0; out = ""
        for (i = 1; i <= nw; i++) {
            rule = (i <= nr) ? r[i] : r[nr]
            if (i > nc) ok = 0
            else if (rule == "min") ok = (c[i] + 0 >= w[i] + 0)
            else if (rule == "max") ok = (c[i] + 0 <= w[i] + 0)
            else ok = (c[i] == w[i])
            if (ok) { v = c[i] } else {
                v = w[i]
                label = (rule == "min") ? "LOW" : ((rule == "max") ? "HIGH" : "DIFF")
                lr = (label == "LOW") ? 3 : ((label == "HIGH") ? 2 : 1)
                if (lr > rank) { rank = lr; status = label }
            }
            out = out (i > 1 ? " " : "") v
        }
        print status "\t" out
    }'
}

cmd_check() {
    printf '%-34s %-28s %-28s %s\n' SETTING CURRENT WANTED STATUS
    off=0
    entries > "$work/entries" || exit 1
    while IFS="$tab" read -r opt key rules want; do
        cur=$(current "$key")
        if [ -z "$cur" ]; then
            if [ "$opt" = 1 ]; then
                status="SKIP (module not loaded)"
            else
                status=MISSING off=1
            fi
            cur=-
        else
            status=$(judge "$cur" "$want" "$rules" | cut -f1)
            [ "$status" = OK ] || off=1
        fi
        printf '%-34s %-28s %-28s %s\n' "$key" "$cur" "$want" "$status"
    done < "$work/entries"
    echo "open-file limits (RLIMIT_NOFILE) are per process: see \`ringcast check\`"
    if [ "$off" = 1 ]; then echo "some settings are off the profile: run \`sudo make tune\`"; fi
    return "$off"
}

# run DESCRIPTION-AS-SHELL: print under DRY_RUN, otherwise evaluate. Only values from the
# profile and paths built here reach it.
run() {
    if [ "$dry_run" = 1 ]; then echo "$1"; else eval "$1"; fi
}

# install_file SRC DEST: copy SRC to DEST, keeping what DEST was for revert.
install_file() {
    src=$1 dest=$2
    if [ -f "$dest" ] && cmp -s "$src" "$dest"; then return 0; fi
    if [ -f "$dest" ] && ! grep -qxF "$dest" "$installed" 2>/dev/null; then
        run "mkdir -p '$backups' && cp -p '$dest' '$backups/$(echo "$dest" | tr / %)'"
    fi
    run "mkdir -p '$(dirname "$dest")' && cp '$src' '$dest' && chmod 0644 '$dest'"
    grep -qxF "$dest" "$installed" 2>/dev/null || run "echo '$dest' >> '$installed'"
}

cmd_apply() {
    need_root apply tune
    entries > "$work/entries" || exit 1
    run "mkdir -p '$state_dir'"
    [ "$dry_run" = 1 ] || touch "$saved" "$installed"
    changed=0
    while IFS="$tab" read -r opt key rules want; do
        cur=$(current "$key")
        if [ -z "$cur" ]; then
            [ "$opt" = 1 ] && continue
            echo "tune.sh: skipping $key: not present in this kernel ($(path_of "$key"))" >&2
            continue
        fi
        verdict=$(judge "$cur" "$want" "$rules")
        [ "${verdict%%"$tab"*}" = OK ] && continue
        value=${verdict#*"$tab"}
        if [ "$dry_run" = 0 ] && [ ! -w "$(path_of "$key")" ]; then
            die "cannot write $(path_of "$key"): /proc/sys is read-only here (a container?); \
tune the host instead"
        fi
        # Keep the first value seen: a second apply must not save ringcast's own value.
        if ! grep -q "^$key$tab" "$saved" 2>/dev/null; then
            run "printf '%s\\t%s\\n' '$key' '$cur' >> '$saved'"
        fi
        run "echo '$value' > '$(path_of "$key")'"
        changed=$((changed + 1))
    done < "$work/entries"

    # Persist: the keys ringcast changed, at the values they have now, for the next boot.
    if [ -d "$etc_root/sysctl.d" ]; then
        {
            echo "# Written by ringcast's sysctl/tune.sh: the keys it changed."
            echo "# Why each: sysctl/99-ringcast.conf in the ringcast sources."
            echo "# Remove with \`sudo make untune\`."
            if [ -f "$saved" ]; then
                cut -f1 "$saved" | while read -r key; do
                    # The value just written; DRY_RUN wrote nothing, so show the profile's.
                    if [ "$dry_run" = 1 ]; then
                        val=$(grep "$tab$key$tab" "$work/entries" | cut -f4)
                    else
                        val=$(current "$key")
                    fi
                    if [ -n "$val" ]; then echo "$key = $val"; fi
                done
            fi
        } > "$work/persist.conf"
        if [ -s "$saved" ] || [ "$dry_run" = 1 ]; then
            install_file "$work/persist.conf" "$etc_root/sysctl.d/99-ringcast.conf"
        fi
    else
        echo "no $etc_root/sysctl.d: settings last until reboot; rerun \`make tune\` at boot"
    fi
    if [ -d "$etc_root/security" ]; then
        install_file "$here/limits.d/99-ringcast.conf" \
            "$etc_root/security/limits.d/99-ringcast.conf"
    fi
    if [ -d "$etc_root/systemd/system" ]; then
        install_file "$here/systemd/ringcast.service.d/limits.conf" \
            "$etc_root/systemd/system/ringcast.service.d/limits.conf"
        echo "systemd: run \`systemctl daemon-reload\` and restart ringcast for LimitNOFILE"
    fi
    echo "tune: $changed setting(s) changed$( [ "$dry_run" = 1 ] && echo ' (dry run)')"
    echo "open-file limits apply to new logins and restarted services;" \
        "verify with \`ringcast check\`"
}

cmd_revert() {
    need_root revert untune
    if [ ! -s "$saved" ] && [ ! -s "$installed" ]; then
        echo "untune: nothing to revert (no saved state in $state_dir)"
        return 0
    fi
    if [ -f "$saved" ]; then
        while IFS="$tab" read -r key value; do
            [ -n "$key" ] || continue
            if [ -e "$(path_of "$key")" ]; then
                run "echo '$value' > '$(path_of "$key")'"
            fi
        done < "$saved"
    fi
    if [ -f "$installed" ]; then
        while read -r dest; do
            [ -n "$dest" ] || continue
            backup="$backups/$(echo "$dest" | tr / %)"
            if [ -f "$backup" ]; then
                run "cp -p '$backup' '$dest'"
            else
                run "rm -f '$dest'"
                case $dest in
                    */ringcast.service.d/*) run "rmdir '$(dirname "$dest")' 2>/dev/null || true" ;;
                esac
            fi
        done < "$installed"
    fi
    run "rm -rf '$backups' && rm -f '$saved' '$installed' && rmdir '$state_dir' 2>/dev/null || true"
    echo "untune: previous values restored$( [ "$dry_run" = 1 ] && echo ' (dry run)')"
}

work=$(mktemp -d "${TMPDIR:-/tmp}/ringcast-tune.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

case ${1:-} in
    check) cmd_check ;;
    apply) cmd_apply ;;
    revert) cmd_revert ;;
    *) echo "usage: $0 check|apply|revert" >&2; exit 2 ;;
esac
