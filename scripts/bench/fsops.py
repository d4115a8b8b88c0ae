#!/usr/bin/env python3
"""Small file-system operations timed for scripts/bench.sh: creating many small files, and
holding many files open while reading a daemon's peak memory. Touches only the directory and
the process id it is given; prints one line of results on stdout.
"""

import argparse
import errno
import os
import resource
import sys
import time


def raise_open_file_limit(wanted):
    """Raises RLIMIT_NOFILE to at least `wanted` (up to the hard limit); returns the new soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def create_files(directory, count, size):
    """Creates `count` files of `size` bytes in a new directory; prints the elapsed seconds."""
    payload = b"ssefs-bench\n" * (size // 12 + 1)
    payload = payload[:size]
    start = time.perf_counter()
    os.mkdir(directory)
    for i in range(count):
        fd = os.open(os.path.join(directory, f"f{i:06d}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, payload)
        finally:
            os.close(fd)
    elapsed = time.perf_counter() - start
    print(f"{elapsed:.6f}")


def process_memory_kib(pid):
    """Returns (VmHWM, VmRSS) of `pid` in KiB, read from /proc/PID/status."""
    fields = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                fields[name] = int(value.split()[0])
    return fields["VmHWM"], fields["VmRSS"]


def hold_open(directory, count, pid):
    """Opens the first `count` files of `directory`, reads one byte of each, and while all are
    still open prints the peak and current RSS of process `pid` in KiB, the number of files
    held, and the error that stopped the opening early (or "-")."""
    limit = raise_open_file_limit(count + 64)
    if limit < count + 16:
        sys.exit(f"fsops: cannot raise the open-file limit to {count + 16} (got {limit})")
    names = sorted(os.listdir(directory))[:count]
    if len(names) < count:
        sys.exit(f"fsops: {directory} holds {len(names)} files, {count} wanted")
    fds = []
    stopped_by = "-"
    try:
        for name in names:
            try:
                fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            except OSError as e:
                stopped_by = errno.errorcode.get(e.errno, str(e.errno))
                break
            fds.append(fd)
            os.pread(fd, 1, 0)
        hwm, rss = process_memory_kib(pid)
        print(f"{hwm} {rss} {len(fds)} {stopped_by}")
    finally:
        for fd in fds:
            os.close(fd)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create N small files in a new directory")
    create.add_argument("directory")
    create.add_argument("count", type=int)
    create.add_argument("--size", type=int, default=16)
    hold = commands.add_parser("hold-open", help="hold N files open and report a daemon's RSS")
    hold.add_argument("directory")
    hold.add_argument("count", type=int)
    hold.add_argument("pid", type=int)
    args = parser.parse_args()
    if args.command == "create":
        create_files(args.directory, args.count, args.size)
    else:
        hold_open(args.directory, args.count, args.pid)


if __name__ == "__main__":
    main()
