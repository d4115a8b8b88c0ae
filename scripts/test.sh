#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy with warnings as errors, and the whole test suite
# (unit tests and tests through a real FUSE mount, which need root and /dev/fuse).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
