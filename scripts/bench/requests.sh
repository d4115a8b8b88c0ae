#!/usr/bin/env bash
# Counts the FUSE requests the kernel sends ssefs for one metadata workload: creating small
# files (as scripts/bench.sh does) and, given a tarball, extracting it. Counts are exact where
# timings on a shared machine are not, so a lever that saves round trips shows here first.
# Needs root (mounts); unmounts and removes what it made on every exit.
set -Eeuo pipefail
export LC_ALL=C

usage() {
    cat <<'EOF'
Usage: scripts/bench/requests.sh [FILES [TARBALL]]

Mounts a fresh store with request logging (RUST_LOG=fuser=debug), creates FILES small files
[1000] in a new directory with scripts/bench/fsops.py, then extracts TARBALL (if given) with
`tar --no-same-owner -xf`, and prints the requests of each step by opcode.

Environment: BENCH_SSEFS [target/release/ssefs], BENCH_DIR [$TMPDIR or /tmp].
EOF
}

case ${1:-} in -h | --help) usage; exit 0 ;; esac
FILES=${1:-1000}
TARBALL=${2:-}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SSEFS=${BENCH_SSEFS:-$REPO/target/release/ssefs}
[ "$(id -u)" = 0 ] || { echo "requests.sh: needs root" >&2; exit 2; }
[ -x "$SSEFS" ] || { echo "requests.sh: no ssefs binary at $SSEFS" >&2; exit 2; }
[ -z "$TARBALL" ] || [ -r "$TARBALL" ] || { echo "requests.sh: cannot read $TARBALL" >&2; exit 2; }

WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/ssefs-requests.XXXXXX")
PID=
cleanup() {
    if mountpoint -q "$WORK/mnt"; then umount "$WORK/mnt" || umount -l "$WORK/mnt"; fi
    [ -z "$PID" ] || wait "$PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir "$WORK/mnt"
"$SSEFS" init "$WORK/store" --root-key "$WORK/root.key" >/dev/null
RUST_LOG=fuser=debug "$SSEFS" mount "$WORK/store" "$WORK/mnt" --root-key "$WORK/root.key" \
    -o default_sse=AES256 2>>"$WORK/log" &
PID=$!
for _ in $(seq 100); do mountpoint -q "$WORK/mnt" && break; sleep 0.1; done
mountpoint -q "$WORK/mnt" || { echo "requests.sh: not mounted; see the log:" >&2; tail "$WORK/log" >&2; exit 1; }
mkdir "$WORK/mnt/bench"

# count STEP: prints the requests logged since the last call, by opcode, and starts afresh.
count() {
    sleep 0.5 # the kernel sends RELEASE and FORGET without waiting
    printf '%s:' "$1"
    grep -ao 'FUSE( *[0-9]*) ino 0x[0-9a-f]* [A-Z_]*' "$WORK/log" | awk '{ print $NF }' |
        sort | uniq -c | sort -rn | awk '{ printf " %s %s", $2, $1; n += $1 } END { printf "; total %d\n", n }'
    : >"$WORK/log"
}

sleep 0.5
: >"$WORK/log"
python3 "$REPO/scripts/bench/fsops.py" create "$WORK/mnt/bench/files" "$FILES" >/dev/null
count "create $FILES files"
if [ -n "$TARBALL" ]; then
    mkdir "$WORK/mnt/bench/tree"
    sleep 0.5
    : >"$WORK/log"
    tar --no-same-owner -xf "$TARBALL" -C "$WORK/mnt/bench/tree"
    count "extract $(basename "$TARBALL")"
fi
