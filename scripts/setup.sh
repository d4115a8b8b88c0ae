#!/usr/bin/env bash
# Installs what ssefs needs on a Debian/Ubuntu machine: FUSE 3 (fusermount3, mount.fuse3),
# attr (setfattr/getfattr), rsync, man-db and SoftHSM2 (used by the tests). Needs root; Rust must be installed.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (it installs packages with apt-get)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq fuse3 attr rsync man-db softhsm2 >/dev/null
# systemd-analyze, for verifying the units (present on most machines already).
command -v systemd-analyze >/dev/null || apt-get install -y -qq systemd >/dev/null
command -v cargo >/dev/null || { echo "setup.sh: cargo not found: install Rust (rustup)" >&2; exit 1; }
echo "setup.sh: fuse3, attr, rsync, man-db and softhsm2 are installed"
