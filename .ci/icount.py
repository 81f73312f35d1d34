#!/usr/bin/env python3
"""Instruction-count guard for echo's hot paths (see BENCHMARKS.md, "Instruction counts").

Builds `benches/icount.rs`, runs each of its workloads once under
`valgrind --tool=callgrind`, collecting only inside `echo_icount_measure` (set-up excluded),
reads the instruction total callgrind writes and the allocation count the bench prints, and
compares both with the committed baseline `benches/icount-baseline.json`:

    python3 .ci/icount.py                 # compare; exit 1 if a count grew past tolerance
    python3 .ci/icount.py --save          # write the baseline (commit it, with a reason)
    python3 .ci/icount.py --only receive  # workloads whose name contains "receive"

The baseline is never updated automatically: a change that makes a path cheaper or dearer
on purpose updates it in its own reviewed commit. Counts depend on the compiler and valgrind
versions, recorded in the baseline; a mismatch is printed above the table.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = os.path.join(ROOT, "benches", "icount-baseline.json")
MEASURE = "echo_icount_measure"


def build():
    """Builds the bench binary; returns its path."""
    out = subprocess.run(
        ["cargo", "bench", "-p", "echo-proto", "--features", "sim", "--bench", "icount",
         "--no-run", "--message-format=json"],
        cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True)
    exe = None
    for line in out.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "icount" \
                and msg.get("executable"):
            exe = msg["executable"]
    if not exe:
        sys.exit("icount: cargo did not report the bench executable")
    return exe


def version(cmd):
    try:
        return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def measure(exe, name, tmp):
    """Runs one workload under callgrind; returns (instructions, allocations, units)."""
    out_file = os.path.join(tmp, name + ".callgrind")
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", "--collect-atstart=no",
         "--toggle-collect=" + MEASURE, "--callgrind-out-file=" + out_file, exe, name],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if run.returncode != 0:
        sys.stderr.write(run.stderr)
        sys.exit(f"icount: workload {name} failed under valgrind (exit {run.returncode})")
    m = re.search(r"^icount workload=(\S+) units=(\d+) allocs=(\d+)", run.stdout, re.M)
    if not m or m.group(1) != name:
        sys.exit(f"icount: workload {name} printed no result:\n{run.stdout}")
    ir = None
    with open(out_file) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                ir = int(line.split()[1])
    if not ir:
        sys.exit(f"icount: callgrind counted nothing for {name}: is {MEASURE} still called?")
    return ir, int(m.group(3)), int(m.group(2))


def ratio(new, old):
    return new / old if old else float("inf") if new else 1.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--save", action="store_true", help="write the baseline instead of comparing")
    ap.add_argument("--tolerance", type=float, default=float(os.environ.get("ICOUNT_TOLERANCE", "0.05")),
                    help="allowed growth as a fraction (default 0.05 = 5 %%)")
    ap.add_argument("--only", default="", help="run only workloads whose name contains this")
    ap.add_argument("--exe", help="a prebuilt bench binary (skips the build)")
    args = ap.parse_args()

    exe = args.exe or build()
    names = [l.split(":")[0] for l in subprocess.run([exe, "--list"], check=True, stdout=subprocess.PIPE,
                                                     text=True).stdout.splitlines() if l.strip()]
    names = [n for n in names if args.only in n]
    meta = {"rustc": version(["rustc", "-V"]), "valgrind": version(["valgrind", "--version"])}

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            ir, allocs, units = measure(exe, name, tmp)
            results[name] = {"instructions": ir, "allocations": allocs, "units": units}

    if args.save:
        if args.only:
            sys.exit("icount: --save writes the whole baseline; run it without --only")
        with open(BASELINE, "w") as f:
            json.dump({"meta": meta, "tolerance": args.tolerance, "benches": results}, f, indent=2, sort_keys=True)
            f.write("\n")
        print(f"icount: wrote {os.path.relpath(BASELINE, ROOT)} ({len(results)} workloads); commit it with a reason")
        for name, r in results.items():
            print(f"  {name:40} {r['instructions']:>14,} Ir  {r['allocations']:>10,} allocs")
        return 0

    try:
        with open(BASELINE) as f:
            base = json.load(f)
    except FileNotFoundError:
        sys.exit("icount: no baseline; run `python3 .ci/icount.py --save` and commit it")
    for k, v in meta.items():
        if base.get("meta", {}).get(k) != v:
            print(f"icount: NOTE baseline {k} is {base.get('meta', {}).get(k)!r}, this run {v!r}: "
                  "counts may differ for that reason alone")

    tol = args.tolerance
    rows, failures, faster = [], [], []
    for name, r in results.items():
        b = base["benches"].get(name)
        if b is None:
            failures.append(f"{name}: not in the baseline (run `.ci/icount.py --save` and commit)")
            rows.append((name, None, r, None, None))
            continue
        ri, ra = ratio(r["instructions"], b["instructions"]), ratio(r["allocations"], b["allocations"])
        for what, rat in (("instructions", ri), ("allocations", ra)):
            if rat > 1 + tol:
                failures.append(f"{name}: {what} {b[what]:,} -> {r[what]:,} (x{rat:.3f}, tolerance +{tol:.0%})")
            elif rat < 1 - tol:
                faster.append(f"{name}: {what} x{rat:.3f}")
        rows.append((name, b, r, ri, ra))
    missing = [n for n in base["benches"] if n not in results and args.only in n]
    for n in missing:
        failures.append(f"{n}: in the baseline but no longer run")

    print(f"\ninstruction counts (callgrind, set-up excluded), tolerance +{tol:.0%}; {meta['rustc']}, {meta['valgrind']}")
    hdr = f"{'workload':40} {'base Ir':>14} {'now Ir':>14} {'ratio':>7} {'Ir/unit':>9} {'base allocs':>11} {'now allocs':>11} {'ratio':>7} {'allocs/unit':>11}"
    print(hdr)
    print("-" * len(hdr))
    for name, b, r, ri, ra in rows:
        per_ir = r["instructions"] / r["units"]
        per_al = r["allocations"] / r["units"]
        if b is None:
            print(f"{name:40} {'-':>14} {r['instructions']:>14,} {'new':>7} {per_ir:>9,.0f} {'-':>11} {r['allocations']:>11,} {'new':>7} {per_al:>11.2f}")
        else:
            flag = " <-- " if ri > 1 + tol or ra > 1 + tol else ""
            print(f"{name:40} {b['instructions']:>14,} {r['instructions']:>14,} {ri:>7.3f} {per_ir:>9,.0f} "
                  f"{b['allocations']:>11,} {r['allocations']:>11,} {ra:>7.3f} {per_al:>11.2f}{flag}")
    if faster:
        print("\ncheaper than the baseline (consider `.ci/icount.py --save` in its own commit):")
        for f in faster:
            print("  " + f)
    if failures:
        print("\nicount: FAILED")
        for f in failures:
            print("  " + f)
        return 1
    print("\nicount: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
