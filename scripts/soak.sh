#!/usr/bin/env bash
# Runs the reliability tests long: the randomized model test (through a real mount and on the fs
# core) for many cases, and the crash and concurrency tests over and over with fresh seeds.
# Needs root and /dev/fuse, like the mount tests. Stops at the first failure, which prints the
# seed that replays it (SSEFS_MODEL_SEED for the model, SSEFS_TEST_SEED for the others).
#
#   SOAK_SECS=3600      how long to keep going (default 600)
#   SOAK_CASES=2000     model cases per model run (default 500)
#   SOAK_OPS=300        operations per model case (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SOAK_SECS:-600}
cases=${SOAK_CASES:-500}
ops=${SOAK_OPS:-200}
cargo test --locked --test reliability_model --test reliability_crash --test reliability_concurrency --no-run
end=$(( $(date +%s) + secs ))
round=0
while [ "$(date +%s)" -lt "$end" ]; do
    round=$((round + 1))
    left=$(( end - $(date +%s) ))
    echo "soak round $round: ${left}s left"
    log=$(mktemp)
    status=0
    SSEFS_MODEL_CASES=$cases SSEFS_MODEL_OPS=$ops SSEFS_MODEL_SECS=$(( left > 0 ? left : 1 )) \
        cargo test --locked --test reliability_model -- --nocapture --test-threads=2 \
        >"$log" 2>&1 || status=$?
    grep -E "model:|test result|panicked|replay|shrunk|step" "$log" || true
    rm -f "$log"
    test "$status" -eq 0 || { echo "soak: the model test failed in round $round"; exit 1; }
    for t in reliability_crash reliability_concurrency; do
        if ! cargo test --locked --test "$t" 2>&1 | tail -n 30; then
            echo "soak: $t failed in round $round"
            exit 1
        fi
    done
done
echo "soak: $round rounds passed in ${secs}s"
