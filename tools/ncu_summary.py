#!/usr/bin/env python3
"""Summarises an Nsight Compute CSV (ncu --csv --print-units base --metrics
gpu__time_duration.sum) of N profiled decode steps: kernels per step, GPU time
per step, and the kernels that take it, grouped by name.

    python3 tools/ncu_summary.py ncu.csv --steps 2 [--step_ms 5.1]
"""
import argparse
import collections
import csv
import re


def short(name):
    name = re.sub(r"\((anonymous namespace|unnamed)\)::|<unnamed>::", "", name)
    name = re.sub(r"^void ", "", name)
    name = re.sub(r"<.*", "", name)   # template arguments
    name = re.sub(r"\(.*", "", name)  # and argument lists
    return name.split("::")[-1][:60]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv")
    parser.add_argument("--steps", type=int, default=1, help="decode steps the profile covers")
    parser.add_argument("--step_ms", type=float, default=0, help="measured wall time of one step, for GPU busy %%")
    parser.add_argument("--list", type=int, default=0, help="also list the first N kernels in launch order")
    args = parser.parse_args()
    with open(args.csv, newline="") as f:
        lines = [line for line in f if line.startswith('"')]
    rows = [r for r in csv.DictReader(lines) if r.get("Metric Name") == "gpu__time_duration.sum"]
    total_ns = 0.0
    by_name = collections.defaultdict(lambda: [0, 0.0])
    for r in rows:
        ns = float(r["Metric Value"].replace(",", ""))
        total_ns += ns
        entry = by_name[short(r["Kernel Name"])]
        entry[0] += 1
        entry[1] += ns
    steps = max(1, args.steps)
    print(f"kernels per step: {len(rows) / steps:.0f}; GPU time per step: {total_ns / steps / 1e3:.0f} us", end="")
    if args.step_ms > 0:
        busy = total_ns / steps / 1e6 / args.step_ms
        print(f"; wall {args.step_ms:.2f} ms/step: GPU busy {100 * busy:.0f}%, "
              f"host/idle {1e3 * args.step_ms - total_ns / steps / 1e3:.0f} us per step", end="")
    print()
    print(f"{'kernel':60s} {'per step':>8s} {'us/step':>9s} {'share':>6s}")
    for name, (count, ns) in sorted(by_name.items(), key=lambda kv: -kv[1][1]):
        print(f"{name:60s} {count / steps:8.0f} {ns / steps / 1e3:9.1f} {100 * ns / total_ns:5.1f}%")
    for r in rows[:args.list]:
        print(f"  {float(r['Metric Value'].replace(',', '')) / 1e3:9.1f} us  {short(r['Kernel Name'])}  "
              f"grid {r.get('Grid Size', '?')} block {r.get('Block Size', '?')}")


if __name__ == "__main__":
    main()
