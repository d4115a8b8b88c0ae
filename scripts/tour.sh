#!/usr/bin/env bash
# The two-minute tour of ssefs: create a store, mount it, make a bucket, copy files in, ask how
# they are encrypted, see that the store holds only ciphertext, and unmount.
#
#   scripts/tour.sh            # uses `ssefs` from PATH, else target/{release,debug}/ssefs
#   SSEFS=/path/to/ssefs scripts/tour.sh
#
# Needs FUSE 3 (fusermount3) and attr (getfattr). Everything happens in a temporary directory
# that is unmounted and removed at the end, even when a step fails.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
ssefs=${SSEFS:-}
if [ -z "$ssefs" ]; then
    ssefs=$(command -v ssefs || true)
fi
for candidate in "$here/target/release/ssefs" "$here/target/debug/ssefs"; do
    if [ -z "$ssefs" ] && [ -x "$candidate" ]; then
        ssefs=$candidate
    fi
done
if [ -z "$ssefs" ]; then
    echo "tour: no ssefs binary found; run 'cargo build --release' or set SSEFS" >&2
    exit 1
fi
for tool in fusermount3 getfattr; do
    command -v "$tool" >/dev/null || { echo "tour: $tool is not installed" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/ssefs-tour.XXXXXX")
daemon=""

is_mounted() {
    # Field 5 of mountinfo is the mountpoint.
    awk -v m="$work/mnt" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo
}

cleanup() {
    if is_mounted; then
        fusermount3 -u "$work/mnt" 2>/dev/null || umount -l "$work/mnt" 2>/dev/null || true
    fi
    if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
        kill "$daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
# Shows `ssefs ...` whichever binary runs.
run_ssefs() { printf '$ ssefs %s\n' "$*"; "$ssefs" "$@"; }

cd "$work"
mkdir mnt

step "1. Create a store; the root key file is made for you (mode 0600) and lives outside it"
run_ssefs init store --root-key root.key
run ls -l root.key
run ls -A store store/.ssefs

step "2. Mount the store (the daemon stays in the foreground; here it runs in the background)"
printf '$ %s\n' "ssefs mount store mnt --root-key root.key &"
"$ssefs" mount store mnt --root-key root.key 2>daemon.log &
daemon=$!
for _ in $(seq 1 100); do
    is_mounted && break
    kill -0 "$daemon" 2>/dev/null || { cat daemon.log >&2; echo "tour: mount failed" >&2; exit 1; }
    sleep 0.1
done
is_mounted || { echo "tour: mount did not appear" >&2; exit 1; }
grep " $work/mnt " /proc/self/mountinfo | awk '{ print "mounted:", $5, "type", $(NF-2) }'

step "3. Top-level directories are buckets; copy some files in"
printf 'Dear diary: the spare key is under the third flowerpot.\n' > diary.txt
seq 1 200000 > numbers.txt
run mkdir mnt/my-bucket
run cp diary.txt numbers.txt mnt/my-bucket/
run mkdir -p mnt/my-bucket/photos/2024
run cp numbers.txt mnt/my-bucket/photos/2024/
run ls -lR mnt
run cat mnt/my-bucket/diary.txt
run cmp numbers.txt mnt/my-bucket/numbers.txt
echo "identical"

step "4. Every object says how it is encrypted, like x-oss-server-side-encryption"
run getfattr -n user.oss.server-side-encryption mnt/my-bucket/diary.txt

step "5. The store holds the same tree, but only ciphertext"
run ls -l store/my-bucket
printf '$ %s\n' "od -A d -t x1 -N 64 store/my-bucket/diary.txt"
od -A d -t x1 -N 64 store/my-bucket/diary.txt
printf '$ %s\n' "grep -r 'flowerpot' store"
if grep -r -q 'flowerpot' store; then
    echo "tour: plaintext found in the store!" >&2
    exit 1
fi
echo "(no match: the store holds no plaintext)"

step "6. Unmount; the daemon exits 0 and the mountpoint is an empty directory again"
run fusermount3 -u mnt
status=0
wait "$daemon" || status=$?
daemon=""
echo "daemon exit status: $status"
[ "$status" -eq 0 ] || exit 1
run ls -A mnt

printf '\nTour complete.\n'
