#!/usr/bin/env python3
"""Aggregates the raw figures scripts/bench.sh records (one line per run) into medians, ratios
to gocryptfs and PASS/FAIL against the performance targets; prints a Markdown table and writes
the JSON report. Reads only the files it is given and /proc; runs no workload itself.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

GOCRYPTFS = "gocryptfs"
TARGET_ORDER = ["plain", "ssefs-aes256", "ssefs-none", GOCRYPTFS]

# name, label template, unit, kind. "data": throughput, higher is better, ratio = figure /
# gocryptfs's. "meta": elapsed time, lower is better, ratio = time / gocryptfs's time.
# "memory": daemon peak RSS, lower is better, ratio = RSS / gocryptfs's RSS. "count": a plain
# count, no ratio.
WORKLOADS = [
    ("seq_write", "sequential write {seq_mib} MiB, fsync", "MiB/s", "data"),
    ("seq_read_hot", "sequential read {seq_mib} MiB, hot", "MiB/s", "data"),
    ("seq_read_cold", "sequential read {seq_mib} MiB, cold", "MiB/s", "data"),
    ("rand_read_4k", "random 4 KiB read ({rand_mib} MiB file)", "IOPS", "data"),
    ("rand_write_4k", "random 4 KiB write ({rand_mib} MiB file)", "IOPS", "data"),
    ("create_files", "create {files} small files", "s", "meta"),
    ("untar", "untar source tree ({tree_mib} MiB, {tree_entries} entries)", "s", "meta"),
    ("ls_lR", "ls -lR source tree", "s", "meta"),
    ("rm_rf", "rm -rf source tree", "s", "meta"),
    ("mem_stream", "daemon peak RSS, streaming {stream_mib} MiB", "MiB", "memory"),
    ("mem_open", "daemon peak RSS, {open_files} files open", "MiB", "memory"),
    ("mem_open_held", "files the daemon let us hold open (of {open_files})", "files", "count"),
]

ENCRYPTED = "ssefs-aes256"
NONE = "ssefs-none"

# description, workload, target, reference (None: absolute threshold), operator, threshold
CHECKS = [
    ("sequential write with fsync >= 0.85x plain", "seq_write", ENCRYPTED, "plain", ">=", 0.85),
    ("cold sequential read >= 1.5x gocryptfs", "seq_read_cold", ENCRYPTED, GOCRYPTFS, ">=", 1.5),
    ("random 4 KiB read >= 1.2x gocryptfs", "rand_read_4k", ENCRYPTED, GOCRYPTFS, ">=", 1.2),
    ("random 4 KiB write >= 1.2x gocryptfs", "rand_write_4k", ENCRYPTED, GOCRYPTFS, ">=", 1.2),
    ("create small files <= 0.7x gocryptfs time", "create_files", ENCRYPTED, GOCRYPTFS, "<=", 0.7),
    ("untar <= 0.7x gocryptfs time", "untar", ENCRYPTED, GOCRYPTFS, "<=", 0.7),
    ("ls -lR <= 0.7x gocryptfs time", "ls_lR", ENCRYPTED, GOCRYPTFS, "<=", 0.7),
    ("rm -rf <= 0.7x gocryptfs time", "rm_rf", ENCRYPTED, GOCRYPTFS, "<=", 0.7),
    ("AES256 within 15% of none: sequential write", "seq_write", ENCRYPTED, NONE, ">=", 0.85),
    ("AES256 within 15% of none: hot sequential read", "seq_read_hot", ENCRYPTED, NONE, ">=", 0.85),
    ("AES256 within 15% of none: cold sequential read", "seq_read_cold", ENCRYPTED, NONE, ">=", 0.85),
    ("daemon RSS < 100 MiB streaming (AES256)", "mem_stream", ENCRYPTED, None, "<", 100.0),
    ("daemon RSS < 100 MiB with files open (AES256)", "mem_open", ENCRYPTED, None, "<", 100.0),
    ("daemon RSS < 100 MiB streaming (none)", "mem_stream", NONE, None, "<", 100.0),
    ("daemon RSS < 100 MiB with files open (none)", "mem_open", NONE, None, "<", 100.0),
]


def read_meta(path):
    """Reads the key<TAB>value lines scripts/bench.sh writes about the run."""
    meta = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            key, _, value = line.rstrip("\n").partition("\t")
            if key:
                meta[key] = value
    return meta


def read_results(path):
    """Returns {workload: {target: {"runs": [floats], "errors": n}}} from the raw TSV."""
    results = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4:
                continue
            target, workload, _run, value = parts
            cell = results.setdefault(workload, {}).setdefault(target, {"runs": [], "errors": 0})
            try:
                cell["runs"].append(float(value))
            except ValueError:
                cell["errors"] += 1
    return results


def first_line(command):
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return " ".join(text.splitlines()[0].split()) if text else None


def machine_info(work_dir):
    cpu_model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = None
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
    except OSError:
        pass
    backing = first_line(["findmnt", "-n", "-o", "FSTYPE,SOURCE,OPTIONS", "--target", work_dir])
    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1) if mem_kib else None,
        "kernel": platform.release(),
        "backing_filesystem": backing,
        "gocryptfs_version": first_line(["gocryptfs", "-version"]),
        "fio_version": first_line(["fio", "--version"]),
    }


def ratio(kind, value, reference):
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def fmt_value(unit, value):
    if value is None:
        return "error"
    if unit in ("IOPS", "files"):
        return f"{value:,.0f}"
    if unit == "s":
        return f"{value:.3f}" if value < 10 else f"{value:.2f}"
    return f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


def build_report(meta, raw, work_dir):
    targets = [t for t in TARGET_ORDER if t in meta.get("targets", "").split(",")]
    workloads = {}
    for name, label, unit, kind in WORKLOADS:
        per_target = raw.get(name, {})
        if not per_target:
            continue
        entry = {
            "label": label.format(**meta),
            "unit": unit,
            "kind": kind,
            "better": "higher" if kind in ("data", "count") else "lower",
            "ratio_meaning": {
                "data": "throughput / gocryptfs throughput (higher is better)",
                "meta": "time / gocryptfs time (lower is better)",
                "memory": "peak RSS / gocryptfs peak RSS (lower is better)",
                "count": None,
            }[kind],
            "results": {},
        }
        for target in targets:
            cell = per_target.get(target)
            if cell is None:
                continue
            runs = cell["runs"]
            entry["results"][target] = {
                "runs": runs,
                "errors": cell["errors"],
                "median": statistics.median(runs) if runs else None,
                "min": min(runs) if runs else None,
                "max": max(runs) if runs else None,
            }
        reference = entry["results"].get(GOCRYPTFS, {}).get("median") if kind != "count" else None
        for result in entry["results"].values():
            result["ratio_to_gocryptfs"] = ratio(kind, result["median"], reference)
        workloads[name] = entry

    checks = []
    for description, workload, target, reference, op, threshold in CHECKS:
        results = workloads.get(workload, {}).get("results", {})
        value = results.get(target, {}).get("median")
        if reference is None:
            measured = value
        else:
            measured = ratio(None, value, results.get(reference, {}).get("median"))
        note = None
        held = workloads.get("mem_open_held", {}).get("results", {}).get(target, {}).get("min")
        wanted = int(meta.get("open_files", "0"))
        if workload == "mem_open" and held is not None and held < wanted:
            # Peak RSS with fewer files open than asked says nothing about the target: the
            # daemon could not hold them all, which fails it.
            verdict = False
            note = f"only {held:.0f} of {wanted} files could be held open"
        elif measured is None:
            verdict = None
        elif op == ">=":
            verdict = measured >= threshold
        elif op == "<=":
            verdict = measured <= threshold
        else:
            verdict = measured < threshold
        checks.append({
            "target": description,
            "workload": workload,
            "subject": target,
            "reference": reference,
            "measured": measured,
            "operator": op,
            "threshold": threshold,
            "pass": verdict,
            "note": note,
        })

    params = {k: v for k, v in meta.items() if k not in ("started", "finished", "loadavg_start", "loadavg_end", "ssefs_commit")}
    return {
        "format": "ssefs-bench/1",
        "started": meta.get("started"),
        "finished": meta.get("finished"),
        "ssefs_commit": meta.get("ssefs_commit"),
        "loadavg_start": meta.get("loadavg_start"),
        "loadavg_end": meta.get("loadavg_end"),
        "machine": machine_info(work_dir),
        "params": params,
        "targets": targets,
        "workloads": workloads,
        "checks": checks,
    }


def render_table(report):
    targets = report["targets"]
    header = ["workload", "unit"] + targets
    rows = []
    for entry in report["workloads"].values():
        row = [entry["label"], entry["unit"]]
        for target in targets:
            result = entry["results"].get(target)
            if result is None:
                row.append("-")
                continue
            text = fmt_value(entry["unit"], result["median"])
            if result["errors"]:
                text += f" ({result['errors']} failed)" if result["median"] is not None else ""
            r = result["ratio_to_gocryptfs"]
            if r is not None and target != GOCRYPTFS:
                text += f" ({r:.2f}x)"
            row.append(text)
        rows.append(row)
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = []

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    lines.append(line(header))
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines.extend(line(r) for r in rows)
    lines.append("")
    lines.append("Medians of the runs. In brackets, the ratio to gocryptfs: for MiB/s and IOPS rows a")
    lines.append("throughput ratio (higher is better); for s rows a time ratio (lower is better); for")
    lines.append("MiB (peak RSS) rows a memory ratio (lower is better).")
    return "\n".join(lines)


def render_checks(report):
    lines = []
    for check in report["checks"]:
        if check["pass"] is None:
            verdict = "N/A "
            measured = "no data"
        else:
            verdict = "PASS" if check["pass"] else "FAIL"
            unit = "x" if check["reference"] else " MiB"
            measured = f"{check['measured']:.2f}{unit}"
        note = f" ({check['note']})" if check.get("note") else ""
        lines.append(f"{verdict}  {check['target']}: measured {measured}{note}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", required=True, help="raw TSV: target, workload, run, value")
    parser.add_argument("--meta", required=True, help="key<TAB>value lines about the run")
    parser.add_argument("--json", required=True, help="where to write the JSON report")
    parser.add_argument("--work-dir", required=True, help="a directory on the benchmarked filesystem")
    args = parser.parse_args()
    report = build_report(read_meta(args.meta), read_results(args.results), args.work_dir)
    with open(args.json, "w", encoding="utf-8") as out:
        json.dump(report, out, indent=2)
        out.write("\n")
    machine = report["machine"]
    print(f"machine: {machine['cpu_model']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
          f"kernel {machine['kernel']}, backing {machine['backing_filesystem']}")
    print(f"runs per figure: {report['params'].get('runs')}; load average at start {report['loadavg_start']}, "
          f"at end {report['loadavg_end']}; ssefs requests through {report['params'].get('ssefs_transport', '-')}")
    print()
    print(render_table(report))
    print()
    print(render_checks(report))
    print()
    print(f"JSON report: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
