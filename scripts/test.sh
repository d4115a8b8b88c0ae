#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy with warnings as errors, and the whole test suite
# (unit tests and tests through a real FUSE mount, which need root and /dev/fuse).
set -euo pipefail
cd "$(dirname "$0")/.."
# The remote-store tests start SeaweedFS's `weed` (scripts/setup.sh installs it with pip,
# whose scripts directory may not be on PATH).
if ! command -v weed >/dev/null && command -v python3 >/dev/null; then
    PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
    export PATH
fi
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
# The suites that use a store only through its mount and the command line, once more on a
# store in an object store (the SeaweedFS the tests start; tests/support/mount.rs).
SSEFS_TEST_STORE=remote cargo test --locked --test mount_tools --test mount_roundtrip \
    --test rotation_master
# The suites through a mount, once more with the kernel handing requests over through FUSE
# over io_uring (Linux 6.14+; the fuse module's enable_uring, put back as it was afterwards).
# tests/mount_io_uring.rs checks that the rings really serve; here everything else must work
# over them as over /dev/fuse.
URING=/sys/module/fuse/parameters/enable_uring
if [ -w "$URING" ]; then
    uring_before=$(cat "$URING")
    trap 'echo "$uring_before" >"$URING"' EXIT
    echo 1 >"$URING"
    suites=()
    for t in tests/mount_*.rs tests/reliability_*.rs; do
        suites+=(--test "$(basename "$t" .rs)")
    done
    cargo test --locked "${suites[@]}"
    echo "$uring_before" >"$URING"
    trap - EXIT
else
    echo "test.sh: no FUSE over io_uring in this kernel ($URING): the ring re-run is skipped" >&2
fi
