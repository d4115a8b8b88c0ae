#!/usr/bin/env bash
# Times one metadata workload on several ssefs binaries and on gocryptfs, all mounted at once
# on the same filesystem, in rounds that visit the targets in a new random order each time,
# and prints the median of each with its ratio to gocryptfs's. On a shared machine, where the
# load drifts within a minute, this tells two binaries (or two settings) apart where separate
# runs of scripts/bench.sh cannot. Needs root (mounts); unmounts and removes what it made on
# every exit, and puts back the fuse module's enable_uring.
set -Eeuo pipefail
export LC_ALL=C

usage() {
    cat <<'EOF'
Usage: scripts/bench/interleave.sh [options] [LABEL=]SSEFS_BINARY...

Mounts each ssefs binary (default: target/release/ssefs) on a fresh store with
-o default_sse=AES256, and gocryptfs beside them, then runs ROUNDS rounds of the workload on
every target in a random order, and prints per target the median, the fastest round and the
ratio of the median to gocryptfs's (lower is better).

Options:
  --rounds N        rounds [7]
  --workload W      create: create FILES small files in a new directory (as scripts/bench.sh)
                    untar: extract TARBALL into a new directory          [create]
  --files N         files per create round [3000]
  --tarball FILE    the tree to extract (required for untar)
  -h, --help        this text

Environment: BENCH_DIR [$TMPDIR or /tmp] (the filesystem measured), BENCH_IO_URING [1]
(1: turn on the fuse module's enable_uring for the run, as scripts/bench.sh does; 0: leave it).
EOF
}

REPO=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=7
WORKLOAD=create
FILES=3000
TARBALL=
BINARIES=()
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=${2:?--rounds needs a number}; shift 2 ;;
        --workload) WORKLOAD=${2:?--workload needs create or untar}; shift 2 ;;
        --files) FILES=${2:?--files needs a number}; shift 2 ;;
        --tarball) TARBALL=${2:?--tarball needs a file}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "interleave.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) BINARIES+=("$1"); shift ;;
    esac
done
[ ${#BINARIES[@]} -gt 0 ] || BINARIES=("$REPO/target/release/ssefs")
die() { echo "interleave.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "needs root"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive number"
[[ $FILES =~ ^[1-9][0-9]*$ ]] || die "--files must be a positive number"
case $WORKLOAD in
    create) ;;
    untar) [ -r "$TARBALL" ] || die "untar needs --tarball FILE, a readable tar file" ;;
    *) die "unknown workload $WORKLOAD (create or untar)" ;;
esac
command -v gocryptfs >/dev/null || die "gocryptfs is not installed (scripts/bench.sh installs it)"

declare -A BIN=()
LABELS=()
for arg in "${BINARIES[@]}"; do
    label=${arg%%=*} path=${arg#*=}
    [ "$label" != "$arg" ] || label=ssefs$((${#LABELS[@]} + 1))
    [[ $label =~ ^[A-Za-z0-9_.-]+$ ]] && [ "$label" != gocryptfs ] || die "bad label $label"
    [ -z "${BIN[$label]:-}" ] || die "label $label given twice"
    [ -x "$path" ] || die "no ssefs binary at $path"
    BIN[$label]=$path
    LABELS+=("$label")
done

URING_PARAM=/sys/module/fuse/parameters/enable_uring
URING_BEFORE=
WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/ssefs-interleave.XXXXXX")
PIDS=()
cleanup() {
    for m in "$WORK"/mnt.*; do
        if mountpoint -q "$m"; then umount "$m" || umount -l "$m"; fi
    done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
    if [ -n "$URING_BEFORE" ]; then echo "$URING_BEFORE" >"$URING_PARAM" || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "${BENCH_IO_URING:-1}" = 1 ] && [ -w "$URING_PARAM" ]; then
    URING_BEFORE=$(cat "$URING_PARAM")
    echo 1 >"$URING_PARAM"
fi

wait_mounted() {
    for _ in $(seq 100); do mountpoint -q "$1" && return 0; sleep 0.1; done
    die "$1 did not mount; see $WORK/log"
}

for label in "${LABELS[@]}"; do
    mkdir "$WORK/mnt.$label"
    "${BIN[$label]}" init "$WORK/store.$label" --root-key "$WORK/key.$label" >/dev/null
    RUST_LOG=warn "${BIN[$label]}" mount "$WORK/store.$label" "$WORK/mnt.$label" \
        --root-key "$WORK/key.$label" -o default_sse=AES256 2>>"$WORK/log" &
    PIDS+=($!)
    wait_mounted "$WORK/mnt.$label"
    mkdir "$WORK/mnt.$label/bench"
done
echo interleave >"$WORK/pass"
mkdir "$WORK/cipher" "$WORK/mnt.gocryptfs"
gocryptfs -init -q -scryptn 10 -passfile "$WORK/pass" "$WORK/cipher" >>"$WORK/log" 2>&1
gocryptfs -fg -nosyslog -q -passfile "$WORK/pass" "$WORK/cipher" "$WORK/mnt.gocryptfs" \
    >>"$WORK/log" 2>&1 &
PIDS+=($!)
wait_mounted "$WORK/mnt.gocryptfs"
mkdir "$WORK/mnt.gocryptfs/bench"

# one TARGET ROUND: runs the workload once and prints its seconds.
one() {
    local d=$WORK/mnt.$1/bench/r$2 t0
    sync
    if [ "$WORKLOAD" = create ]; then
        python3 "$REPO/scripts/bench/fsops.py" create "$d" "$FILES"
    else
        t0=$EPOCHREALTIME
        mkdir "$d"
        tar --no-same-owner -xf "$TARBALL" -C "$d"
        python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.6f}')" \
            "$t0" "$EPOCHREALTIME"
    fi
    rm -rf "$d"
}

RESULTS=$WORK/results
: >"$RESULTS"
for round in $(seq "$ROUNDS"); do
    for target in $(printf '%s\n' "${LABELS[@]}" gocryptfs | shuf); do
        echo "$target $(one "$target" "$round")" >>"$RESULTS"
    done
done

echo "$WORKLOAD, $ROUNDS rounds, targets in random order each round$(
    [ "$WORKLOAD" = create ] && echo ", $FILES files a round")"
python3 - "$RESULTS" "${LABELS[@]}" gocryptfs <<'EOF'
import statistics
import sys

runs = {}
for line in open(sys.argv[1]):
    target, seconds = line.split()
    runs.setdefault(target, []).append(float(seconds))
reference = statistics.median(runs["gocryptfs"])
for target in sys.argv[2:]:
    times = runs[target]
    median = statistics.median(times)
    print(f"{target:12} median {median:8.3f} s  fastest {min(times):8.3f} s  "
          f"{median / reference:5.2f}x gocryptfs")
EOF
