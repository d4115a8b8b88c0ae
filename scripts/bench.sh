#!/usr/bin/env bash
# Side-by-side benchmark of ssefs (AES256 and none) against the plain backing directory and
# gocryptfs: sequential, random and metadata workloads and the daemon's peak memory. Prints a
# table with PASS/FAIL per target and writes JSON. Needs root; always unmounts what it mounted.
set -Eeuo pipefail
export LC_ALL=C

usage() {
    cat <<'EOF'
Usage: scripts/bench.sh [--json FILE] [--targets LIST] [--no-build]

Benchmarks the plain backing directory, ssefs (-o default_sse=AES256 and none) and gocryptfs
side by side and prints a table of medians with ratios to gocryptfs, then PASS/FAIL per
performance target. Needs root (installs fio, gocryptfs and fuse3 when missing, drops caches).

  --json FILE      where to write the JSON report (default: bench-results.json)
  --targets LIST   comma-separated subset of plain,ssefs-aes256,ssefs-none,gocryptfs
  --no-build       do not run `cargo build --release` (use BENCH_SSEFS or target/release/ssefs)

Environment (defaults in brackets):
  BENCH_RUNS [3]         runs per figure (the median is reported)
  BENCH_MEM_RUNS [RUNS]  runs per memory figure
  BENCH_SEQ_MIB [1024]   size of the sequential write/read file
  BENCH_RAND_MIB [256]   size of the random-I/O file
  BENCH_RAND_SECS [5]    seconds per random read and random write job
  BENCH_FILES [10000]    small files created
  BENCH_TREE_MIB [80]    size of the source-tree tarball
  BENCH_TREE_SRC         directory whose subdirectories fill the tarball
                         [the cargo registry sources, else /usr/include]
  BENCH_STREAM_MIB [4096] data streamed through the daemon for the memory figure
  BENCH_OPEN_FILES [10000] files held open for the memory figure
  BENCH_DIR [$TMPDIR or /tmp] where the temporary directories go (the filesystem measured)
  BENCH_TIMEOUT [900]    seconds before one workload step is abandoned
  BENCH_SSEFS            the ssefs binary [target/release/ssefs]
  BENCH_IO_URING [1]     1: turn on the fuse module's enable_uring for the run (put back as it
                         was at the end), so ssefs takes requests through FUSE over io_uring
                         (Linux 6.14+; gocryptfs does not use it); 0: leave it as it is

Quick smoke run (about a minute):
  BENCH_RUNS=1 BENCH_SEQ_MIB=64 BENCH_RAND_MIB=32 BENCH_RAND_SECS=1 BENCH_FILES=500 \
  BENCH_TREE_MIB=5 BENCH_STREAM_MIB=128 BENCH_OPEN_FILES=500 scripts/bench.sh
EOF
}

die() {
    echo "bench.sh: $*" >&2
    exit 2
}

note() {
    echo "bench.sh: $*" >&2
}

REPO=$(cd "$(dirname "$0")/.." && pwd)
HELPERS=$REPO/scripts/bench
ALL_TARGETS=plain,ssefs-aes256,ssefs-none,gocryptfs
JSON_OUT=bench-results.json
TARGET_LIST=$ALL_TARGETS
BUILD=1
while [ $# -gt 0 ]; do
    case $1 in
        --json) [ $# -ge 2 ] || die "--json needs a file"; JSON_OUT=$2; shift 2 ;;
        --json=*) JSON_OUT=${1#--json=}; shift ;;
        --targets) [ $# -ge 2 ] || die "--targets needs a list"; TARGET_LIST=$2; shift 2 ;;
        --targets=*) TARGET_LIST=${1#--targets=}; shift ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
case $JSON_OUT in /*) ;; *) JSON_OUT=$PWD/$JSON_OUT ;; esac
LOG=${JSON_OUT%.json}.log

positive_int() {
    local name=$1 value=$2
    [[ $value =~ ^[1-9][0-9]*$ ]] || die "$name must be a positive integer, got '$value'"
    echo "$value"
}
RUNS=$(positive_int BENCH_RUNS "${BENCH_RUNS:-3}")
MEM_RUNS=$(positive_int BENCH_MEM_RUNS "${BENCH_MEM_RUNS:-$RUNS}")
SEQ_MIB=$(positive_int BENCH_SEQ_MIB "${BENCH_SEQ_MIB:-1024}")
RAND_MIB=$(positive_int BENCH_RAND_MIB "${BENCH_RAND_MIB:-256}")
RAND_SECS=$(positive_int BENCH_RAND_SECS "${BENCH_RAND_SECS:-5}")
FILES=$(positive_int BENCH_FILES "${BENCH_FILES:-10000}")
TREE_MIB=$(positive_int BENCH_TREE_MIB "${BENCH_TREE_MIB:-80}")
STREAM_MIB=$(positive_int BENCH_STREAM_MIB "${BENCH_STREAM_MIB:-4096}")
OPEN_FILES=$(positive_int BENCH_OPEN_FILES "${BENCH_OPEN_FILES:-10000}")
TIMEOUT=$(positive_int BENCH_TIMEOUT "${BENCH_TIMEOUT:-900}")
BASE_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}}
SSEFS=${BENCH_SSEFS:-$REPO/target/release/ssefs}

IFS=, read -r -a TARGETS <<<"$TARGET_LIST"
[ ${#TARGETS[@]} -gt 0 ] || die "no targets given"
for t in "${TARGETS[@]}"; do
    case ",$ALL_TARGETS," in *",$t,"*) ;; *) die "unknown target '$t' (known: $ALL_TARGETS)" ;; esac
done
wants() { case ",$TARGET_LIST," in *",$1"*) return 0 ;; *) return 1 ;; esac; }

[ "$(id -u)" -eq 0 ] || die "run as root: it mounts, installs packages and drops caches"

# ---------------------------------------------------------------------------------------------
# State, and the cleanup that runs on every exit (normal, error, Ctrl-C, TERM).

WORK=""
declare -A MNT=() PID=() DIR=() OK=()

is_mounted() {
    awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo
}

mount_type() {
    awk -v m="$1" '$5 == m { for (i = 6; i <= NF; i++) if ($i == "-") { t = $(i + 1); break } }
                   END { print t }' /proc/self/mountinfo
}

# Unmounts a FUSE target and waits for its daemon to exit (TERM, then KILL, if it lingers).
unmount_target() {
    local t=$1 mnt=${MNT[$1]:-} pid=${PID[$1]:-} _
    if [ -n "$mnt" ] && is_mounted "$mnt"; then
        fusermount3 -u "$mnt" 2>>"$LOG" || { sleep 1; fusermount3 -u "$mnt" 2>>"$LOG"; } ||
            fusermount3 -uz "$mnt" 2>>"$LOG" || true
    fi
    if [ -n "$pid" ]; then
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            note "$t: daemon $pid still running after unmount; sending TERM"
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    fi
    PID[$t]=""
}

URING_PARAM=/sys/module/fuse/parameters/enable_uring
URING_BEFORE=""

cleanup() {
    local rc=$? t
    set +e
    trap - EXIT INT TERM
    for t in "${!PID[@]}"; do unmount_target "$t"; done
    [ -n "$URING_BEFORE" ] && echo "$URING_BEFORE" >"$URING_PARAM"
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        awk -v w="$WORK/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo |
            while IFS= read -r m; do fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
        if awk -v w="$WORK/" 'index($5, w) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
            note "a mount under $WORK is still present; leaving the directory in place"
        else
            rm -rf --one-file-system "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'note "interrupted"; exit 130' INT
trap 'note "terminated"; exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Tools.

ensure_tools() {
    local missing=()
    command -v fio >/dev/null || missing+=(fio)
    command -v python3 >/dev/null || missing+=(python3)
    if wants ssefs || wants gocryptfs; then command -v fusermount3 >/dev/null || missing+=(fuse3); fi
    if wants gocryptfs; then command -v gocryptfs >/dev/null || missing+=(gocryptfs); fi
    if [ ${#missing[@]} -gt 0 ]; then
        note "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if wants ssefs; then
        if [ "$BUILD" -eq 1 ]; then
            note "building ssefs (cargo build --release)"
            (cd "$REPO" && cargo build --release) >&2
        fi
        [ -x "$SSEFS" ] || die "no ssefs binary at $SSEFS"
    fi
    if wants ssefs || wants gocryptfs; then
        [ -c /dev/fuse ] || die "/dev/fuse is missing"
    fi
}

# ---------------------------------------------------------------------------------------------
# Targets: set-up, mount, remount.

# How the ssefs mounts took requests: "io_uring" or "/dev/fuse" (set when they mount).
TRANSPORT="-"

DROP_CACHES=1
drop_caches() {
    sync
    if [ "$DROP_CACHES" -eq 1 ] && ! echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
        note "cannot drop caches (/proc/sys/vm/drop_caches is not writable): cold reads are not cold"
        DROP_CACHES=0
    fi
}

wait_mounted() {
    local t=$1 mnt=$2 pid=$3 _
    for _ in $(seq 200); do
        if is_mounted "$mnt"; then
            case $(mount_type "$mnt") in fuse*) return 0 ;; esac
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            note "$t: the daemon exited before mounting; last lines of $LOG:"
            tail -n 20 "$LOG" >&2
            return 1
        fi
        sleep 0.1
    done
    note "$t: not mounted after 20 s"
    return 1
}

mount_target() {
    local t=$1 base=$WORK/$1
    case $t in
        plain) return 0 ;;
        ssefs-aes256 | ssefs-none)
            local sse=AES256
            [ "$t" = ssefs-none ] && sse=none
            RUST_LOG=${RUST_LOG:-warn} "$SSEFS" mount "$base/store" "${MNT[$t]}" \
                --root-key "$base/root.key" -o "default_sse=$sse" >>"$LOG" 2>&1 &
            ;;
        gocryptfs)
            gocryptfs -fg -nosyslog -q -passfile "$base/pass" "$base/cipher" "${MNT[$t]}" >>"$LOG" 2>&1 &
            ;;
    esac
    PID[$t]=$!
    wait_mounted "$t" "${MNT[$t]}" "${PID[$t]}"
}

remount_target() {
    [ "$1" = plain ] && return 0
    unmount_target "$1"
    mount_target "$1"
}

setup_target() {
    local t=$1 base=$WORK/$1
    mkdir -p "$base"
    case $t in
        plain)
            mkdir "$base/data"
            DIR[$t]=$base/data
            ;;
        ssefs-aes256 | ssefs-none)
            MNT[$t]=$base/mnt
            mkdir "$base/mnt"
            "$SSEFS" init "$base/store" --root-key "$base/root.key" >>"$LOG" 2>&1 ||
                { note "$t: ssefs init failed; see $LOG"; return 1; }
            mount_target "$t" || return 1
            mkdir "$base/mnt/bench" || return 1
            DIR[$t]=$base/mnt/bench
            if grep -qs '^fuser-ring-' /proc/"${PID[$t]}"/task/*/comm; then
                TRANSPORT="io_uring"
            else
                TRANSPORT="/dev/fuse"
            fi
            ;;
        gocryptfs)
            MNT[$t]=$base/mnt
            mkdir "$base/mnt" "$base/cipher"
            echo pw >"$base/pass"
            gocryptfs -init -q -scryptn 10 -passfile "$base/pass" "$base/cipher" >>"$LOG" 2>&1 ||
                { note "$t: gocryptfs -init failed; see $LOG"; return 1; }
            mount_target "$t" || return 1
            DIR[$t]=$base/mnt
            ;;
    esac
}

target_alive() {
    local t=$1
    [ "$t" = plain ] && return 0
    [ -n "${PID[$t]:-}" ] && kill -0 "${PID[$t]}" 2>/dev/null && is_mounted "${MNT[$t]}"
}

# ---------------------------------------------------------------------------------------------
# Workloads. Each prints one figure on stdout and returns non-zero on failure. They run in a
# command substitution, so they must not change mounts (that is done before, in bench_run).

elapsed_since() {
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.6f", b - a }'
}

mib_per_s() {
    awk -v m="$1" -v s="$2" 'BEGIN { if (s <= 0) exit 1; printf "%.3f", m / s }'
}

w_seq_write() {
    local t0=$EPOCHREALTIME
    timeout "$TIMEOUT" dd if=/dev/zero of="$1/seq.dat" bs=1M count="$SEQ_MIB" conv=fsync status=none ||
        return 1
    mib_per_s "$SEQ_MIB" "$(elapsed_since "$t0")"
}

w_seq_read() {
    local t0=$EPOCHREALTIME out bytes
    out=$(timeout "$TIMEOUT" dd if="$1/seq.dat" of=/dev/null bs=1M 2>&1) || { echo "$out" >&2; return 1; }
    local secs
    secs=$(elapsed_since "$t0")
    bytes=$(awk '/bytes/ { b = $1 } END { print b }' <<<"$out")
    if [ "$bytes" != $((SEQ_MIB * 1048576)) ]; then
        echo "read $bytes bytes, expected $((SEQ_MIB * 1048576))" >&2
        return 1
    fi
    mib_per_s "$SEQ_MIB" "$secs"
}

# fio job on the random-I/O file; prints its IOPS. $1: target, $3: randread or randwrite.
# The backing store's page cache is warm (the file is read once through the mount first) and
# the FUSE layer's is cold (fio's invalidate=1 drops the mount's pages of the file), so the
# figure measures the daemon's read and write path, not the disk nor the kernel's cache. For
# plain, the backing store is the file itself: it stays warm (invalidate=0).
w_fio() {
    local t=$1 dir=$2 rw=$3 out=$WORK/fio-$3.json side=read extra=() invalidate=1
    [ "$t" != plain ] || invalidate=0
    if [ "$rw" = randwrite ]; then side="write"; extra=(--end_fsync=1); fi
    timeout "$TIMEOUT" dd if="$dir/rand.dat" of=/dev/null bs=1M status=none || return 1
    timeout "$TIMEOUT" fio --name="$rw" --filename="$dir/rand.dat" --size="${RAND_MIB}M" --rw="$rw" \
        --bs=4k --ioengine=psync --direct=0 --invalidate="$invalidate" --numjobs=1 --time_based \
        --runtime="${RAND_SECS}s" \
        "${extra[@]}" --output-format=json --output="$out" >/dev/null || return 1
    python3 - "$out" "$side" <<'EOF'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
if job.get("error"):
    sys.exit(f"fio error {job['error']}")
print(f"{job[sys.argv[2]]['iops']:.1f}")
EOF
}

w_create() {
    timeout "$TIMEOUT" python3 "$HELPERS/fsops.py" create "$1" "$FILES"
}

w_untar() {
    local t0=$EPOCHREALTIME
    mkdir "$1" || return 1
    timeout "$TIMEOUT" tar --no-same-owner -xf "$TARBALL" -C "$1" || return 1
    elapsed_since "$t0"
}

w_ls() {
    local t0=$EPOCHREALTIME
    timeout "$TIMEOUT" ls -lR "$1" >/dev/null || return 1
    elapsed_since "$t0"
}

w_rm() {
    local t0=$EPOCHREALTIME
    timeout "$TIMEOUT" rm -rf "$1" || return 1
    [ ! -e "$1" ] || return 1
    elapsed_since "$t0"
}

daemon_hwm_mib() {
    awk '/^VmHWM:/ { printf "%.1f", $2 / 1024; found = 1 } END { exit !found }' "/proc/$1/status"
}

w_mem_stream() {
    local dir=$1 pid=$2 out hwm
    timeout "$TIMEOUT" dd if=/dev/zero of="$dir/stream.dat" bs=1M count="$STREAM_MIB" conv=fsync status=none ||
        return 1
    drop_caches
    out=$(timeout "$TIMEOUT" dd if="$dir/stream.dat" of=/dev/null bs=1M 2>&1) || { echo "$out" >&2; return 1; }
    hwm=$(daemon_hwm_mib "$pid") || return 1
    rm -f "$dir/stream.dat"
    echo "$hwm"
}

# Records, besides the peak RSS, how many files the daemon let us hold open (it may run out
# of descriptors before OPEN_FILES).
w_mem_open() {
    local t=$1 run=$2 dir=$3 pid=$4 out hwm held stopped_by
    out=$(timeout "$TIMEOUT" python3 "$HELPERS/fsops.py" hold-open "$dir" "$OPEN_FILES" "$pid") || return 1
    read -r hwm _ held stopped_by <<<"$out"
    record "$t" mem_open_held "$run" "$held"
    if [ "$held" -lt "$OPEN_FILES" ]; then
        echo "$t: only $held of $OPEN_FILES files could be held open ($stopped_by)" >&2
    fi
    awk -v k="$hwm" 'BEGIN { printf "%.1f", k / 1024 }'
}

RESULTS=""
record() {
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"
}

# step TARGET WORKLOAD RUN COMMAND...: runs one workload and records its figure or "error".
step() {
    local t=$1 w=$2 run=$3 value
    shift 3
    echo "== $t $w run $run" >>"$LOG"
    if value=$("$@" 2>>"$LOG") && [ -n "$value" ]; then
        record "$t" "$w" "$run" "$value"
        printf '  %-13s %-14s run %s: %s\n' "$t" "$w" "$run" "$value" >&2
    else
        record "$t" "$w" "$run" error
        printf '  %-13s %-14s run %s: FAILED (see %s)\n' "$t" "$w" "$run" "$LOG" >&2
        tail -n 3 "$LOG" | sed 's/^/      /' >&2
    fi
}

# Marks a target broken when its daemon died; its remaining figures are recorded as errors.
check_alive() {
    if ! target_alive "$1"; then
        note "$1: the mount is gone; skipping its remaining workloads"
        OK[$1]=0
        return 1
    fi
}

bench_run() {
    local t=$1 run=$2 d=${DIR[$1]}
    step "$t" seq_write "$run" w_seq_write "$d"
    step "$t" seq_read_hot "$run" w_seq_read "$d"
    check_alive "$t" || return 0
    if remount_target "$t"; then
        drop_caches
        step "$t" seq_read_cold "$run" w_seq_read "$d"
    else
        record "$t" seq_read_cold "$run" error
    fi
    check_alive "$t" || return 0
    rm -f "$d/seq.dat"
    if [ ! -f "$d/rand.dat" ]; then
        timeout "$TIMEOUT" dd if=/dev/zero of="$d/rand.dat" bs=1M count="$RAND_MIB" conv=fsync status=none \
            2>>"$LOG" || note "$t: laying out the random-I/O file failed"
    fi
    step "$t" rand_read_4k "$run" w_fio "$t" "$d" randread
    step "$t" rand_write_4k "$run" w_fio "$t" "$d" randwrite
    check_alive "$t" || return 0
    step "$t" create_files "$run" w_create "$d/files.$run"
    rm -rf "$d/files.$run" 2>>"$LOG" || true
    check_alive "$t" || return 0
    step "$t" untar "$run" w_untar "$d/tree.$run"
    step "$t" ls_lR "$run" w_ls "$d/tree.$run"
    step "$t" rm_rf "$run" w_rm "$d/tree.$run"
    check_alive "$t" || return 0
}

bench_memory() {
    local t=$1 run=$2 d=${DIR[$1]}
    if remount_target "$t"; then
        step "$t" mem_stream "$run" w_mem_stream "$d" "${PID[$t]}"
    else
        record "$t" mem_stream "$run" error
    fi
    check_alive "$t" || return 0
    if ! python3 "$HELPERS/fsops.py" create "$d/open.d" "$OPEN_FILES" >/dev/null 2>>"$LOG"; then
        record "$t" mem_open "$run" error
    elif remount_target "$t"; then
        step "$t" mem_open "$run" w_mem_open "$t" "$run" "$d/open.d" "${PID[$t]}"
    else
        record "$t" mem_open "$run" error
    fi
    check_alive "$t" || return 0
    rm -rf "$d/open.d" 2>>"$LOG" || true
}

# ---------------------------------------------------------------------------------------------
# The source tree: a tarball of whole subdirectories of a real source tree, about TREE_MIB.

TARBALL=""
TREE_ENTRIES=0
TREE_ACTUAL_MIB=0
build_tarball() {
    local src=${BENCH_TREE_SRC:-} registry entries=() total=0 size e
    if [ -z "$src" ]; then
        for registry in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/; do
            [ -d "$registry" ] && src=${registry%/} && break
        done
        [ -n "$src" ] || src=/usr/include
    fi
    [ -d "$src" ] || die "source tree $src does not exist"
    while IFS= read -r e; do
        size=$(du -sb "$src/$e" | awk '{ print $1 }')
        entries+=("$e")
        total=$((total + size))
        [ "$total" -lt $((TREE_MIB * 1048576)) ] || break
    done < <(find "$src" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort)
    [ ${#entries[@]} -gt 0 ] || die "source tree $src is empty"
    TARBALL=$WORK/tree.tar
    tar --sort=name --owner=0 --group=0 --numeric-owner -cf "$TARBALL" -C "$src" "${entries[@]}"
    TREE_ENTRIES=$(tar -tf "$TARBALL" | wc -l)
    TREE_ACTUAL_MIB=$(( $(stat -c %s "$TARBALL") / 1048576 ))
    note "source tree: ${#entries[@]} directories, $TREE_ENTRIES entries, $TREE_ACTUAL_MIB MiB tarball"
}

# ---------------------------------------------------------------------------------------------

main() {
    : >"$LOG"
    ensure_tools
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    [ "$(ulimit -n)" -gt $((OPEN_FILES + 64)) ] || die "cannot raise the open-file limit above $OPEN_FILES"
    # gocryptfs needs one backing descriptor per open file, and so does ssefs (which keeps a
    # quarter of the limit for other descriptors): warn when that leaves too little room.
    if [ "$(ulimit -n)" -lt $((OPEN_FILES + OPEN_FILES / 3 + 64)) ]; then
        note "the open-file limit is $(ulimit -n): a daemon may not be able to hold" \
            "$OPEN_FILES files open"
    fi

    mkdir -p "$BASE_DIR"
    WORK=$(mktemp -d "$BASE_DIR/ssefs-bench.XXXXXX")
    RESULTS=$WORK/results.tsv
    : >"$RESULTS"
    local need=$((SEQ_MIB + ${#TARGETS[@]} * (RAND_MIB + 3 * TREE_MIB) + STREAM_MIB + 512))
    local avail
    avail=$(df --output=avail -BM "$WORK" | tail -1 | tr -dc 0-9)
    [ "$avail" -ge "$need" ] || die "$WORK has $avail MiB free; the benchmark needs about $need MiB"

    if [ "${BENCH_IO_URING:-1}" = 1 ] && wants ssefs; then
        if [ -w "$URING_PARAM" ]; then
            URING_BEFORE=$(cat "$URING_PARAM")
            echo 1 >"$URING_PARAM"
        else
            note "this kernel has no FUSE over io_uring ($URING_PARAM): ssefs uses /dev/fuse"
        fi
    fi

    local started loadavg_start t run
    started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)
    build_tarball

    for t in "${TARGETS[@]}"; do
        note "setting up $t"
        if setup_target "$t"; then OK[$t]=1; else OK[$t]=0; note "$t: set-up failed; its figures are errors"; fi
    done
    # Targets interleave within each run, so a slow spell of the machine hits them all alike.
    # bench_run and bench_memory run with `set -e` off (`|| true`): one failing step is recorded
    # as an error and the rest go on.
    for run in $(seq "$RUNS"); do
        for t in "${TARGETS[@]}"; do
            if [ "${OK[$t]}" = 1 ]; then bench_run "$t" "$run" || true; fi
        done
    done
    for run in $(seq "$MEM_RUNS"); do
        for t in "${TARGETS[@]}"; do
            if [ "$t" != plain ] && [ "${OK[$t]}" = 1 ]; then bench_memory "$t" "$run" || true; fi
        done
    done
    local w
    for t in "${TARGETS[@]}"; do
        for w in seq_write seq_read_hot seq_read_cold rand_read_4k rand_write_4k create_files untar \
            ls_lR rm_rf mem_stream mem_open; do
            if [ "$t" = plain ] && [[ $w == mem_* ]]; then continue; fi
            grep -q "^$t	$w	" "$RESULTS" || record "$t" "$w" 0 error
        done
    done

    local commit
    commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$REPO" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || commit="$commit+dirty"
    {
        printf 'targets\t%s\n' "$(IFS=,; echo "${TARGETS[*]}")"
        printf 'runs\t%s\nmem_runs\t%s\n' "$RUNS" "$MEM_RUNS"
        printf 'seq_mib\t%s\nrand_mib\t%s\nrand_secs\t%s\n' "$SEQ_MIB" "$RAND_MIB" "$RAND_SECS"
        printf 'files\t%s\ntree_mib\t%s\ntree_entries\t%s\n' "$FILES" "$TREE_ACTUAL_MIB" "$TREE_ENTRIES"
        printf 'stream_mib\t%s\nopen_files\t%s\n' "$STREAM_MIB" "$OPEN_FILES"
        printf 'drop_caches\t%s\n' "$DROP_CACHES"
        printf 'started\t%s\nfinished\t%s\n' "$started" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        printf 'loadavg_start\t%s\nloadavg_end\t%s\n' "$loadavg_start" "$(cut -d' ' -f1-3 /proc/loadavg)"
        printf 'ssefs_commit\t%s\nopen_file_limit\t%s\n' "$commit" "$(ulimit -n)"
        printf 'ssefs_transport\t%s\n' "$TRANSPORT"
    } >"$WORK/meta.tsv"
    python3 "$HELPERS/report.py" --results "$RESULTS" --meta "$WORK/meta.tsv" --json "$JSON_OUT" \
        --work-dir "$WORK"
}

main
