#!/usr/bin/env python3
"""Benchmark: `rampart validate` as a whole process on a generated repository.

Generates the repository with `rampart generate` (default: 10,000 VMs, each with a DRBD
volume, half with a floating IP, on 1,000 hypervisors), then runs `rampart validate` several
times and reports wall time (median, min, max) and peak RSS of the process.

    cargo build --release && python3 benches/validate.py [--vms N] [--nodes N] [--runs N]

Target (issue #2): under 1 s and under 200 MB peak memory. Figures go in BENCHMARKS.md.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_once(binary, repo):
    """Wall seconds and peak RSS (MiB) of one `rampart validate` run."""
    t0 = time.perf_counter()
    # wait4 gives this child's own rusage, so earlier children don't mask its peak.
    proc = subprocess.Popen([binary, "validate", "-q", repo], stdout=subprocess.PIPE)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit("validate failed:\n" + out.decode())
    return wall, usage.ru_maxrss / 1024.0, out.decode().strip().splitlines()[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=10000)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "rampart"))
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} missing: run `cargo build --release` first")
    with tempfile.TemporaryDirectory(prefix="rampart-bench-") as tmp:
        repo = os.path.join(tmp, "repo")
        subprocess.run([args.binary, "generate", "--nodes", str(args.nodes), "--vms", str(args.vms),
                        "--out", repo], check=True, stdout=subprocess.DEVNULL)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(repo) for f in fs)
        files = sum(len(fs) for _, _, fs in os.walk(repo))
        results = [run_once(args.binary, repo) for _ in range(args.runs)]
        walls = [r[0] for r in results]
        rss = max(r[1] for r in results)
        print(f"repository: {args.vms} VMs, {args.nodes} nodes, {files} files, {size / 1e6:.1f} MB")
        print(f"rampart says: {results[-1][2]}")
        print(f"wall: median {statistics.median(walls) * 1000:.0f} ms, "
              f"min {min(walls) * 1000:.0f} ms, max {max(walls) * 1000:.0f} ms over {args.runs} runs")
        print(f"peak RSS: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
