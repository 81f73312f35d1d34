#!/usr/bin/env python3
"""Every benchmark of the repository, for real, in a short mode (a few minutes on 2 cores).

    python3 .ci/bench.py            # all: criterion (quick), simulator (reduced), loopback
    python3 .ci/bench.py --skip-loopback

Prints one table per layer with medians and the machine's load average, so each CI run
leaves a record. Wall-clock figures on a shared machine are for people to read, not to
gate on: the regression guard is the instruction count (.ci/icount.py).

- criterion: `cargo bench -p echo-proto --features sim --bench core --bench blob -- --quick`;
  the median of each bench from criterion's estimates.json.
- simulator: `benches/sim.rs` with 30 nodes and 2,000 messages (the full run is 100/10,000).
- loopback: `runtimes/examples/bench.rs` (the workloads of shared/peer-bench/gossipsub) at
  reduced counts on tokio, smol, async-std and the swarm adapter (TCP), each run three
  times; the median run.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (workload, extra args, the figures to show)
LOOPBACK = [
    ("pair-throughput", ["--msgs", "20000"], ["msgs_per_s", "MB_per_s"]),
    ("latency", ["--msgs", "2000", "--rate", "1000"], ["p50_us", "p99_us"]),
    ("fanout", ["--msgs", "2000", "--nodes", "5"], ["deliveries_per_s"]),
    ("raw", ["--msgs", "20000"], ["MB_per_s"]),
]
RUNTIMES = ["tokio", "smol", "async-std", "swarm"]
REPEAT = 3
TIMEOUT = 180  # seconds per run: every run stops by itself


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def target_dir():
    out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=ROOT,
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out)["target_directory"]


def fmt_ns(ns):
    for unit, div in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= div:
            return f"{ns / div:.3g} {unit}"
    return f"{ns:.3g} ns"


def criterion():
    print(f"\n## criterion, quick mode (load before: {loadavg()})", flush=True)
    started = time.time()
    run = subprocess.run(["cargo", "bench", "-p", "echo-proto", "--features", "sim", "--bench", "core",
                          "--bench", "blob", "--", "--quick", "--warm-up-time", "1", "--noplot"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if run.returncode != 0:
        sys.exit(run.stdout + "\nbench.py: the criterion benches failed")
    base = os.path.join(target_dir(), "criterion")
    rows = []
    for dirpath, _, files in sorted(os.walk(base)):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
            continue
        if os.path.getmtime(os.path.join(dirpath, "estimates.json")) < started:
            continue  # a bench of an earlier run that no longer exists
        with open(os.path.join(dirpath, "estimates.json")) as f:
            median = json.load(f)["median"]["point_estimate"]
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            meta = json.load(f)
        tp = meta.get("throughput") or {}
        per = ""
        if "Elements" in tp:
            per = f"{fmt_ns(median / tp['Elements'])}/item"
        elif "Bytes" in tp:
            per = f"{tp['Bytes'] / median * 1e9 / 2**30:.1f} GiB/s"
        rows.append((meta["full_id"], fmt_ns(median), per))
    print(f"| bench | median | per item |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    print(f"(load after: {loadavg()})")


def simulator():
    print(f"\n## simulator, 30 nodes, 2,000 messages, 1 % loss (load before: {loadavg()})", flush=True)
    out = subprocess.run(["cargo", "bench", "-p", "echo-proto", "--features", "sim", "--bench", "sim", "--",
                          "--nodes", "30", "--msgs", "2000"], cwd=ROOT, check=True, stdout=subprocess.PIPE,
                         text=True, timeout=600).stdout
    for line in out.splitlines():
        print("    " + line)
    print(f"(load after: {loadavg()})")


def loopback():
    print(f"\n## loopback (TCP + noise + yamux on 127.0.0.1), median of {REPEAT} runs "
          f"(load before: {loadavg()})", flush=True)
    subprocess.run(["cargo", "build", "--profile", "bench", "-p", "echo-runtime", "--example", "bench",
                    "--all-features"], cwd=ROOT, check=True)
    exe = os.path.join(target_dir(), "release", "examples", "bench")
    print("| workload | runtime | figures (median run) | spread |\n|---|---|---|---|")
    for workload, extra, keys in LOOPBACK:
        for rt in RUNTIMES:
            runs = []
            for _ in range(REPEAT):
                out = subprocess.run([exe, workload, "--runtime", rt] + extra, cwd=ROOT, check=True,
                                     stdout=subprocess.PIPE, text=True, timeout=TIMEOUT).stdout
                line = [l for l in out.splitlines() if l.startswith("{")][-1]
                runs.append(json.loads(line))
            key = keys[0]
            runs.sort(key=lambda r: r[key])
            med = runs[len(runs) // 2]
            figs = ", ".join(f"{k}={med[k]}" for k in keys)
            spread = f"{key} {runs[0][key]}–{runs[-1][key]}"
            if med.get("missing"):
                figs += f", MISSING={med['missing']}"
            print(f"| {workload} | {rt} | {figs} | {spread} |", flush=True)
    print(f"(load after: {loadavg()})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-loopback", action="store_true")
    args = ap.parse_args()
    print(f"# benchmarks, short mode ({os.cpu_count()} CPUs, load {loadavg()})")
    criterion()
    simulator()
    if not args.skip_loopback:
        loopback()
    return 0


if __name__ == "__main__":
    sys.exit(main())
