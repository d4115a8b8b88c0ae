#!/usr/bin/env bash
# Installs ssefs: the release binary in PREFIX/bin, the mount(8) helper link
# SBINDIR/mount.fuse.ssefs (so `mount -t fuse.ssefs` and fstab lines run ssefs whatever PATH
# is), the systemd units and the operations guide. Records every file it installs in a
# manifest; `--uninstall` removes exactly those files (and the directories it created, if
# empty). It never overwrites a file that an earlier run of this script did not install.
#
#   scripts/install.sh [--prefix DIR] [--unitdir DIR] [--sbindir DIR] [--binary FILE]
#   scripts/install.sh --uninstall [--prefix DIR]
#
# --binary installs an already built ssefs instead of running `cargo build --release`.
set -euo pipefail

prefix=/usr/local
unitdir=
sbindir=/sbin
binary=
uninstall=0

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --unitdir) unitdir=${2:?--unitdir needs a directory}; shift 2 ;;
        --sbindir) sbindir=${2:?--sbindir needs a directory}; shift 2 ;;
        --binary) binary=${2:?--binary needs a file}; shift 2 ;;
        --uninstall) uninstall=1; shift ;;
        -h|--help) usage ;;
        *) echo "install.sh: unknown argument $1" >&2; usage ;;
    esac
done

case "$prefix" in
    /*) ;;
    *) prefix="$(pwd)/$prefix" ;;
esac
if [ -z "$unitdir" ]; then
    case "$prefix" in
        /usr|/usr/local) unitdir="$prefix/lib/systemd/system" ;;
        *) unitdir=/etc/systemd/system ;;
    esac
fi
bindir="$prefix/bin"
docdir="$prefix/share/doc/ssefs"
manifest="$prefix/share/ssefs/install-manifest"
units=(ssefs@.service ssefs-rotate@.service ssefs-rotate@.timer)
root="$(cd "$(dirname "$0")/.." && pwd)"

reload_systemd() {
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        systemctl daemon-reload || true
    fi
}

if [ "$uninstall" -eq 1 ]; then
    if [ ! -f "$manifest" ]; then
        echo "install.sh: nothing to uninstall: no manifest at $manifest" >&2
        exit 1
    fi
    entries="$(cat "$manifest")"
    rm -f -- "$manifest"
    # Files and links, then the directories this script created, deepest first, if empty.
    printf '%s\n' "$entries" | while IFS=' ' read -r kind path; do
        case "$kind" in
            file|link) rm -f -- "$path" && echo "removed $path" ;;
        esac
    done
    printf '%s\n' "$entries" | awk '$1 == "dir" { print substr($0, 5) }' | sort -r |
        while IFS= read -r dir; do
            rmdir -- "$dir" 2>/dev/null && echo "removed directory $dir" || true
        done
    reload_systemd
    exit 0
fi

if [ -z "$binary" ]; then
    (cd "$root" && cargo build --release --locked)
    binary="$root/target/release/ssefs"
fi
if [ ! -x "$binary" ]; then
    echo "install.sh: $binary is not an executable" >&2
    exit 1
fi

# What an earlier run installed may be replaced; anything else is refused before any change.
previous=
[ -f "$manifest" ] && previous="$(cat "$manifest")"
owned() { printf '%s\n' "$previous" | grep -qxF -e "file $1" -e "link $1"; }
targets=("$bindir/ssefs" "$sbindir/mount.fuse.ssefs" "$docdir/OPERATIONS.md")
for unit in "${units[@]}"; do targets+=("$unitdir/$unit"); done
for target in "${targets[@]}"; do
    if { [ -e "$target" ] || [ -L "$target" ]; } && ! owned "$target"; then
        echo "install.sh: $target exists and was not installed by this script; remove it first" >&2
        exit 1
    fi
done

# Every step is recorded as soon as it is done, so a failed run can still be uninstalled.
record() { echo "$1 $2" >> "$manifest"; }
make_dir() {
    local missing=() dir="$1"
    while [ ! -d "$dir" ]; do missing=("$dir" "${missing[@]}"); dir="$(dirname "$dir")"; done
    for dir in "${missing[@]}"; do
        mkdir -m 0755 "$dir"
        if [ "$recording" -eq 1 ]; then record dir "$dir"; else created+=("$dir"); fi
    done
}
created=()
recording=0
make_dir "$(dirname "$manifest")"
: > "$manifest"
recording=1
printf '%s\n' "$previous" | grep -v '^$' >> "$manifest" || true
for dir in "${created[@]}"; do record dir "$dir"; done

make_dir "$bindir"
install -m 0755 "$binary" "$bindir/ssefs.new"
mv -f "$bindir/ssefs.new" "$bindir/ssefs"
record file "$bindir/ssefs"

make_dir "$sbindir"
ln -sfn "$bindir/ssefs" "$sbindir/mount.fuse.ssefs"
record link "$sbindir/mount.fuse.ssefs"

make_dir "$unitdir"
for unit in "${units[@]}"; do
    sed -e "s|@BINDIR@|$bindir|g" -e "s|@DOCDIR@|$docdir|g" "$root/systemd/$unit" > "$unitdir/$unit.new"
    chmod 0644 "$unitdir/$unit.new"
    mv -f "$unitdir/$unit.new" "$unitdir/$unit"
    record file "$unitdir/$unit"
done

make_dir "$docdir"
install -m 0644 "$root/docs/OPERATIONS.md" "$docdir/OPERATIONS.md"
record file "$docdir/OPERATIONS.md"

# Directories first (parents before children), then files, each once.
{ grep '^dir ' "$manifest" | sort -u; grep -v '^dir ' "$manifest" | sort -u; } > "$manifest.new"
mv -f "$manifest.new" "$manifest"
reload_systemd
echo "installed ssefs in $bindir, the mount helper $sbindir/mount.fuse.ssefs and the units in $unitdir"
echo "uninstall with: $0 --uninstall --prefix $prefix"
